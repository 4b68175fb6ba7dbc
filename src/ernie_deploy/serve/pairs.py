"""Classification of text pairs (TEI `/predict` pairs, SimpleServing `text_pair`) and labelled scores.

A sequence classifier fine-tuned on pairs (afqmc, LCQMC, NLI) reads `[CLS] a [SEP] b [SEP]`
with the pair's token types: the same inputs the reranker builds, run through the classifier's
own output and the request's batcher.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ernie_deploy.errors import InputTooLongError
from ernie_deploy.tasks.batching import Encoded
from ernie_deploy.tasks.engine import sigmoid, softmax
from ernie_deploy.tasks.rerank import truncate_pair


def pair_logits(predictor: Any, pairs: list[tuple[str, str]], truncate: bool) -> np.ndarray:
    """Raw logits [n_pairs, n_labels] of a seq_cls predictor for (text, text_pair) pairs."""
    engine = predictor.engine
    tok = engine.tokenizer
    limit = engine.max_seq_length - tok.num_special_tokens(True)
    firsts = tok.tokenize([a for a, _ in pairs])
    seconds = tok.tokenize([b for _, b in pairs])
    seqs = []
    for i, (a, b) in enumerate(zip(firsts, seconds)):
        x, y = a.ids, b.ids
        if len(x) + len(y) > limit:
            if not truncate:
                raise InputTooLongError(
                    f"Pair {i} has {len(x) + len(y)} tokens but the model takes {limit}: shorten "
                    'it or send "truncate": true.'
                )
            x, y = truncate_pair(x, y, limit)
        ids, types, _ = tok.build_inputs(x, y)
        seqs.append(Encoded(ids, types))
    out = np.empty((len(seqs), len(predictor.labels)), np.float32)
    for batch, logits in engine.run(seqs, predictor.output):
        out[batch.indices] = logits
    return out


def scores(predictor: Any, logits: np.ndarray, raw: bool = False) -> np.ndarray:
    """Probabilities (softmax, or sigmoids for multi-label models), or the logits when `raw`."""
    if raw:
        return logits
    return sigmoid(logits) if predictor.multi_label else softmax(logits)


def ranked_labels(labels: list[str], row: np.ndarray) -> list[dict[str, Any]]:
    """Every label with its score, best first (TEI's and Infinity's classification answer)."""
    order = np.argsort(-row, kind="stable")
    return [{"label": labels[i], "score": float(row[i])} for i in order]
