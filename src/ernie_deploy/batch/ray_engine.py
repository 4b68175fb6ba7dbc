"""The ray engine of `batch`: Ray Data `map_batches` over an actor pool, one ONNX Runtime session per actor.

The driver (the `ernie-deploy batch` process) reads the input, puts one Arrow block per chunk
into Ray's object store (so worker nodes need no access to the input file), and writes the
results it gets back, in input order, with the same sinks as the local engine. Each actor
loads the model once, with CPUs-per-actor intra-op threads (actors x threads = the CPUs Ray
gives), and runs `predict_rows` on one block per call: the local engine's code path, on the
same chunks. Ray restarts an actor that dies and retries its block (`max_restarts` /
`max_task_retries` -1, Ray Data's defaults), and only whole returned blocks are written, so
every row is written exactly once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from ernie_deploy.batch.job import (
    BatchModel,
    BatchOptions,
    Progress,
    Report,
    _set_types,
    chunks,
    predict_rows,
)
from ernie_deploy.batch.sink import ParquetSink, Sink
from ernie_deploy.batch.source import Row, Source
from ernie_deploy.errors import ErnieDeployError, ModelRunError, first_line
from ernie_deploy.raycluster import (
    ModelFiles,
    cpu_share,
    init_ray,
    node_cpus,
    require_ray,
    worker_model,
)
from ernie_deploy.textio import json_line

WHAT = "--engine ray"


class BatchWorker:
    """A Ray Data actor: loads the model once, then predicts one block (chunk) per call.

    Errors the user can fix (a text too long, a model that does not load) come back as data,
    an `_error` row, so the driver can report the original sentence rather than Ray's wrapper.
    """

    def __init__(
        self, model: BatchModel, files: ModelFiles, threads: int, text_column: str, prefix: str
    ) -> None:
        self._keep: list[Any] = []
        self.text_column = text_column
        self.prefix = prefix
        self.error: str | None = None
        try:
            path, tok = files.local(self._keep)
            self.predictor = model.load(threads, path, tok)
        except ErnieDeployError as exc:
            self.error = _error_json(exc)

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        numbers = batch["_row"].to_pylist()
        error = self.error
        lines: list[str | None] = []
        if error is None:
            try:
                records = [json.loads(r) for r in batch["_record"].to_pylist()]
                rows = [Row(n, r, r[self.text_column]) for n, r in zip(numbers, records)]
                lines = list(predict_rows(self.predictor, rows, self.prefix)[1])
            except ErnieDeployError as exc:
                error = _error_json(exc)
            except Exception as exc:  # a bug in post-processing (ORT's own are ModelRunError)
                error = _error_json(
                    ModelRunError(
                        f"The model failed on rows {numbers[0]}-{numbers[-1]}: {first_line(exc)}."
                    )
                )
        if error is not None:
            numbers, lines = numbers[:1], [None]
        return pa.table(
            {
                "_row": pa.array(numbers, pa.int64()),
                "_line": pa.array(lines, pa.string()),
                "_error": pa.array([error] * len(numbers), pa.string()),
            }
        )


def _error_json(exc: ErnieDeployError) -> str:
    return json.dumps({"type": type(exc).__name__, "message": str(exc)}, ensure_ascii=False)


def _error_from_json(text: str) -> ErnieDeployError:
    from ernie_deploy import errors

    data = json.loads(text)
    cls = getattr(errors, str(data.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, ErnieDeployError)):
        cls = ErnieDeployError
    return cls(str(data.get("message")))


def run_ray(
    model: BatchModel,
    source: Source,
    sink: Sink,
    options: BatchOptions,
    start: int,
    report: Report,
    advance: Progress | None,
    notify: Callable[[str], None],
    worker_cls: type = BatchWorker,
) -> None:
    """Run the rows from `start` on Ray and write them to `sink` in order.

    `worker_cls` is the actor class (BatchWorker, or a subclass of it).
    """
    require_ray(WHAT)
    import pyarrow as pa
    import ray.data

    started = init_ray(options.address, WHAT)
    try:
        actors, threads = cpu_share(options.num_actors, "--num-actors")
        ship = bool(options.address) if options.ship_model is None else options.ship_model
        files = worker_model(model.path, model.tokenizer_dir, ship)
        refs: list[Any] = []
        for rows in chunks(source, start, options.batch_size):
            block = pa.table(
                {
                    "_row": pa.array([r.number for r in rows], pa.int64()),
                    "_record": pa.array([json_line(r.record) for r in rows], pa.string()),
                }
            )
            refs.append(ray.put(block))
        if not refs:
            return
        notify(
            f"ray: {actors} actor(s) x {threads} thread(s) on a cluster of {sum(node_cpus())} "
            f"CPUs, {len(refs)} batches of up to {options.batch_size} rows"
        )
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False  # ours is on stderr already
        _quiet_ray_data()
        ds = ray.data.from_arrow_refs(refs).map_batches(
            worker_cls,
            batch_size=None,  # one block = one chunk = one predict call, as the local engine
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=threads,
            fn_constructor_kwargs={
                "model": model,
                "files": files,
                "threads": threads,
                "text_column": source.text_column,
                "prefix": options.prefix,
            },
        )
        parse = isinstance(sink, ParquetSink)
        _set_types(sink, _task(model), options.prefix)
        expected = start
        try:
            batches: Any = ds.iter_batches(batch_size=None, batch_format="pyarrow")
            for batch in batches:
                numbers = batch["_row"].to_pylist()
                lines = batch["_line"].to_pylist()
                if not numbers:
                    continue
                error = batch["_error"][0].as_py()
                if error is not None:
                    raise _error_from_json(error)
                if numbers[0] != expected or numbers[-1] != expected + len(numbers) - 1:
                    raise ModelRunError(
                        f"Ray returned rows {numbers[0]}-{numbers[-1]} where row {expected} was "
                        "due: re-run the same command to resume from the last written row."
                    )
                dicts = [json.loads(line) for line in lines] if parse else []
                sink.write(expected, dicts, lines)
                expected += len(numbers)
                report.written += len(numbers)
                if advance:
                    advance(len(numbers))
        except ErnieDeployError:
            raise
        except Exception as exc:
            raise _unwrap(exc) from None
    finally:
        if started:
            ray.shutdown()


class _DropNotices(logging.Filter):
    """Ray Data's start / finish lines and its 'progress bars disabled' hint: not for our users."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO and "Progress bars disabled" not in record.getMessage()


def _quiet_ray_data() -> None:
    logger = logging.getLogger("ray.data")
    if not any(isinstance(f, _DropNotices) for f in logger.filters):
        logger.addFilter(_DropNotices())
    for handler in logger.handlers:
        if not any(isinstance(f, _DropNotices) for f in handler.filters):
            handler.addFilter(_DropNotices())


def _task(model: BatchModel) -> str:
    from ernie_deploy.runtime.model_dir import find_model

    return model.task or find_model(model.path, model.tokenizer_dir).config.task or ""


def _unwrap(exc: BaseException) -> ErnieDeployError:
    """The ErnieDeployError an actor raised (Ray wraps it), or a ModelRunError for anything else."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        cause = getattr(e, "cause", None)
        if isinstance(cause, ErnieDeployError):
            return type(cause)(*cause.args)
        if isinstance(e, ErnieDeployError) and type(e).__module__.startswith("ernie_deploy"):
            return e
        todo += [cause if isinstance(cause, BaseException) else None, e.__cause__, e.__context__]
    return ModelRunError(
        f"The Ray job failed ({first_line(exc, last=True)}): see the Ray logs above; re-run the same command to "
        "resume from the last written row."
    )
