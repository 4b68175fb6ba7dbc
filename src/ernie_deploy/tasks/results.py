"""Result types of the four task heads: frozen dataclasses with `to_dict()` for JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Entity:
    """A named entity: `text == source[start:end]` (end exclusive, character offsets)."""

    text: str
    label: str
    start: int
    end: int
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "label": self.label,
            "start": self.start,
            "end": self.end,
            "score": self.score,
        }


@dataclass(frozen=True)
class TokenClsResult:
    """The entities found in one text."""

    text: str
    entities: tuple[Entity, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "entities": [e.to_dict() for e in self.entities]}


@dataclass(frozen=True)
class LabelScore:
    label: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": self.score}


@dataclass(frozen=True)
class SeqClsResult:
    """A text's class: `label`/`score` is the best one, `top_k` the best k in order.

    For multi-label models `labels` holds every label whose sigmoid score passed the
    threshold; for single-label models it holds just `label`.
    """

    text: str
    label: str
    score: float
    top_k: tuple[LabelScore, ...]
    labels: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "label": self.label,
            "score": self.score,
            "top_k": [x.to_dict() for x in self.top_k],
            "labels": list(self.labels),
        }


@dataclass(frozen=True, eq=False)
class EmbeddingResult:
    """One text's embedding vector (float32)."""

    text: str
    vector: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "embedding": self.vector.astype(float).tolist()}


@dataclass(frozen=True)
class RerankHit:
    """One document's relevance: `score` = sigmoid(`raw_score`); `index` is its input position."""

    index: int
    document: str
    score: float
    raw_score: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "document": self.document,
            "score": self.score,
            "raw_score": self.raw_score,
        }


@dataclass(frozen=True)
class RerankResult:
    """Documents sorted by descending score (at most `top_n` of them)."""

    query: str
    hits: tuple[RerankHit, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "results": [h.to_dict() for h in self.hits]}
