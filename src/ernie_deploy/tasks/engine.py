"""The shared core of every task: tokenizer + ONNX model + batching, and the predictor base class."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from numbers import Integral
from typing import Generic, TypeVar

import numpy as np

from ernie_deploy.errors import ConfigError, InputError, InputTooLongError
from ernie_deploy.runtime.checks import label_problem, pick_output
from ernie_deploy.runtime.session import OnnxModel
from ernie_deploy.tasks.batching import (
    Batch,
    Encoded,
    check_batch_size,
    check_texts,
    iter_batches,
)
from ernie_deploy.tasks.tokenization import Tokenizer

R = TypeVar("R")
__all__ = [
    "Engine",
    "Predictor",
    "check_label_count",
    "check_row_labels",
    "pick_output",  # defined in runtime.checks, which load and inspect share
    "sigmoid",
    "softmax",
]


@dataclass
class Engine:
    """Runs encoded sequences through the model in length-sorted, per-batch-padded batches."""

    model: OnnxModel
    tokenizer: Tokenizer
    max_seq_length: int
    batch_size: int = 32
    # Told (text, its tokens, the limit) of each text cut because truncation was asked for
    # (infer.py warns on stderr with it); None: cut in silence.
    on_truncate: Callable[[str, int, int], None] | None = None

    def __post_init__(self) -> None:
        check_batch_size(self.batch_size)

    def run(self, seqs: Sequence[Encoded], output: str) -> Iterator[tuple[Batch, np.ndarray]]:
        """Yield each batch with the named output (rows in the batch's order)."""
        for batch in iter_batches(seqs, self.batch_size, self.tokenizer.pad_id):
            yield batch, self.model.run(batch.features, [output])[output]

    def encode(self, texts: Sequence[str], truncate: bool, first_index: int = 0) -> list[Encoded]:
        """One model sequence per text (seq_cls / embedding): over-long texts are cut when
        `truncate`, else InputTooLongError names the text and the fix."""
        tok = self.tokenizer
        limit = self.max_seq_length - tok.num_special_tokens(False)
        seqs = []
        texts = list(texts)
        for i, t in enumerate(tok.tokenize(texts)):
            ids = t.ids
            if len(ids) > limit:
                if not truncate:
                    raise InputTooLongError(
                        f"Text {first_index + i} has {len(ids)} tokens but the model takes "
                        f"{limit} (max_seq_length {self.max_seq_length} with special tokens): "
                        "shorten it, raise max_seq_length, or ask for truncation "
                        "(truncate=True / --truncate)."
                    )
                if self.on_truncate is not None:
                    self.on_truncate(texts[i], len(ids), limit)
                ids = ids[:limit]
            input_ids, type_ids, _ = tok.build_inputs(ids)
            seqs.append(Encoded(input_ids, type_ids))
        return seqs


def check_label_count(model: OnnxModel, output: str, labels: Sequence[str]) -> None:
    """Labels must match the size of the output's last axis where the graph states it."""
    if problem := label_problem(model.output_shapes[output][-1], labels):
        raise problem


def check_row_labels(values: np.ndarray, labels: Sequence[str]) -> None:
    """The same check at run time, for graphs with a symbolic class axis."""
    if problem := label_problem(int(values.shape[-1]), labels):
        raise problem


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - x.max(axis=axis, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=axis, keepdims=True)
    return z


def sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)), dtype=np.float32)


class Predictor(ABC, Generic[R]):
    """A task head over an Engine: call it on texts, or stream results in input order."""

    task: str = ""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def model(self) -> OnnxModel:
        return self.engine.model

    @abstractmethod
    def _predict(self, texts: list[str], first_index: int) -> list[R]:
        """Results for validated `texts`; `first_index` numbers them in error messages."""

    def predict(self, texts: str | Sequence[str], first_index: int = 0) -> list[R]:
        """Results for `texts`, in input order."""
        return self._predict(check_texts(texts, first_index=first_index), first_index)

    def __call__(self, texts: str | Sequence[str]) -> list[R]:
        return self.predict(texts)

    def stream(self, texts: str | Iterable[str], chunk_size: int = 256) -> Iterator[R]:
        """Yield results in input order, `chunk_size` texts at a time (for progress and streaming).

        `texts` may be any iterable (a list, a generator, a numpy array, a pandas Series); it is
        read one chunk ahead. A bad text raises when its chunk is reached; results already
        yielded stay valid.
        """
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, Integral) or chunk_size < 1:
            raise ConfigError(f"chunk_size must be a positive integer, got {chunk_size!r}.")
        if isinstance(texts, str):
            texts = [texts]
        if isinstance(texts, (bytes, bytearray, Mapping)) or not isinstance(texts, Iterable):
            raise InputError(
                f"Expected a string or an iterable of strings, got {type(texts).__name__}."
            )
        items = iter(texts)
        start = 0
        while chunk := list(islice(items, int(chunk_size))):
            yield from self.predict(chunk, first_index=start)
            start += len(chunk)
        if start == 0:
            check_texts([])  # nothing at all: the same sentence as predict([])
