"""What a quantisation changed: size, agreement with fp32 on a probe batch, and the metric delta.

`quantize.quantize_model` returns a `QuantizeReport`; the helpers here run the fp32 and the
int8 model side by side (ORT's CPU provider): raw outputs on the probe batch, sentence vectors
of embedding models, and a labelled file's scores through `ernie_deploy.load`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ernie_deploy.convert.row_scales import RowScales
from ernie_deploy.convert.verify import (
    DEFAULT_TOLERANCE,
    PROBE_TEXTS,
    ParityReport,
    compare,
    probe_features,
    row_drift,
    run_onnx,
)
from ernie_deploy.errors import ConfigError
from ernie_deploy.runtime.model_dir import ModelFiles
from ernie_deploy.tasks.labelled import LabelledText, check_labels, read_labelled
from ernie_deploy.tasks.metrics import ScoreComparison, compare_results
from ernie_deploy.tasks.token_cls import TokenClassifier
from ernie_deploy.tasks.tokenization import Tokenizer

if TYPE_CHECKING:
    from ernie_deploy.convert.quantize import Preset

# Longest probe row (tokens): capped by the model's max_seq_length.
PROBE_LENGTH = 128


@dataclass(frozen=True)
class QuantizeReport:
    """What `quantize_model` wrote and how closely the int8 model follows the fp32 one.

    Args:
        source: the fp32 .onnx file.
        out: the new model directory (int8 model.onnx + the source's tokenizer / config files).
        task: the model's task, when known.
        preset: the preset used; `per_channel` / `reduce_range` as actually applied.
        op_types: the op types asked for.
        quantized: op type -> how many nodes of it were quantised.
        size_before / size_after: bytes of the graph files (with external data).
        parity: int8 vs fp32 outputs on the probe batch (report only, no tolerance).
        cosine: embedding models: mean cosine similarity of the int8 and fp32 sentence vectors
            of the probe texts (what the embedding predictor returns).
        evaluation: the labelled file's metrics on fp32 and int8, when one was given.
        batch_drift: the int8 model's largest output change between running each probe row
            alone and in the probe batch (verify.batch_drift); None when not measured.
        row_scales: what `row_scales=True` rewrote (convert.row_scales); None: activations
            have one scale per batch, as quantize_dynamic writes them.
    """

    source: Path
    out: Path
    task: str | None
    preset: Preset
    per_channel: bool
    reduce_range: bool
    op_types: tuple[str, ...]
    quantized: tuple[tuple[str, int], ...]
    size_before: int
    size_after: int
    parity: ParityReport
    cosine: float | None = None
    evaluation: ScoreComparison | None = None
    batch_drift: float | None = None
    row_scales: RowScales | None = None

    @property
    def ratio(self) -> float:
        """size_after / size_before."""
        return self.size_after / self.size_before if self.size_before else 1.0

    def lines(self) -> list[str]:
        """What the CLI prints."""
        p = self.preset
        scheme = (
            f"{p.weights} weights, {'per-channel' if self.per_channel else 'per-tensor'}, "
            f"{'7-bit reduced range' if self.reduce_range else 'full range'}"
        )
        done = ", ".join(f"{n} {op}" for op, n in self.quantized) or "nothing"
        if self.row_scales is None:
            scheme += "; activations: one scale per batch"
        else:
            left = self.row_scales.left
            scheme += "; activations: one scale per row" + (
                f" ({left} quantiser(s) of fused ops left per batch)" if left else ""
            )
        out = [
            f"quantised {self.source} -> {self.out / 'model.onnx'}",
            f"preset {p.name} ({p.target}): {scheme}; quantised {done}",
            f"size {self.size_before / 1e6:.2f} MB -> {self.size_after / 1e6:.2f} MB "
            f"({self.ratio:.0%} of fp32, {1 / max(self.ratio, 1e-9):.1f}x smaller)",
            f"agreement with fp32 on {self.parity.rows} probe rows (report only):",
            *self.parity.lines()[1:],
        ]
        if self.cosine is not None:
            out.append(f"  sentence vectors: mean cosine similarity {self.cosine:.6f}")
        if self.batch_drift is not None:
            out.append(drift_line(self.batch_drift))
        if self.evaluation is not None:
            out += self.evaluation.lines()
        return out + [f"load it with: ernie-deploy predict {self.out} TEXT"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "out": str(self.out),
            "task": self.task,
            "preset": self.preset.name,
            "weights": self.preset.weights,
            "per_channel": self.per_channel,
            "reduce_range": self.reduce_range,
            "op_types": list(self.op_types),
            "quantized": dict(self.quantized),
            "size_before": self.size_before,
            "size_after": self.size_after,
            "ratio": self.ratio,
            "max_abs_diff": self.parity.max_abs_diff,
            "argmax_agreement": self.parity.argmax_agreement,
            "cosine": self.cosine,
            "evaluation": self.evaluation.to_dict() if self.evaluation else None,
            "batch_drift": self.batch_drift,
            "activation_scales": "per-batch" if self.row_scales is None else "per-row",
            "row_scales_left": None if self.row_scales is None else self.row_scales.left,
        }


def drift_line(drift: float) -> str:
    """One line on verify.batch_drift's number: what it means for the caller when it is not 0."""
    line = f"  batch drift: outputs move by up to {drift:.3g} between a row alone and in the batch"
    if drift <= DEFAULT_TOLERANCE:
        return line
    return (
        line + " (dynamic int8 scales activations per batch: a text's scores, and near a tie "
        "its label, depend on which texts share its batch; --row-scales gives each row its own)"
    )


def read_eval_file(path: str | Path, task: str | None, files: ModelFiles) -> list[LabelledText]:
    """The eval file's examples for `task`; refused when the model's task is unknown."""
    if task is None:
        raise ConfigError(
            f"Cannot tell the task of {files.onnx_path}, so the eval file cannot be scored: "
            "pass task= (--task) token_cls or seq_cls."
        )
    return read_labelled(path, task)


def probe_batch(files: ModelFiles, task: str | None) -> dict[str, np.ndarray]:
    """The probe texts as one padded batch for this model (pairs for rerank)."""
    length = min(files.config.max_seq_length or PROBE_LENGTH, PROBE_LENGTH)
    return probe_features(
        Tokenizer.from_dir(files.tokenizer_dir), pairs=task == "rerank", max_seq_length=length
    )


def probe_parity(files: ModelFiles, target: Path, task: str | None) -> tuple[ParityReport, float]:
    """fp32 vs int8 outputs on the probe batch, both on ORT's CPU provider, and the int8
    model's batch drift on it."""
    features = probe_batch(files, task)
    _, reference = run_onnx(files.onnx_path, features)
    int8, candidate = run_onnx(target, features)
    return compare(
        reference,
        candidate,
        features["attention_mask"],
        classify=task != "embedding",
        tolerance=None,
        labels=("int8", "fp32"),
    ), row_drift(int8, features, candidate)


def _predictor(files: ModelFiles, stage: Path, int8: bool, task: str, **options: Any) -> Any:
    from ernie_deploy.api import load

    if int8:
        return load(stage, task=task, device="cpu", **options)
    return load(
        files.onnx_path, task=task, device="cpu", tokenizer_dir=files.tokenizer_dir, **options
    )


def probe_cosine(files: ModelFiles, stage: Path) -> float:
    """Mean cosine similarity of the fp32 and int8 sentence vectors of the probe texts."""
    fp32, int8 = (
        _predictor(files, stage, q, "embedding", normalize=True, truncate=True).vectors(
            list(PROBE_TEXTS)
        )
        for q in (False, True)
    )
    return float(np.mean(np.sum(fp32 * int8, axis=1)))


def evaluate_labelled(
    files: ModelFiles, stage: Path, task: str, examples: list[LabelledText], path: Path
) -> ScoreComparison:
    """Score the labelled examples with both models, as users would get the predictions."""
    runs = []
    for int8 in (False, True):
        predictor = _predictor(files, stage, int8, task, truncate=True)
        if isinstance(predictor, TokenClassifier):
            check_labels(examples, {t for t in predictor.tagset.types if t}, path)
        else:
            check_labels(examples, set(predictor.labels), path)
        runs.append(predictor.predict([e.text for e in examples]))
    return compare_results(examples, runs[0], runs[1], path, task)
