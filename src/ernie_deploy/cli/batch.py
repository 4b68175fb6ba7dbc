"""The `batch` command: tag a jsonl / csv / parquet corpus into jsonl or parquet, locally or on Ray."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ernie_deploy.cli import options as opt
from ernie_deploy.errors import ErnieDeployError, exit_code


def batch_cmd(
    model: Annotated[str, typer.Argument(help="Model directory, .onnx file or bundled name.")],
    input_path: Annotated[
        Path,
        typer.Argument(
            metavar="INPUT", help="A .jsonl / .csv / .parquet file, or a folder of them."
        ),
    ],
    output_path: Annotated[
        Path,
        typer.Argument(
            metavar="OUTPUT", help="A .jsonl file, or a .parquet folder (of part files)."
        ),
    ],
    text_column: Annotated[str, typer.Option(help="The input column holding the text.")] = "text",
    id_column: Annotated[
        Optional[str],
        typer.Option(help="The id column kept with the results (default: id, added if absent)."),
    ] = None,
    result_prefix: Annotated[
        str, typer.Option(help="Put before the result columns' names (e.g. pred_).")
    ] = "",
    engine: Annotated[str, typer.Option(help="local (this process) or ray.")] = "local",
    address: Annotated[
        Optional[str],
        typer.Option(help="ray: the cluster (head:6379, or auto); default: start Ray locally."),
    ] = None,
    num_actors: Annotated[
        Optional[int],
        typer.Option(help="ray: actors, each with its own session (default: one per node)."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(help="Rows per predict call (a Ray batch; a local write).")
    ] = 256,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Start again instead of resuming OUTPUT.")
    ] = False,
    task: Annotated[Optional[str], typer.Option(help="token_cls, seq_cls, embedding.")] = None,
    tokenizer: opt.Tokenizer = None,
    device: opt.Device = "auto",
    fp16: opt.Fp16 = False,
    labels: opt.Labels = None,
    max_seq_length: opt.MaxLen = None,
    threads: Annotated[
        Optional[int], typer.Option(help="local: ONNX Runtime threads (default: the usable CPUs).")
    ] = None,
    truncate: opt.Truncate = False,
    top_k: opt.TopK = 1,
    multi_label: opt.MultiLabel = False,
    strict: opt.Strict = False,
    decode: opt.Decode = None,
    pooling: opt.Pooling = None,
    normalize: opt.Normalize = None,
    prompt_name: opt.PromptName = None,
) -> None:
    """Predict every row of INPUT into OUTPUT: input columns kept, results beside them.

    Rows are written in input order as they are made; re-running the same command resumes
    after the last row written (a crash loses no finished row). --engine ray runs the rows
    on a Ray cluster (the ray extra) with the same results, row for row.
    """
    from ernie_deploy.batch import BatchModel, BatchOptions, run_batch

    notify: Callable[[str], None] = lambda line: typer.echo(line, err=True)  # noqa: E731
    try:
        options = BatchOptions(
            text_column=text_column,
            id_column=id_column,
            prefix=result_prefix,
            batch_size=batch_size,
            engine=engine,
            address=address,
            num_actors=num_actors,
            overwrite=overwrite,
        )
        if engine == "ray":
            from ernie_deploy.raycluster import require_ray

            require_ray("--engine ray")  # before the input is read or a model loaded
        load_options = opt.build_options(
            task=task,
            tokenizer=tokenizer,
            device=device,
            fp16=fp16,
            labels=labels,
            max_seq_length=max_seq_length,
            batch_size=32,
            threads=threads,
            truncate=truncate,
            top_k=top_k,
            multi_label=multi_label,
            strict=strict,
            decode=decode,
            pooling=pooling,
            normalize=normalize,
            prompt_name=prompt_name,
        )
        model_options = BatchModel(model, load_options)
        with _Bar() as bar:
            report = run_batch(model_options, input_path, output_path, options, bar.start, notify)
    except ErnieDeployError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exit_code(exc)) from None
    if report.written or not report.resumed_from:
        resumed = f" (after {report.resumed_from} already there)" if report.resumed_from else ""
        notify(f"wrote {report.written} rows to {report.output}{resumed}")


class _Bar:
    """A rich progress bar on stderr when it is a terminal; `start(total, done)` shows it."""

    def __enter__(self) -> _Bar:
        self.progress: Any = None
        return self

    def start(self, total: int, done: int) -> Callable[[int], None]:
        from rich.console import Console
        from rich.progress import Progress

        show = sys.stderr.isatty()
        self.progress = Progress(console=Console(stderr=True), disable=not show, transient=True)
        self.progress.start()
        bar = self.progress.add_task("rows", total=total, completed=done)
        return lambda n: self.progress.update(bar, advance=n)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


def register(app: typer.Typer) -> None:
    """Add `batch` to the main app."""
    app.command("batch")(batch_cmd)
