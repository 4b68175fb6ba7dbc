"""The `ernie-deploy` command line: infer | predict | batch | inspect | models | convert | optimize | serve ..."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import nullcontext
from itertools import chain
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ernie_deploy.cli import options as opt
from ernie_deploy.cli.batch import register as _register_batch
from ernie_deploy.cli.convert import register as _register_convert
from ernie_deploy.cli.serve import register as _register_serve
from ernie_deploy.cli.tune import register as _register_tune
from ernie_deploy.errors import ErnieDeployError, InputError, exit_code

app = typer.Typer(
    name="ernie-deploy",
    help="Deploy ERNIE / BERT-family NLP models on ONNX Runtime.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(exc: ErnieDeployError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(exit_code(exc))


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def infer(ctx: typer.Context) -> None:
    """The ERNIE 3.0 guide's infer.py: same flags (--task_name, --model_path, ...), same lines."""
    raise typer.Exit(_infer_main(list(ctx.args)))


def _infer_main(args: list[str]) -> int:
    from ernie_deploy.cli.infer import main as infer_main

    return infer_main(args, prog="ernie-deploy infer")


@app.command()
def predict(
    model: Annotated[str, typer.Argument(help="Model directory or .onnx file.")],
    texts: Annotated[Optional[list[str]], typer.Argument(help="Texts to predict.")] = None,
    input_file: Annotated[
        Optional[Path],
        typer.Option("--input-file", "-i", help=".txt (one per line), .jsonl, .csv or .parquet."),
    ] = None,
    output_file: Annotated[
        Optional[Path], typer.Option("--output-file", "-o", help="jsonl results (default stdout).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing --output-file.")
    ] = False,
    task: opt.Task = None,
    tokenizer: opt.Tokenizer = None,
    device: opt.Device = "auto",
    fp16: opt.Fp16 = False,
    labels: opt.Labels = None,
    batch_size: Annotated[int, typer.Option(help="Sequences per session.run.")] = 32,
    max_seq_length: opt.MaxLen = None,
    threads: opt.Threads = None,
    truncate: opt.Truncate = False,
    top_k: opt.TopK = 1,
    multi_label: opt.MultiLabel = False,
    strict: opt.Strict = False,
    decode: opt.Decode = None,
    pooling: opt.Pooling = None,
    normalize: opt.Normalize = None,
    prompt_name: opt.PromptName = None,
    query: Annotated[Optional[str], typer.Option(help="rerank: the query.")] = None,
    text_field: Annotated[
        str, typer.Option(help="The .jsonl field or .csv / .parquet column holding the text.")
    ] = "text",
    result_prefix: Annotated[
        str, typer.Option(help="Put before the result fields' names (e.g. pred_).")
    ] = "",
) -> None:
    """Predict texts given as arguments or in a file; results are jsonl, written as they are made."""
    from ernie_deploy.api import load
    from ernie_deploy.outputs import atomic_text, check_output
    from ernie_deploy.textio import JsonlWriter, Line, iter_records, text_lines

    try:
        if texts and input_file:
            raise InputError("Pass texts as arguments or with --input-file, not both.")
        if not texts and input_file is None:
            raise InputError("No texts given: pass them as arguments or with --input-file FILE.")
        options = opt.build_options(
            task=task,
            tokenizer=tokenizer,
            device=device,
            fp16=fp16,
            labels=labels,
            max_seq_length=max_seq_length,
            batch_size=batch_size,
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
        if output_file is not None:  # before anything is read or loaded
            inputs = [input_file] if input_file is not None else []
            check_output(output_file, inputs, flag="--output-file", overwrite=overwrite)
        if input_file is not None:
            records: Iterator[Line] = iter_records(input_file, text_field)
            first = next(records)  # fail on a bad file before loading the model
            records = chain([first], records)
            total = _count_lines(input_file, text_field)
        else:
            records = text_lines(texts or [])
            total = len(texts or [])
        predictor = load(model, options=options)
        for notice in predictor.model.notices:
            typer.echo(f"note: {notice}", err=True)
        with atomic_text(output_file) if output_file else nullcontext(sys.stdout) as out:
            _write_results(
                predictor, records, JsonlWriter(out), query, total, output_file, result_prefix
            )
    except ErnieDeployError as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt:
        typer.echo("error: interrupted: the results written so far are kept.", err=True)
        raise typer.Exit(130) from None


def _count_lines(path: Path, text_field: str) -> int:
    """How many texts the input holds, for the progress bar."""
    if path.suffix.lower() in (".csv", ".parquet"):
        from ernie_deploy.batch.source import open_source

        return open_source(path, text_field, text_flag="--text-field").count()
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


def _write_results(
    predictor: Any,
    records: Iterator[Any],
    writer: Any,
    query: Optional[str],
    total: int,
    output_file: Optional[Path],
    prefix: str,
) -> None:
    if predictor.task == "rerank":
        if not query:
            raise InputError("A rerank model needs --query: the texts are the documents ranked.")
        docs = [r.text for r in records]
        for hit in predictor.rerank(query, docs).hits:
            writer.write({"query": query, **hit.to_dict()})
        return
    from rich.progress import Progress

    from ernie_deploy.textio import chunked, result_record

    show = output_file is not None and total > 256 and sys.stderr.isatty()
    with Progress(disable=not show, transient=True) as progress:
        bar = progress.add_task("predicting", total=total)
        done = 0
        for chunk in chunked(records, 256):
            results = predictor.predict([r.text for r in chunk], first_index=done)
            for line, result in zip(chunk, results):
                writer.write(result_record(line.record, result, prefix))
            done += len(chunk)
            progress.update(bar, advance=len(chunk))
    if output_file is not None:
        typer.echo(f"wrote {writer.count} results to {output_file}", err=True)


@app.command()
def inspect(
    model: Annotated[str, typer.Argument(help="Model directory or .onnx file.")],
    tokenizer: Annotated[Optional[Path], typer.Option(help="Tokenizer directory.")] = None,
) -> None:
    """Show a model's inputs, outputs, opset, task, labels and the execution providers."""
    from ernie_deploy.cli.describe import describe

    try:
        typer.echo(describe(model, tokenizer))
    except ErnieDeployError as exc:
        raise _fail(exc) from None


@app.command()
def models() -> None:
    """List the models bundled with ernie-deploy (usable by name, and infer.py's defaults)."""
    from ernie_deploy.runtime.bundled import DEFAULTS, bundled_models

    found = bundled_models()
    if not found:
        typer.echo("no bundled models in this installation")
        return
    defaults = {name: task for task, name in DEFAULTS.items()}
    for m in found:
        metrics = ", ".join(f"{k} {v}" for k, v in m.metrics.items())
        default = f" (default for {defaults[m.name]})" if m.name in defaults else ""
        typer.echo(f"{m.name}{default}: {m.task}, {len(m.labels)} labels, {m.size_mb:.1f} MB")
        if m.summary:
            typer.echo(f"  {m.summary}")
        if metrics:
            typer.echo(f"  {metrics}")
        typer.echo(f"  {m.path}")


_register_batch(app)
_register_convert(app)
_register_serve(app)
_register_tune(app)


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("AISTUDIO_BOS_OFFLINE", "1")  # never reach a model hub
    if len(sys.argv) > 1 and sys.argv[1] == "infer":
        sys.exit(_infer_main(sys.argv[2:]))
    try:
        app()
    except OSError as exc:
        from ernie_deploy.cli.infer import os_failure

        sys.exit(os_failure(exc))
