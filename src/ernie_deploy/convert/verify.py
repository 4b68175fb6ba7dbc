"""Parity checks: a probe batch, the source's outputs against ONNX Runtime's, and the report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ernie_deploy.errors import ConfigError, VerificationError
from ernie_deploy.runtime.session import OnnxModel, RuntimeConfig, load_model
from ernie_deploy.tasks.batching import Encoded, pad
from ernie_deploy.tasks.tokenization import Tokenizer

DEFAULT_TOLERANCE = 1e-4


def check_tolerance(value: float) -> float:
    """--tolerance: a finite number, 0 or more (nan would fail every comparison, inf none)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < np.inf:
        raise ConfigError(
            f"tolerance must be a finite number, 0 or more, not {value}: pass e.g. 1e-4."
        )
    return float(value)


# Mixed lengths, scripts, digits and punctuation: padding, [UNK] and long rows all show up.
PROBE_TEXTS = (
    "北京的涮肉，重庆的火锅，成都的小吃都是极具特色的美食。",
    "乔丹、科比、詹姆斯和姚明都是篮球界的标志性人物。",
    "未来自动驾驶真的会让酒驾和疲劳驾驶成历史吗？",
    "好",
    "The quick brown fox jumps over the lazy dog near Beijing in 2024.",
    "黄磊接受华少快问快答，不光智商逆天，情商也不逊黄渤 — 3.5 万人在线观看 (live)!",
    "张三在上海市浦东新区工作，他说：“今天的天气 really nice，温度 25℃。” 李四同意。" * 2,
    "ok",
)
PROBE_QUERY = "自动驾驶会让酒驾成为历史吗？"


def probe_features(
    tokenizer: Tokenizer,
    texts: Sequence[str] = PROBE_TEXTS,
    *,
    pairs: bool = False,
    max_seq_length: int = 128,
) -> dict[str, np.ndarray]:
    """One padded batch of every feature a graph may take (pairs: PROBE_QUERY with each text)."""
    seqs = []
    query = tokenizer.tokenize([PROBE_QUERY])[0].ids
    room = max_seq_length - tokenizer.num_special_tokens(pairs) - (len(query) if pairs else 0)
    for tokens in tokenizer.tokenize(list(texts)):
        ids = tokens.ids[: max(room, 1)]
        if pairs:
            input_ids, type_ids, _ = tokenizer.build_inputs(query, ids)
        else:
            input_ids, type_ids, _ = tokenizer.build_inputs(ids)
        seqs.append(Encoded(input_ids, type_ids))
    return pad(seqs, tokenizer.pad_id)


@dataclass(frozen=True)
class OutputDiff:
    """How one output of the candidate differs from the reference's."""

    name: str
    max_abs_diff: float
    argmax_agreement: float | None  # None where an argmax means nothing (embeddings)
    finite: bool


@dataclass(frozen=True)
class ParityReport:
    """The comparison of a candidate (ORT, optimised, int8, fp16) with a reference."""

    candidate: str
    reference: str
    outputs: tuple[OutputDiff, ...]
    tolerance: float | None  # None: report only, nothing to pass or fail
    rows: int

    @property
    def max_abs_diff(self) -> float:
        return max(o.max_abs_diff for o in self.outputs)

    @property
    def argmax_agreement(self) -> float | None:
        values = [o.argmax_agreement for o in self.outputs if o.argmax_agreement is not None]
        return min(values) if values else None

    @property
    def passed(self) -> bool:
        finite = all(o.finite for o in self.outputs)
        return finite and (self.tolerance is None or self.max_abs_diff <= self.tolerance)

    def lines(self) -> list[str]:
        """Human-readable lines, one per output, then the verdict."""
        out = []
        for o in self.outputs:
            line = f"  {o.name}: max abs diff {o.max_abs_diff:.3g}"
            if o.argmax_agreement is not None:
                line += f", argmax agreement {o.argmax_agreement:.2%}"
            if not o.finite:
                line += ", NaN/Inf in the output"
            out.append(line)
        verdict = "passed" if self.passed else "FAILED"
        bound = f" (tolerance {self.tolerance:g})" if self.tolerance is not None else ""
        out.insert(
            0,
            f"parity {self.candidate} vs {self.reference} on {self.rows} probe rows: "
            f"{verdict}{bound}",
        )
        return out

    def require(self, hint: str) -> None:
        """Raise VerificationError when the check failed; `hint` names what to try."""
        if self.passed:
            return
        if not all(o.finite for o in self.outputs):
            what = "NaN/Inf in its outputs"
        else:
            what = f"max abs diff {self.max_abs_diff:.3g} > tolerance {self.tolerance:g}"
        raise VerificationError(
            f"{self.candidate} does not match {self.reference} ({what}): {hint}"
        )


def compare(
    reference: Mapping[str, np.ndarray] | Sequence[np.ndarray],
    candidate: Mapping[str, np.ndarray] | Sequence[np.ndarray],
    attention_mask: np.ndarray,
    *,
    names: Sequence[str] | None = None,
    classify: bool = True,
    tolerance: float | None = DEFAULT_TOLERANCE,
    labels: tuple[str, str] = ("ORT", "source"),
) -> ParityReport:
    """Compare outputs pairwise (by name for mappings, by position for sequences).

    `classify`: report argmax agreement over the last axis (real-token positions only for
    per-token outputs). Outputs whose shapes differ are a failure, not a broadcast.
    """
    if isinstance(reference, Mapping) and isinstance(candidate, Mapping):
        keys = list(names or reference)
        pairs = [(k, reference[k], candidate[k]) for k in keys]
    else:
        ref_list = list(reference.values() if isinstance(reference, Mapping) else reference)
        cand_list = list(candidate.values() if isinstance(candidate, Mapping) else candidate)
        if len(ref_list) != len(cand_list):
            raise VerificationError(
                f"{labels[0]} has {len(cand_list)} outputs but {labels[1]} has {len(ref_list)}: "
                "export the same outputs from both."
            )
        keys = list(names or [f"output {i}" for i in range(len(ref_list))])
        pairs = list(zip(keys, ref_list, cand_list))
    diffs = [_diff(name, r, c, attention_mask, classify, labels) for name, r, c in pairs]
    rows = int(attention_mask.shape[0])
    return ParityReport(labels[0], labels[1], tuple(diffs), tolerance, rows)


def _diff(
    name: str,
    ref: np.ndarray,
    cand: np.ndarray,
    mask: np.ndarray,
    classify: bool,
    labels: tuple[str, str],
) -> OutputDiff:
    ref = np.asarray(ref, dtype=np.float64)
    cand = np.asarray(cand, dtype=np.float64)
    if ref.shape != cand.shape:
        raise VerificationError(
            f"Output {name!r} has shape {cand.shape} in {labels[0]} but {ref.shape} in "
            f"{labels[1]}: the export changed the model's outputs."
        )
    finite = bool(np.isfinite(cand).all())
    real = _real_positions(ref, mask)
    delta = np.abs(ref - cand)[real]
    max_diff = float(np.nanmax(delta)) if delta.size and finite else float("inf")
    agreement = None
    if classify and ref.ndim >= 2 and ref.shape[-1] > 1:
        agreement = float(np.mean(ref.argmax(-1)[real] == cand.argmax(-1)[real]))
    return OutputDiff(name, max_diff, agreement, finite)


def _real_positions(x: np.ndarray, mask: np.ndarray) -> np.ndarray | slice:
    """Index of the rows (2-D) or real tokens (3-D [B, T, ...]) that padding does not make up."""
    if x.ndim >= 3 and x.shape[:2] == mask.shape:
        return np.asarray(mask, dtype=bool)
    return slice(None)


def batch_drift(
    onnx_path: str | Path, features: Mapping[str, np.ndarray], config: RuntimeConfig | None = None
) -> float:
    """The largest change of any output when each row of the padded batch `features` runs alone,
    cut to its own length, instead of with the others (real positions only).

    Float rounding aside this is 0 for fp32, fp16 and weight-only graphs. Dynamic int8 graphs
    scale each MatMul's activations over the whole batch, padding included, so a text's outputs
    (and sometimes its label) depend on which texts share its batch: what a server's dynamic
    batching or a caller's batch_size then decides.
    """
    model, batched = run_onnx(onnx_path, features, config)
    return row_drift(model, features, batched)


def row_drift(
    model: OnnxModel, features: Mapping[str, np.ndarray], batched: Mapping[str, np.ndarray]
) -> float:
    """batch_drift for a loaded model whose outputs on the whole batch are `batched`."""
    mask = np.asarray(features["attention_mask"])
    worst = 0.0
    for row, length in enumerate(mask.sum(axis=1).astype(int)):
        alone = model.run({k: np.asarray(v)[row : row + 1, :length] for k, v in features.items()})
        for name, value in alone.items():
            if batched[name].ndim == 0 or batched[name].shape[0] != mask.shape[0]:
                continue  # not one row per text: nothing to line up
            together = batched[name][row : row + 1]
            if together.ndim >= 3 and together.shape[1] == mask.shape[1]:  # per token
                together = together[:, :length]
            delta = np.abs(np.asarray(value, np.float64) - together)
            worst = max(worst, float(delta.max()) if delta.size else 0.0)
    return worst


def run_onnx(
    onnx_path: str | Path, features: Mapping[str, np.ndarray], config: RuntimeConfig | None = None
) -> tuple[OnnxModel, dict[str, np.ndarray]]:
    """Load a graph on the CPU (full precision, all optimisations) and run it on `features`."""
    model = load_model(onnx_path, config or RuntimeConfig(device="cpu"))
    return model, model.run(features)
