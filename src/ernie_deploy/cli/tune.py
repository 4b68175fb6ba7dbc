"""The `tune` command: measure a model's variants here and write the fastest that agrees to OUT."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from ernie_deploy.errors import ErnieDeployError, exit_code

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from ernie_deploy.convert.tune_report import TuneReport


class _Bars:
    """tune_measure.TuneProgress on rich progress bars: one per variant."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def start(self, variant: str, total: int) -> None:
        self.tasks[variant] = self.progress.add_task(variant, total=total, stage="waiting")

    def step(self, variant: str, stage: str) -> None:
        if variant in self.tasks:
            self.progress.update(self.tasks[variant], advance=1, stage=stage)


def tune_cmd(
    model: Annotated[Path, typer.Argument(help="Model directory (or its .onnx file), fp32.")],
    out: Annotated[Path, typer.Argument(help="Directory to write the chosen variant to.")],
    texts: Annotated[
        Optional[Path],
        typer.Option(
            help="Texts to measure on (.txt one per line, or .jsonl); default: a "
            "corpus made from the model's vocabulary."
        ),
    ] = None,
    eval_file: Annotated[
        Optional[Path],
        typer.Option(help="Labelled .jsonl / .tsv: bound the F1 / accuracy drop instead."),
    ] = None,
    task: Annotated[
        Optional[str], typer.Option(help="token_cls, seq_cls, embedding or rerank.")
    ] = None,
    candidates: Annotated[
        Optional[str],
        typer.Option(
            help="Comma-separated variants to try (default: all this machine runs): "
            "O1,O2,O3,int8,int8-per-channel,int8-rows,O2+int8[,O2+fp16@cuda,fp16@tensorrt]."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Sequences per session.run, as deployed.")] = 32,
    max_seq_length: Annotated[
        Optional[int], typer.Option(help="Tokens per sequence (default: the model's).")
    ] = None,
    threads: Annotated[
        Optional[int], typer.Option(help="Intra-op threads (default: the usable CPUs).")
    ] = None,
    repeats: Annotated[int, typer.Option(help="Timed runs per variant.")] = 3,
    min_agreement: Annotated[
        Optional[float],
        typer.Option(
            help="Least agreement with fp32, 0..1 (default 0.999; none with --eval-file)."
        ),
    ] = None,
    max_metric_drop: Annotated[
        float, typer.Option(help="With --eval-file: most F1 / accuracy points lost.")
    ] = 0.5,
    max_abs_diff: Annotated[
        Optional[float], typer.Option(help="Largest raw-output difference from fp32 allowed.")
    ] = None,
    serving: Annotated[
        bool, typer.Option(help="Also measure threads x batch size for the winner.")
    ] = True,
    tokenizer: Annotated[
        Optional[Path], typer.Option(help="Tokenizer directory, when not beside the model.")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace OUT once the winner is known.")
    ] = False,
) -> None:
    """Build fp32 / O1-O3 / int8 variants, time them on your texts, keep the fastest that agrees."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from ernie_deploy.convert.tune import tune
    from ernie_deploy.convert.tune_report import TuneBound

    err = Console(stderr=True)
    # `kill` (SIGTERM) cleans up like Ctrl-C: the scratch directory goes, OUT is not written.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main else None
    try:
        bound = TuneBound(min_agreement, max_metric_drop, max_abs_diff)
        columns = (
            TextColumn("{task.description:<18}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stage]}"),
        )
        with Progress(*columns, console=err) as progress:
            report = tune(
                model,
                out,
                texts=texts,
                eval_file=eval_file,
                task=task,
                candidates=candidates.split(",") if candidates else None,
                bound=bound,
                batch_size=batch_size,
                max_seq_length=max_seq_length,
                threads=threads,
                repeats=repeats,
                serving=serving,
                overwrite=overwrite,
                tokenizer_dir=tokenizer,
                progress=_Bars(progress),
            )
    except ErnieDeployError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exit_code(exc)) from None
    except KeyboardInterrupt:
        typer.echo(f"interrupted: nothing was written to {out}", err=True)
        raise typer.Exit(130) from None
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
    _print(report)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _print(report: TuneReport) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(report.settings_line(), markup=False, highlight=False)
    table = Table(*report.header(), show_lines=False)
    for row in report.rows():
        style = "bold green" if row[0] == report.winner else None
        table.add_row(*row, style=style)
    console.print(table)
    for line in [report.explanation, *(report.serving.lines() if report.serving else [])]:
        console.print(line, markup=False, highlight=False)
    console.print(
        f"wrote {report.out} (tune_report.json inside); {report.deploy_hint()}",
        markup=False,
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add the command to the main app."""
    app.command("tune")(tune_cmd)
