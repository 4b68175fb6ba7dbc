"""Evaluation: entity-level P/R/F1, accuracy and macro-F1, and two models' scores compared.

Pure Python (numpy only through the tag decoder); nothing here runs a model. Scores are
frozen dataclasses with `to_dict()`. The labelled files they score are read by
`tasks.labelled`.

Conventions:
- An entity is an exact `(start, end, label)` span (end exclusive). A predicted span counts
  only if start, end and label all match a gold span; partial overlaps are errors (one false
  positive and one false negative). Spans are sets per text: a duplicate counts once.
- 0 / 0: a ratio with nothing in it is 1.0 when there was nothing to find and nothing was
  predicted (tp = fp = fn = 0), else 0.0. So gold scored against itself is always 1.0.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ernie_deploy.tasks.bio import TagSet, decode
from ernie_deploy.tasks.labelled import LabelledText, Span
from ernie_deploy.tasks.results import SeqClsResult, TokenClsResult


def _ratio(num: int, den: int, empty: bool) -> float:
    if den:
        return num / den
    return 1.0 if empty else 0.0


@dataclass(frozen=True)
class PRF:
    """Precision / recall / F1 from true-positive, false-positive and false-negative counts.

    `per_label` holds the same scores for each label (sorted by name); it is empty for the
    per-label entries themselves.
    """

    tp: int
    fp: int
    fn: int
    per_label: tuple[tuple[str, PRF], ...] = ()

    @property
    def _empty(self) -> bool:
        return self.tp == self.fp == self.fn == 0

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp, self._empty)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn, self._empty)

    @property
    def f1(self) -> float:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn, self._empty)

    @property
    def support(self) -> int:
        """How many gold items (spans or examples) there were."""
        return self.tp + self.fn

    def summary(self) -> tuple[tuple[str, float], ...]:
        """The headline scores, (name, value) pairs."""
        return (("precision", self.precision), ("recall", self.recall), ("f1", self.f1))

    def label(self, name: str) -> PRF:
        """The scores of one label (all zero counts for a label never seen)."""
        return dict(self.per_label).get(name, PRF(0, 0, 0))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "support": self.support,
        }
        if self.per_label:
            data["per_label"] = {name: s.to_dict() for name, s in self.per_label}
        return data


def _prf(counts: dict[str, list[int]]) -> PRF:
    per_label = tuple((n, PRF(counts[n][0], counts[n][1], counts[n][2])) for n in sorted(counts))
    tp, fp, fn = (sum(c[i] for c in counts.values()) for i in range(3))
    return PRF(tp, fp, fn, per_label)


def entity_prf(gold: Sequence[Iterable[Span]], pred: Sequence[Iterable[Span]]) -> PRF:
    """Micro P/R/F1 over exact (start, end, label) spans, text by text, plus per-label scores.

    `gold[i]` and `pred[i]` are the spans of text i (e.g. `(e.start, e.end, e.label)` of a
    TokenClsResult's entities).
    """
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} texts but pred has {len(pred)}.")
    counts: dict[str, list[int]] = {}
    for g_spans, p_spans in zip(gold, pred):
        g = {_span(s) for s in g_spans}
        p = {_span(s) for s in p_spans}
        for spans, slot in ((g & p, 0), (p - g, 1), (g - p, 2)):
            for _, _, label in spans:
                counts.setdefault(label, [0, 0, 0])[slot] += 1
    return _prf(counts)


def _span(span: Iterable[Any]) -> Span:
    start, end, label = span
    return int(start), int(end), str(label)


def label_prf(gold: Sequence[Hashable], pred: Sequence[Hashable]) -> PRF:
    """One-label-per-example P/R/F1 per class; the micro scores equal the accuracy."""
    _check_pairs(gold, pred)
    counts: dict[str, list[int]] = {}
    for g, p in zip(gold, pred):
        if g == p:
            counts.setdefault(str(g), [0, 0, 0])[0] += 1
        else:
            counts.setdefault(str(p), [0, 0, 0])[1] += 1
            counts.setdefault(str(g), [0, 0, 0])[2] += 1
    return _prf(counts)


def accuracy(gold: Sequence[Hashable], pred: Sequence[Hashable]) -> float:
    """The fraction of examples whose predicted label equals the gold one."""
    _check_pairs(gold, pred)
    return sum(g == p for g, p in zip(gold, pred)) / len(gold)


def macro_f1(
    gold: Sequence[Hashable], pred: Sequence[Hashable], labels: Iterable[str] | None = None
) -> float:
    """The unweighted mean of the per-class F1 over `labels` (default: every label in gold or pred).

    A label in `labels` that neither gold nor pred uses scores 1.0 (the 0 / 0 convention).
    """
    scores = label_prf(gold, pred)
    names = sorted(set(labels)) if labels is not None else [n for n, _ in scores.per_label]
    return sum(scores.label(n).f1 for n in names) / len(names) if names else 1.0


def _check_pairs(gold: Sequence[Hashable], pred: Sequence[Hashable]) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} labels but pred has {len(pred)}.")
    if not gold:
        raise ValueError("nothing to score: gold and pred are empty.")


@dataclass(frozen=True)
class ClassificationScores:
    """Accuracy, macro-F1 and per-class P/R/F1 of a single-label classifier."""

    examples: int
    accuracy: float
    macro_f1: float
    per_label: PRF

    def summary(self) -> tuple[tuple[str, float], ...]:
        """The headline scores, (name, value) pairs."""
        return (("accuracy", self.accuracy), ("macro_f1", self.macro_f1))

    def to_dict(self) -> dict[str, Any]:
        return {
            "examples": self.examples,
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "per_label": {name: s.to_dict() for name, s in self.per_label.per_label},
        }


def classification_scores(
    gold: Sequence[Hashable], pred: Sequence[Hashable]
) -> ClassificationScores:
    """Every classification score at once."""
    return ClassificationScores(
        len(gold), accuracy(gold, pred), macro_f1(gold, pred), label_prf(gold, pred)
    )


def score_results(
    examples: Sequence[LabelledText], results: Sequence[TokenClsResult | SeqClsResult]
) -> PRF | ClassificationScores:
    """Predictions (one result per example, in order) against a labelled file's gold.

    token_cls examples give entity-level scores (`entity_prf`), seq_cls examples
    classification scores (`classification_scores`).
    """
    if len(examples) != len(results):
        raise ValueError(f"{len(examples)} examples but {len(results)} results.")
    if examples and examples[0].entities is not None:
        gold = [e.entities or () for e in examples]
        return entity_prf(gold, [result_spans(r) for r in results])
    labels = [r.label if isinstance(r, SeqClsResult) else "" for r in results]
    return classification_scores([e.label for e in examples], labels)


def result_spans(result: TokenClsResult | SeqClsResult) -> list[Span]:
    """A TokenClsResult's entities as (start, end, label) spans (none for other results)."""
    if not isinstance(result, TokenClsResult):
        return []
    return [(e.start, e.end, e.label) for e in result.entities]


def tags_to_spans(tags: Sequence[str], strict: bool = False) -> list[Span]:
    """Per-position tags (BIO, BIOES, BMES or IO) -> (start, end, type) position spans.

    Decoded by the same rules as the NER head (tasks.bio.decode), so gold spans from a
    character-tagged corpus (MSRA) match what the model's tags would give.
    """
    if not tags:
        return []
    tagset = TagSet.from_labels(sorted({*tags, "O"}))
    index = {label: i for i, label in enumerate(tagset.labels)}
    n = len(tags)
    positions = np.arange(n, dtype=np.int64)
    entities = decode(
        "\0" * n,
        np.array([index[t] for t in tags], dtype=np.int64),
        np.ones(n, dtype=np.float32),
        np.stack([positions, positions + 1], axis=1),
        positions,
        tagset,
        strict=strict,
    )
    return [(e.start, e.end, e.label) for e in entities]


@dataclass(frozen=True)
class ScoreComparison:
    """One labelled file scored with two models (e.g. fp32 and int8).

    `reference` / `candidate` are (metric, value) pairs (`summary()` of the scores);
    `agreement` is the fraction of texts whose predictions (entity spans or label) are equal.
    """

    path: Path
    task: str
    examples: int
    reference: tuple[tuple[str, float], ...]
    candidate: tuple[tuple[str, float], ...]
    agreement: float
    names: tuple[str, str] = ("fp32", "int8")

    def delta(self, metric: str) -> float:
        """candidate minus reference for one metric."""
        return dict(self.candidate)[metric] - dict(self.reference)[metric]

    def lines(self) -> list[str]:
        kind = "entity-level" if self.task == "token_cls" else "classification"
        ref, cand = self.names
        out = [f"{kind} scores on {self.path} ({self.examples} examples): {ref} -> {cand}"]
        for name, value in self.reference:
            after = dict(self.candidate)[name]
            out.append(f"  {name}: {value:.4f} -> {after:.4f} (delta {self.delta(name):+.4f})")
        return out + [f"  identical predictions: {self.agreement:.2%} of texts"]

    def to_dict(self) -> dict[str, Any]:
        ref, cand = self.names
        return {
            "file": str(self.path),
            "task": self.task,
            "examples": self.examples,
            ref: dict(self.reference),
            cand: dict(self.candidate),
            "delta": {name: self.delta(name) for name, _ in self.reference},
            "agreement": self.agreement,
        }


def compare_results(
    examples: Sequence[LabelledText],
    reference: Sequence[TokenClsResult | SeqClsResult],
    candidate: Sequence[TokenClsResult | SeqClsResult],
    path: Path,
    task: str,
    names: tuple[str, str] = ("fp32", "int8"),
) -> ScoreComparison:
    """Score two models' results (in example order) on the same labelled examples."""
    same = [
        result_spans(a) == result_spans(b) and getattr(a, "label", 0) == getattr(b, "label", 0)
        for a, b in zip(reference, candidate)
    ]
    return ScoreComparison(
        path,
        task,
        len(examples),
        score_results(examples, reference).summary(),
        score_results(examples, candidate).summary(),
        sum(same) / len(same) if same else 1.0,
        names,
    )
