"""A batch job: options, resuming, the local engine, and the one function both engines predict with.

Rows go through the predictor in chunks of `batch_size` aligned on row numbers (chunk k holds
rows k*batch_size ... (k+1)*batch_size - 1, a resumed job's first chunk ends on such a
boundary), so the local and Ray engines run exactly the same `predict` calls and write
identical rows, in input order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ernie_deploy.batch.sink import (
    ParquetSink,
    Sink,
    check_manifest,
    manifest_path,
    open_sink,
    remove_output,
    result_types,
    write_manifest,
)
from ernie_deploy.batch.source import Row, Source, open_source
from ernie_deploy.errors import ConfigError
from ernie_deploy.options import LoadOptions
from ernie_deploy.outputs import check_output
from ernie_deploy.textio import json_line, result_record

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class BatchModel:
    """The model a batch job runs: its path and the one `LoadOptions` every entry point builds.

    Args:
        path: model directory, .onnx file or bundled model name.
        options: how to load it (task, labels, decode, ...); `threads` is the local engine's
            intra-op threads (the ray engine sizes each actor's from the CPUs Ray gives it).
    """

    path: str
    options: LoadOptions = field(default_factory=LoadOptions)

    @property
    def task(self) -> str | None:
        return self.options.task

    @property
    def tokenizer_dir(self) -> str | None:
        return self.options.tokenizer_dir

    def load(self, threads: int | None, path: str | None = None, tok: str | None = None) -> Any:
        """The predictor, with `threads` intra-op threads (None: the options' own)."""
        from ernie_deploy.api import load

        changes: dict[str, Any] = {} if threads is None else {"threads": threads}
        if path is not None:  # the files shipped to a Ray worker
            changes["tokenizer_dir"] = tok
        predictor = load(path or self.path, options=self.options.updated(**changes))
        _refuse_rerank(predictor.task, self.path)
        return predictor


@dataclass(frozen=True)
class BatchOptions:
    """A batch job's options besides the model.

    Args:
        text_column: the input column holding the text.
        id_column: the id column; None: `id`, added with row numbers when the input has none.
        prefix: put before every result column's name (e.g. "pred_" to keep an input "label").
        batch_size: rows per predict call: one Ray Data batch, and how often the local engine
            writes and syncs its output.
        engine: "local" (in this process) or "ray".
        address: ray engine: the cluster to join; None starts a local Ray instance.
        num_actors: ray engine: actors (each loads the model once); None: one per node.
        overwrite: replace an existing output instead of resuming it.
        ship_model: ray engine: send the model's files to the actors through Ray's object store
            (None: when `address` is given, since other nodes may not have the path).
    """

    text_column: str = "text"
    id_column: str | None = None
    prefix: str = ""
    batch_size: int = 256
    engine: str = "local"
    address: str | None = None
    num_actors: int | None = None
    overwrite: bool = False
    ship_model: bool | None = None

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"Unknown engine {self.engine!r}: use one of {', '.join(ENGINES)}.")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}.")
        if self.engine == "local" and (self.address or self.num_actors is not None):
            raise ConfigError("--address and --num-actors need --engine ray: add it.")


@dataclass
class Report:
    """What a job did: rows in the input, rows written now, rows found already written."""

    output: Path
    total: int
    written: int = 0
    resumed_from: int = 0
    notes: list[str] = field(default_factory=list)


def predict_rows(
    predictor: Any, rows: Sequence[Row], prefix: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """One chunk's output rows, as dicts and as JSON lines (what both engines run and write)."""
    first = rows[0].number if rows else 0
    results = predictor.predict([r.text for r in rows], first_index=first)
    out = [result_record(r.record, res, prefix) for r, res in zip(rows, results)]
    return out, [json_line(o) for o in out]


def chunks(source: Source, start: int, size: int) -> Iterator[list[Row]]:
    """Rows from `start` in chunks ending on multiples of `size` (see the module docstring)."""
    buf: list[Row] = []
    for row in source.rows(start):
        buf.append(row)
        if (row.number + 1) % size == 0:
            yield buf
            buf = []
    if buf:
        yield buf


Progress = Callable[[int], None]


def run_batch(
    model: BatchModel,
    input_path: str | Path,
    output_path: str | Path,
    options: BatchOptions,
    progress: Callable[[int, int], Progress] | None = None,
    notify: Callable[[str], None] = lambda line: None,
) -> Report:
    """Run (or resume) a batch job and return what it did.

    `progress(total, done)` may return a callback taking the rows written by each chunk.
    Errors are ErnieDeployErrors naming the fix; rows written before one are kept, and a
    re-run with the same settings goes on from there.
    """
    source = open_source(input_path, options.text_column, options.id_column)
    output = Path(output_path).expanduser()
    sink = open_sink(output)  # checks the suffix before anything runs
    check_output(  # before --overwrite may remove anything: an input is never touched
        output,
        [source.path, *source.files],
        flag="OUTPUT",
        exists_ok=True,
        directory=isinstance(sink, ParquetSink),
    )
    settings = _settings(model, source, options)
    manifest = check_manifest(output, settings, options.overwrite)
    total = source.count()
    report = Report(output, total)
    done = sink.done() if manifest is not None else 0
    if done > total:
        raise ConfigError(
            f"{output} holds {done} rows but the input has {total}: pass --overwrite to start again."
        )
    report.resumed_from = done
    if manifest is not None and manifest.get("complete_rows") == total and done == total:
        notify(f"{output} is complete ({total} rows): nothing to do")
        return report
    if done:
        notify(f"resuming {output}: {done} of {total} rows already written")
    if options.overwrite and (output.exists() or manifest_path(output).exists()):
        sink.before_first_write = lambda: _replace(output, settings)
    else:
        write_manifest(output, settings, None)
    advance = progress(total, done) if progress else None
    try:
        if options.engine == "ray":
            from ernie_deploy.batch.ray_engine import run_ray

            run_ray(model, source, sink, options, done, report, advance, notify)
        else:
            _run_local(model, source, sink, options, done, report, advance, notify)
    except BaseException:
        if not output.exists():  # failed before a row was written (e.g. the model would not load)
            manifest_path(output).unlink(missing_ok=True)
        raise
    sink.finish()
    write_manifest(output, settings, total)
    return report


def _replace(output: Path, settings: dict[str, Any]) -> None:
    remove_output(output)
    write_manifest(output, settings, None)


def _run_local(
    model: BatchModel,
    source: Source,
    sink: Sink,
    options: BatchOptions,
    start: int,
    report: Report,
    advance: Progress | None,
    notify: Callable[[str], None],
) -> None:
    predictor = model.load(None)
    for notice in predictor.model.notices:
        notify(f"note: {notice}")
    _set_types(sink, predictor.task, options.prefix)
    for rows in chunks(source, start, options.batch_size):
        dicts, lines = predict_rows(predictor, rows, options.prefix)
        sink.write(rows[0].number, dicts, lines)
        report.written += len(rows)
        if advance:
            advance(len(rows))


def _set_types(sink: Sink, task: str, prefix: str) -> None:
    if hasattr(sink, "result_types"):
        sink.result_types = result_types(task, prefix)


def _settings(model: BatchModel, source: Source, options: BatchOptions) -> dict[str, Any]:
    """What the rows depend on; a resumed job must match it."""
    return {
        "input": str(source.path.resolve()),
        "input_files": source.fingerprint(),
        **_model_id(model),
        "options": model.options.results_settings(),
        "text_column": source.text_column,
        "id_column": source.id_column,
        "id_generated": source.id_generated,
        "prefix": options.prefix,
    }


def _model_id(model: BatchModel) -> dict[str, str]:
    """The model's .onnx, and the tokenizer folder when one was named (so manifests of jobs
    that never named one keep their keys)."""
    from ernie_deploy.runtime.model_dir import find_model

    files = find_model(model.path, model.tokenizer_dir)
    _refuse_rerank(model.task or files.config.task, model.path)
    ids = {"model": str(files.onnx_path.resolve())}
    if model.tokenizer_dir is not None:
        ids["tokenizer"] = str(files.tokenizer_dir.resolve())
    return ids


def _refuse_rerank(task: str | None, path: str) -> None:
    if task == "rerank":
        raise ConfigError(
            f"{path} is a rerank model, which needs a query per document: `batch` runs "
            "token_cls, seq_cls and embedding models (use the Python API's rerank)."
        )
