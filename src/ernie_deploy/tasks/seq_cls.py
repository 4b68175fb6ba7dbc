"""Sequence classification: softmax label + confidence + top-k, or sigmoid multi-label."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ernie_deploy.errors import ConfigError
from ernie_deploy.tasks.engine import (
    Engine,
    Predictor,
    check_label_count,
    check_row_labels,
    pick_output,
    sigmoid,
    softmax,
)
from ernie_deploy.tasks.results import LabelScore, SeqClsResult


class SequenceClassifier(Predictor[SeqClsResult]):
    """Text classification.

    Args:
        engine: tokenizer + model + batching.
        labels: class names in output order.
        top_k: how many (label, score) pairs each result lists, best first.
        multi_label: score each label with a sigmoid; `labels` of a result lists all
            labels scoring at least `threshold` (the best one when none does).
        threshold: multi-label cut-off.
        truncate: cut texts longer than max_seq_length instead of raising InputTooLongError.
    """

    task = "seq_cls"

    def __init__(
        self,
        engine: Engine,
        labels: Sequence[str],
        top_k: int = 1,
        multi_label: bool = False,
        threshold: float = 0.5,
        truncate: bool = False,
    ) -> None:
        super().__init__(engine)
        self.output = pick_output(engine.model, 2, ("logits",))
        self.labels = tuple(labels)
        check_label_count(engine.model, self.output, self.labels)
        if top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {top_k}.")
        self.top_k = min(top_k, len(self.labels))
        self.multi_label = multi_label
        self.threshold = threshold
        self.truncate = truncate

    def logits(self, texts: Sequence[str], first_index: int = 0) -> np.ndarray:
        """Raw logits [n_texts, n_labels] in input order."""
        seqs = self.engine.encode(texts, self.truncate, first_index)
        out = np.empty((len(seqs), len(self.labels)), np.float32)
        for batch, logits in self.engine.run(seqs, self.output):
            check_row_labels(logits, self.labels)
            out[batch.indices] = logits
        return out

    def _predict(self, texts: list[str], first_index: int) -> list[SeqClsResult]:
        logits = self.logits(texts, first_index)
        probs = sigmoid(logits) if self.multi_label else softmax(logits)
        order = np.argsort(-probs, axis=-1, kind="stable")[:, : self.top_k]
        results = []
        for text, p, best in zip(texts, probs, order):
            top = tuple(LabelScore(self.labels[j], float(p[j])) for j in best)
            if self.multi_label:
                chosen = tuple(self.labels[j] for j in np.flatnonzero(p >= self.threshold))
                chosen = chosen or (top[0].label,)
            else:
                chosen = (top[0].label,)
            results.append(SeqClsResult(text, top[0].label, top[0].score, top, chosen))
        return results
