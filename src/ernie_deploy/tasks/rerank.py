"""Rerank: cross-encoder scores for (query, document) pairs, sorted, with the original indices."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ernie_deploy.errors import ConfigError, InputTooLongError
from ernie_deploy.runtime.checks import rerank_width_problem
from ernie_deploy.runtime.session import OnnxModel
from ernie_deploy.tasks.batching import Encoded, check_texts
from ernie_deploy.tasks.engine import Engine, pick_output, sigmoid
from ernie_deploy.tasks.results import RerankHit, RerankResult


def truncate_pair(a: np.ndarray, b: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Longest-first: drop tokens from the end of the longer sequence until both fit `limit`."""
    la, lb = len(a), len(b)
    while la + lb > limit:
        if la > lb:
            la -= 1
        else:
            lb -= 1
    return a[:la], b[:lb]


def _check_width(size: object) -> None:
    if problem := rerank_width_problem(size):
        raise problem


class Reranker:
    """Cross-encoder reranking (one-logit bge-reranker style, or two-class relevant/irrelevant).

    Scores: `raw_score` is the logit (one-logit models) or the log-odds of the positive
    class (two-class models: logit[1] - logit[0]); `score` is its sigmoid, which for
    two-class models equals the softmax probability of the positive class.

    Args:
        engine: tokenizer + model + batching.
        truncate: cut pairs longer than max_seq_length (longest first) instead of raising.
    """

    task = "rerank"

    def __init__(self, engine: Engine, truncate: bool = False) -> None:
        self.engine = engine
        self.output = pick_output(engine.model, 2, ("logits",))
        _check_width(engine.model.output_shapes[self.output][-1])
        self.truncate = truncate

    @property
    def model(self) -> OnnxModel:
        return self.engine.model

    def raw_scores(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """Raw relevance (logit or log-odds) per document, in input order."""
        query = check_texts([query], what="query")[0]
        docs = check_texts(documents, what="document")
        tok = self.engine.tokenizer
        limit = self.engine.max_seq_length - tok.num_special_tokens(True)
        q = tok.tokenize([query])[0].ids
        seqs = []
        for i, d in enumerate(tok.tokenize(docs)):
            a, b = q, d.ids
            if len(a) + len(b) > limit:
                if not self.truncate:
                    raise InputTooLongError(
                        f"Query + document {i} have {len(a) + len(b)} tokens but the model takes "
                        f"{limit}: shorten them or ask for truncation (truncate=True / --truncate)."
                    )
                if self.engine.on_truncate is not None:
                    self.engine.on_truncate(docs[i], len(a) + len(b), limit)
                a, b = truncate_pair(a, b, limit)
            ids, types, _ = tok.build_inputs(a, b)
            seqs.append(Encoded(ids, types))
        out = np.empty(len(seqs), np.float32)
        for batch, logits in self.engine.run(seqs, self.output):
            _check_width(logits.shape[-1])
            if logits.shape[-1] == 1:
                out[batch.indices] = logits[:, 0]
            else:
                out[batch.indices] = logits[:, 1] - logits[:, 0]
        return out

    def rerank(
        self, query: str, documents: Sequence[str], top_n: int | None = None
    ) -> RerankResult:
        """Documents sorted by descending relevance, at most `top_n` of them."""
        if top_n is not None and (
            isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1
        ):
            raise ConfigError(f"top_n must be a positive integer or None (all), got {top_n!r}.")
        docs = [documents] if isinstance(documents, str) else list(documents)
        raw = self.raw_scores(query, docs)
        scores = sigmoid(raw)
        order = np.argsort(-raw, kind="stable")
        if top_n is not None:
            order = order[:top_n]
        hits = tuple(RerankHit(int(i), docs[i], float(scores[i]), float(raw[i])) for i in order)
        return RerankResult(query, hits)

    __call__ = rerank
