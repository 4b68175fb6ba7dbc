"""Our side of every comparison: the end-to-end predictor, and the raw-session limit on its batches.

`ours(...)` is what a user writes: `ernie_deploy.load(model_dir, ...)` then `predict(texts)`
(tokenize, length-sorted batches, session.run, decode into Entity / label results).
`raw_batches(...)` tokenizes and batches the same texts the same way beforehand, and returns
the exact feeds the predictor's session gets, so `session.run` over them alone is the limit
any Python wrapper of this ONNX Runtime session could reach.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


def load(
    model_dir: Path, task: str, max_seq_length: int | None, batch_size: int = 32, **kw: Any
) -> Any:
    """`ernie_deploy.load` as a user calls it; seq_cls / embedding truncate over-long texts;
    max_seq_length None: the model directory's own (else the loader's default)."""
    import ernie_deploy

    options: dict[str, Any] = {"max_seq_length": max_seq_length, "batch_size": batch_size}
    if task in ("seq_cls", "embedding"):
        options["truncate"] = True
    return ernie_deploy.load(model_dir, task=task, **options, **kw)


@dataclass
class RawBatches:
    """Feeds by graph input name for each batch, and the output the task reads."""

    session: Any
    feeds: list[dict[str, np.ndarray]]
    output: str
    real_tokens: int
    padded_tokens: int

    def run(self, texts: object = None) -> list[np.ndarray]:
        return [self.session.run([self.output], f)[0] for f in self.feeds]


def _sequences(predictor: Any, texts: list[str]) -> list[Any]:
    """The model sequences the predictor would run for these texts (windows for token_cls)."""
    from ernie_deploy.tasks.batching import Encoded
    from ernie_deploy.tasks.token_cls import plan_windows

    engine = predictor.engine
    if predictor.task != "token_cls":
        truncate = bool(getattr(predictor, "truncate", True))
        return engine.encode(texts, truncate=truncate)
    tok = engine.tokenizer
    seqs = []
    for t in tok.tokenize(texts):
        for w in plan_windows(len(t.ids), predictor.window_size, predictor.window_overlap):
            input_ids, type_ids, _ = tok.build_inputs(t.ids[w.start : w.end])
            seqs.append(Encoded(input_ids, type_ids))
    return seqs


def raw_batches(predictor: Any, texts: list[str]) -> RawBatches:
    """Our tokenization and length-sorted batching of `texts`, done now (untimed)."""
    from ernie_deploy.tasks.batching import iter_batches

    engine = predictor.engine
    model = engine.model
    seqs = _sequences(predictor, texts)
    feeds = []
    padded = 0
    for batch in iter_batches(seqs, engine.batch_size, engine.tokenizer.pad_id):
        feeds.append(
            {
                spec.name: np.ascontiguousarray(batch.features[spec.feature], dtype=spec.dtype)
                for spec in model.inputs
            }
        )
        padded += batch.features["input_ids"].size
    real = sum(len(s.input_ids) for s in seqs)
    return RawBatches(model.session, feeds, predictor.output, real, padded)


def feature_batches(predictor: Any, texts: list[str]) -> list[dict[str, np.ndarray]]:
    """The same batches keyed by feature name (input_ids, token_type_ids, attention_mask, ...)."""
    from ernie_deploy.tasks.batching import iter_batches

    engine = predictor.engine
    seqs = _sequences(predictor, texts)
    return [b.features for b in iter_batches(seqs, engine.batch_size, engine.tokenizer.pad_id)]


def count_tokens(predictor: Any, texts: list[str]) -> int:
    """Real tokens our predictor runs for `texts` (special tokens included, padding not)."""
    return sum(len(s.input_ids) for s in _sequences(predictor, texts))


def threads() -> int:
    """The intra-op thread count our predictor picks on this machine (usable CPUs)."""
    from ernie_deploy.runtime.device import usable_cpus

    return usable_cpus()


Predict = Callable[[list[str]], object]
