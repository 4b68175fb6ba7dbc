"""The served models: lookup by name and task, admission (429), and running a request's stages.

A request runs the task head's own method (`predict`, `rerank`, ...) in a worker thread, on a
shallow copy of the loaded predictor whose engine is a per-request `QueuedEngine` (see
`serve.batcher`). Request options (`truncate`, `top_k`) are set on that copy only, so
concurrent requests never see each other's options.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ernie_deploy.api import AnyPredictor
from ernie_deploy.errors import (
    ConfigError,
    InputError,
    NotReadyError,
    OverloadedError,
    UnknownModelError,
)
from ernie_deploy.serve.batcher import Batcher, BatchLimits, QueuedEngine
from ernie_deploy.serve.metrics import Metrics
from ernie_deploy.serve.settings import ServeSettings, check_name

T = TypeVar("T")

TASK_NAMES = {
    "token_cls": "NER (token_cls)",
    "seq_cls": "classification (seq_cls)",
    "embedding": "embedding",
    "rerank": "rerank",
}


@dataclass(eq=False)
class ServedModel:
    """One loaded model under its served name, with its batcher and in-flight count."""

    name: str
    predictor: AnyPredictor
    batcher: Batcher
    in_flight: int = 0
    pool: ThreadPoolExecutor | None = None  # its own workers: a slow model cannot starve others

    @property
    def task(self) -> str:
        return self.predictor.task


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What a request's call returned, and the tokens (with special tokens) it ran."""

    value: T
    tokens: int


class Registry:
    """The app's models, worker threads and batchers."""

    def __init__(
        self, predictors: Mapping[str, AnyPredictor], settings: ServeSettings, metrics: Metrics
    ) -> None:
        if not predictors:
            raise ConfigError("No models to serve: pass at least one model.")
        limits = BatchLimits(
            settings.max_batch_tokens,
            settings.max_batch_size,
            settings.max_wait_ms,
            settings.max_padding,
            settings.hold_for_company,
        )
        self.models: dict[str, ServedModel] = {}
        for name, predictor in predictors.items():
            engine = predictor.engine
            batcher = Batcher(
                check_name(name),
                engine.model,
                engine.tokenizer.pad_id,
                limits,
                metrics.batch_observer(name),
            )
            self.models[name] = ServedModel(name, predictor, batcher)
            metrics.queue_depth.labels(name).set(0)
        self.settings = settings
        self.metrics = metrics
        self.ready = False
        self.stopping = False

    def start(self) -> None:
        """Start every model's worker threads (created on demand) and inference thread."""
        for served in self.models.values():
            served.pool = ThreadPoolExecutor(self.settings.workers, f"ernie-deploy-{served.name}")
            served.batcher.start()
        self.ready = True

    def stop(self) -> None:
        """Refuse new requests, finish the queued ones, end the threads (blocking)."""
        self.ready = False
        self.stopping = True
        for served in self.models.values():
            served.batcher.stop()
            if served.pool is not None:
                served.pool.shutdown(wait=True)

    def embedding_size(self, name: str) -> int | None:
        """The vector size of an embedding model, when its graph declares it; else None."""
        predictor = self.models[name].predictor
        if predictor.task != "embedding":
            return None
        shape = predictor.model.output_shapes.get(getattr(predictor, "output", ""), [])
        size = shape[-1] if shape else None
        return size if isinstance(size, int) and size > 0 else None

    @property
    def healthy(self) -> bool:
        return self.ready and all(m.batcher.alive for m in self.models.values())

    def find(self, name: str | None, task: str | None, route: str) -> ServedModel:
        """The model a request names (or the only one of `task`); 404 names the choices."""
        candidates = [m for m in self.models.values() if task is None or m.task == task]
        what = f"{TASK_NAMES[task]} " if task else ""
        choices = ", ".join(m.name for m in candidates)
        if name is None:
            if len(candidates) == 1:
                return candidates[0]
            if not candidates:
                loaded = ", ".join(f"{m.name} ({m.task})" for m in self.models.values())
                raise UnknownModelError(
                    f"No {what}model is loaded, which {route} needs: this server has {loaded}."
                )
            raise InputError(
                f"Several {what}models are loaded ({choices}): name one in the 'model' field."
            )
        served = self.models.get(name)
        if served is None or served not in candidates:
            raise UnknownModelError(
                f"No {what}model named {name!r} is loaded: use one of {choices or 'none'} "
                f"with {route}."
            )
        return served

    async def call(self, served: ServedModel, fn: Callable[[Any], T], **options: Any) -> Outcome[T]:
        """Run `fn(predictor)` in a worker thread on a per-request copy of the predictor.

        `options` are attributes set on that copy (e.g. truncate=True). Raises OverloadedError
        (429) when `max_queue` requests for this model are already waiting or running.
        """
        if not self.ready or served.pool is None:
            state = "stopping" if self.stopping else "starting"
            raise NotReadyError(f"The server is {state}: retry in a moment.")
        limit = self.settings.max_queue
        if served.in_flight >= limit:
            self.metrics.rejected.labels(served.name).inc()
            raise OverloadedError(
                f"Model {served.name!r} already has {served.in_flight} requests queued, the "
                f"server's limit: retry in a moment, or start it with a larger --max-queue."
            )
        gauge = self.metrics.queue_depth.labels(served.name)
        served.in_flight += 1
        gauge.set(served.in_flight)
        engine: QueuedEngine | None = None
        try:
            predictor, engine = request_copy(served, options)
            engine.expect()  # batches may wait for its rows; a lone request runs at once
            loop = asyncio.get_running_loop()
            try:
                value = await loop.run_in_executor(served.pool, fn, predictor)
            except asyncio.CancelledError:
                # uvicorn cuts requests off when the shutdown grace period is over: drop the
                # request's queued rows (freeing its worker) and answer 503 instead of a traceback.
                engine.cancel()
                raise NotReadyError(
                    f"The server is shutting down and cut this request off after its "
                    f"{self.settings.graceful_timeout_s:g} s grace period: retry it."
                ) from None
            return Outcome(value, engine.tokens)
        finally:
            if engine is not None:
                engine.settle()
            served.in_flight -= 1
            gauge.set(served.in_flight)


def request_copy(served: ServedModel, options: Mapping[str, Any]) -> tuple[Any, QueuedEngine]:
    """A shallow copy of the predictor with its own QueuedEngine and the request's options."""
    predictor = copy.copy(served.predictor)
    engine = QueuedEngine(served.predictor.engine, served.batcher)
    predictor.engine = engine
    for key, value in options.items():
        if not hasattr(predictor, key):  # a task head changed: fail loudly, not silently
            raise AttributeError(f"{type(predictor).__name__} has no option {key!r}")
        setattr(predictor, key, value)
    return predictor, engine
