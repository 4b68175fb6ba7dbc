"""Dynamic batching: merge the model rows of concurrent requests into length-sorted batches.

Design (pre / core / post, as in infinity):

* **pre and post** run in the server's worker threads: a request calls the task head's own
  `predict` (or `rerank`, ...) on a per-request copy of the predictor whose engine is a
  `QueuedEngine`. Tokenization, NER windowing, truncation checks and the pure-numpy
  post-processing are therefore exactly the library's, and they overlap inference.
* **core** runs in one inference thread per model (`Batcher`). `QueuedEngine.run` hands the
  request's encoded rows (one per text, per NER window or per query-document pair) to the
  batcher as a job and blocks its worker thread until the rows are done. The inference thread
  waits for company only while it can come: while requests admitted for this model have not
  handed in their rows yet (they are being tokenized, or wait for a worker thread), until the
  oldest job has waited `max_wait_ms` or a full batch is waiting. A lone request (nothing else
  admitted) runs at once (unless `hold_for_company`). Then it takes every waiting job, sorts
  their rows by length (longest first) and cuts them into batches of at most
  `max_batch_size` rows and `max_batch_tokens` padded tokens (rows x longest row; a row
  longer than the budget runs alone), starting a new batch where the next row would bring the
  batch's padded tokens above `max_padding` times its real tokens (a few dozen rows that arrived
  together span the corpus's lengths; a 5-token row padded to 300 costs as much as a 300-token
  one). Only `session.run` happens on this thread; ONNX Runtime
  releases the GIL, so the worker threads keep tokenizing meanwhile.
* Each request gets back its own rows, with the padded features of the batch they ran in, in
  the `(Batch, values)` form `Engine.run` yields, so the head post-processes them as if it had
  run them itself. Rows never interact inside a batch (attention is masked), so a request's
  answer is the one it gets alone; only the padding width differs, which moves float outputs
  of attention models by rounding (about 1e-6), never labels, entities or orderings.

Admission (429 when `max_queue` requests are in flight) is done before a request reaches the
batcher, by the registry.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ernie_deploy.errors import ErnieDeployError, NotReadyError
from ernie_deploy.runtime.session import OnnxModel
from ernie_deploy.tasks.batching import Batch, Encoded, pad
from ernie_deploy.tasks.engine import Engine


@dataclass(frozen=True)
class BatchLimits:
    """How batches are formed (see the module docstring)."""

    max_batch_tokens: int = 16384
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_padding: float = 1.1
    hold_for_company: bool = False  # wait max_wait_ms even when no other request is coming


@dataclass(frozen=True)
class BatchStats:
    """What one session.run did: rows, requests merged, real and padded tokens, seconds."""

    rows: int
    requests: int
    tokens: int
    padded_tokens: int
    seconds: float


@dataclass(eq=False)
class _Job:
    """One request's rows waiting for the inference thread."""

    rows: Sequence[Encoded]
    output: str
    arrived: float
    tokens: int
    remaining: int
    parts: list[tuple[Batch, np.ndarray]] = field(default_factory=list)
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class Batcher:
    """One model's request queue and inference thread.

    Args:
        name: the model's served name (thread name, messages).
        model: the loaded ONNX model; only this batcher's thread runs it once started.
        pad_id: the tokenizer's padding id.
        limits: batch bounds and maximum wait.
        on_batch: called on the inference thread after every batch (metrics).
    """

    def __init__(
        self,
        name: str,
        model: OnnxModel,
        pad_id: int,
        limits: BatchLimits,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self.pad_id = pad_id
        self.limits = limits
        self.on_batch = on_batch
        self._pending: list[_Job] = []
        self._pending_rows = 0
        self._pending_tokens = 0
        self._arriving = 0  # requests admitted that have not handed in their rows yet
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the inference thread."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name=f"ernie-deploy-infer-{self.name}", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finish every queued job, then end the inference thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def expect(self) -> None:
        """A request was admitted and will hand in rows soon: batches may wait for it."""
        with self._cond:
            self._arriving += 1

    def settle(self) -> None:
        """An expected request will hand in no rows (it failed, or ran none): stop waiting."""
        with self._cond:
            self._arriving -= 1
            self._cond.notify_all()

    def run(
        self,
        seqs: Sequence[Encoded],
        output: str,
        on_job: Callable[[_Job], None] | None = None,
        expected: bool = False,
    ) -> Iterator[tuple[Batch, np.ndarray]]:
        """Engine.run through the queue: blocks the calling thread until every row has run
        (`on_job` sees the job first, so that its request can cancel it; `expected`: these are
        the rows of a request announced with `expect`)."""
        if not seqs:
            if expected:
                self.settle()
            return iter(())
        tokens = sum(len(s.input_ids) for s in seqs)
        job = _Job(seqs, output, time.monotonic(), tokens, len(seqs))
        if on_job is not None:
            try:
                on_job(job)
            except BaseException:
                if expected:
                    self.settle()
                raise
        with self._cond:
            if expected:
                self._arriving -= 1
            if self._stopping or not self.alive:
                raise NotReadyError(
                    f"Model {self.name!r} is not running (the server is starting or stopping): "
                    "retry in a moment."
                )
            self._pending.append(job)
            self._pending_rows += len(seqs)
            self._pending_tokens += tokens
            self._cond.notify_all()
        job.done.wait()
        if job.error is not None:
            raise job.error
        return iter(job.parts)

    def cancel(self, jobs: Sequence[_Job]) -> None:
        """Give up on `jobs` (their request was cut off): rows not yet run are skipped and the
        waiting worker thread gets NotReadyError at once."""
        error = NotReadyError(
            f"Model {self.name!r} dropped a request cut off by the server's shutdown: retry it."
        )
        with self._cond:
            self._pending = [j for j in self._pending if j not in jobs]
            for job in jobs:
                if not job.done.is_set():
                    job.error = error
                    job.done.set()

    def _full(self) -> bool:
        limits = self.limits
        return (
            self._pending_rows >= limits.max_batch_size
            or self._pending_tokens >= limits.max_batch_tokens
        )

    def _take(self) -> list[_Job] | None:
        """Wait for work, then for the requests still arriving to join it, until the batch is
        full or the oldest job's wait ends."""
        with self._cond:
            while not self._pending:
                if self._stopping:
                    return None
                self._cond.wait()
            deadline = self._pending[0].arrived + self.limits.max_wait_ms / 1000.0
            limits = self.limits
            while (self._arriving > 0 or limits.hold_for_company) and not (
                self._stopping or self._full()
            ):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            jobs, self._pending = self._pending, []
            self._pending_rows = self._pending_tokens = 0
            return jobs

    def _loop(self) -> None:
        while (jobs := self._take()) is not None:
            try:
                for output in dict.fromkeys(job.output for job in jobs):
                    self._run_jobs([j for j in jobs if j.output == output], output)
            except BaseException as exc:  # never leave a caller waiting
                for job in jobs:
                    if not job.done.is_set():
                        job.error = exc
                        job.done.set()
                raise

    def _run_jobs(self, jobs: list[_Job], output: str) -> None:
        rows = [(job, i, len(seq.input_ids)) for job in jobs for i, seq in enumerate(job.rows)]
        rows.sort(key=lambda r: -r[2])  # stable: equal lengths keep arrival order
        for batch in cut_batches(rows, self.limits):
            self._run_batch(batch, output)

    def _run_batch(self, rows: list[tuple[_Job, int, int]], output: str) -> None:
        live = [r for r in rows if r[0].error is None]
        if not live:
            return
        features = pad([job.rows[i] for job, i, _ in live], self.pad_id)
        start = time.perf_counter()
        try:
            values = self.model.run(features, [output])[output]
        except ErnieDeployError as exc:  # OnnxModel.run wraps ORT's failures as ModelRunError
            self._fail({job for job, _, _ in live}, exc)
            return
        seconds = time.perf_counter() - start
        by_job: dict[_Job, list[int]] = {}
        for row, (job, _, _) in enumerate(live):
            by_job.setdefault(job, []).append(row)
        lengths = np.fromiter((n for _, _, n in live), dtype=np.int64, count=len(live))
        for job, job_rows in by_job.items():
            sel = np.asarray(job_rows, dtype=np.int64)
            local = np.asarray([live[r][1] for r in job_rows], dtype=np.int64)
            part = Batch(local, lengths[sel], {k: v[sel] for k, v in features.items()})
            job.parts.append((part, values[sel]))
            job.remaining -= len(job_rows)
            if job.remaining == 0:
                job.done.set()
        if self.on_batch is not None:
            self.on_batch(
                BatchStats(
                    rows=len(live),
                    requests=len(by_job),
                    tokens=int(lengths.sum()),
                    padded_tokens=len(live) * int(lengths.max()),
                    seconds=seconds,
                )
            )

    @staticmethod
    def _fail(jobs: set[_Job], exc: BaseException) -> None:
        for job in jobs:
            job.error = exc
            job.done.set()


def cut_batches(
    rows: Sequence[tuple[_Job, int, int]], limits: BatchLimits
) -> Iterator[list[tuple[_Job, int, int]]]:
    """Consecutive runs of length-sorted (longest first) rows within the size, token and
    padding limits."""
    batch: list[tuple[_Job, int, int]] = []
    real = 0
    for row in rows:
        width = batch[0][2] if batch else row[2]
        padded = (len(batch) + 1) * width
        if batch and (
            len(batch) + 1 > limits.max_batch_size
            or padded > limits.max_batch_tokens
            or padded > limits.max_padding * (real + row[2])
        ):
            yield batch
            batch, real = [], 0
        batch.append(row)
        real += row[2]
    if batch:
        yield batch


class QueuedEngine(Engine):
    """An Engine whose `run` goes through a Batcher, for one request; counts the tokens it sent."""

    def __init__(self, engine: Engine, batcher: Batcher) -> None:
        super().__init__(engine.model, engine.tokenizer, engine.max_seq_length, engine.batch_size)
        self.batcher = batcher
        self.tokens = 0
        self._jobs: list[_Job] = []
        self._cancelled = False
        self._expected = False
        self._lock = threading.Lock()

    def expect(self) -> None:
        """Tell the batcher this request's rows are coming (call `settle` when it is over)."""
        with self._lock:
            if not self._expected:
                self._expected = True
                self.batcher.expect()

    def settle(self) -> None:
        """The request is over: if it never handed in rows, the batcher stops waiting for it."""
        with self._lock:
            expected, self._expected = self._expected, False
        if expected:
            self.batcher.settle()

    def run(self, seqs: Sequence[Encoded], output: str) -> Iterator[tuple[Batch, np.ndarray]]:
        self.tokens += sum(len(s.input_ids) for s in seqs)
        with self._lock:
            expected, self._expected = self._expected, False
        return self.batcher.run(seqs, output, on_job=self._track, expected=expected)

    def cancel(self) -> None:
        """The request was cut off: drop its rows still queued, and refuse any more."""
        with self._lock:
            self._cancelled = True
            jobs = list(self._jobs)
        self.batcher.cancel(jobs)

    def _track(self, job: _Job) -> None:
        with self._lock:
            if self._cancelled:
                raise NotReadyError(
                    f"Model {self.batcher.name!r} dropped a request cut off by the server's "
                    "shutdown: retry it."
                )
            self._jobs.append(job)
