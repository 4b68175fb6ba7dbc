"""What `tune` found: the bound, each variant's speed and agreement, the choice, serving advice."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ernie_deploy.convert.tune_measure import (
    HEADLINES,
    Agreement,
    ServingPoint,
    Spread,
)
from ernie_deploy.convert.verify import DEFAULT_TOLERANCE
from ernie_deploy.errors import ConfigError
from ernie_deploy.tasks.metrics import ScoreComparison

DEFAULT_MIN_AGREEMENT = 0.999
DEFAULT_MAX_METRIC_DROP = 0.5  # points (0.5 = half a percentage point of F1 / accuracy)
REPORT_NAME = "tune_report.json"


@dataclass(frozen=True)
class TuneBound:
    """How far a variant may stray from fp32 and still be deployed.

    Args:
        min_agreement: the least headline agreement with fp32 (0..1; tune_measure.HEADLINES
            names it per task). None: DEFAULT_MIN_AGREEMENT without an eval file; with one,
            the metric alone decides.
        max_metric_drop: with an eval file, the most the metric (F1 / accuracy) may fall, in
            points (0.5 = 0.5 percentage points).
        max_abs_diff: optionally, the largest absolute difference of raw outputs allowed.
    """

    min_agreement: float | None = None
    max_metric_drop: float = DEFAULT_MAX_METRIC_DROP
    max_abs_diff: float | None = None

    def __post_init__(self) -> None:
        if self.min_agreement is not None and not 0.0 <= self.min_agreement <= 1.0:
            raise ConfigError(
                f"min_agreement must be between 0 and 1, not {self.min_agreement}: "
                "pass e.g. 0.999 for 99.9%."
            )
        if self.max_metric_drop < 0:
            raise ConfigError(
                f"max_metric_drop must be 0 or more points, not {self.max_metric_drop}: "
                "pass e.g. 0.5."
            )
        if self.max_abs_diff is not None and self.max_abs_diff < 0:
            raise ConfigError(f"max_abs_diff must be 0 or more, not {self.max_abs_diff}.")

    def agreement_floor(self, with_eval: bool) -> float | None:
        if self.min_agreement is not None:
            return self.min_agreement
        return None if with_eval else DEFAULT_MIN_AGREEMENT

    def misses(
        self, agreement: Agreement, evaluation: ScoreComparison | None, metric: str | None
    ) -> str | None:
        """Why a variant is outside the bound (None: within it)."""
        floor = self.agreement_floor(evaluation is not None)
        if floor is not None and agreement.agreement < floor:
            return f"agreement {agreement.agreement:.2%} < {floor:.2%}"
        if self.max_abs_diff is not None and agreement.max_abs_diff > self.max_abs_diff:
            return f"max abs diff {agreement.max_abs_diff:.3g} > {self.max_abs_diff:g}"
        if evaluation is not None and metric is not None:
            drop = -evaluation.delta(metric) * 100
            if drop > self.max_metric_drop + 1e-9:
                return f"{metric} fell {drop:.2f} points > {self.max_metric_drop:g}"
        return None

    def describe(self, with_eval: bool, metric: str | None) -> str:
        parts = []
        floor = self.agreement_floor(with_eval)
        if floor is not None:
            parts.append(f"agreement >= {floor:.2%}")
        if with_eval and metric is not None:
            parts.append(f"{metric} drop <= {self.max_metric_drop:g} points")
        if self.max_abs_diff is not None:
            parts.append(f"max abs diff <= {self.max_abs_diff:g}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_agreement": self.min_agreement,
            "max_metric_drop": self.max_metric_drop,
            "max_abs_diff": self.max_abs_diff,
        }


@dataclass(frozen=True)
class VariantResult:
    """One candidate: how it was made, whether it ran, its speed, agreement and metric.

    `error` is set when the variant could not be built or run (then the measurements are
    None); `miss` says why a measured variant is outside the bound.
    """

    name: str
    how: str
    device: str
    fp16: bool = False
    error: str | None = None
    size_mb: float | None = None
    texts_per_s: Spread | None = None
    speedup: Spread | None = None
    agreement: Agreement | None = None
    evaluation: ScoreComparison | None = None
    miss: str | None = None
    batch_drift: float | None = None  # verify.batch_drift on the probe batch; None: not measured

    @property
    def drifts(self) -> bool:
        """Its outputs for a text change with the texts batched beside it (dynamic int8)."""
        return self.batch_drift is not None and self.batch_drift > DEFAULT_TOLERANCE

    @property
    def eligible(self) -> bool:
        """Measured and within the bound."""
        return self.error is None and self.miss is None and self.speedup is not None

    @property
    def steady(self) -> bool:
        """Faster than fp32 in every timed run (fp32 itself counts as steady). The choice goes
        by the median (faster in most runs); this only flags a noisy comparison."""
        return self.name == "fp32" or (self.speedup is not None and self.speedup.low > 1.0)

    def to_dict(self, metric: str | None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "how": self.how,
            "device": self.device,
            "fp16": self.fp16,
            "built": self.error is None,
            "error": self.error,
            "size_mb": self.size_mb,
            "within_bound": self.eligible,
            "faster_in_every_run": self.steady,
            "miss": self.miss,
            "batch_drift": self.batch_drift,
        }
        if self.texts_per_s is not None and self.speedup is not None:
            data["texts_per_s"] = self.texts_per_s.median
            data["texts_per_s_range"] = [self.texts_per_s.low, self.texts_per_s.high]
            data["speedup"] = self.speedup.median
            data["speedup_range"] = [self.speedup.low, self.speedup.high]
        if self.agreement is not None:
            data["agreement"] = self.agreement.to_dict()
        if self.evaluation is not None:
            data["evaluation"] = self.evaluation.to_dict()
            if metric is not None:
                data["metric_delta_points"] = self.evaluation.delta(metric) * 100
        return data


@dataclass(frozen=True)
class ServingAdvice:
    """The winner measured at several thread counts and batch sizes."""

    points: tuple[ServingPoint, ...]

    @property
    def best(self) -> ServingPoint:
        return max(self.points, key=lambda p: p.texts_per_s.median)

    @property
    def batch1_wins(self) -> bool:
        return self.best.batch_size == 1

    def lines(self) -> list[str]:
        best = self.best
        ones = [p for p in self.points if p.batch_size == 1]
        batched = [p for p in self.points if p.batch_size > 1]
        out = [
            f"serve with {best.threads} thread(s), batch size {best.batch_size}: "
            f"{best.texts_per_s.fmt(1)} texts/s"
        ]
        if ones and batched:
            one = max(ones, key=lambda p: p.texts_per_s.median)
            many = max(batched, key=lambda p: p.texts_per_s.median)
            verdict = "batch 1 wins on this machine" if self.batch1_wins else "batching wins"
            out.append(
                f"{verdict}: batch 1 {one.texts_per_s.median:,.1f} texts/s ({one.threads} "
                f"thread(s)) vs batch {many.batch_size} {many.texts_per_s.median:,.1f} texts/s "
                f"({many.threads} thread(s))"
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {
            "threads": best.threads,
            "batch_size": best.batch_size,
            "batch1_wins": self.batch1_wins,
            "grid": [p.to_dict() for p in self.points],
        }


@dataclass(frozen=True)
class TuneReport:
    """What `tune` measured and chose; written as OUT/tune_report.json.

    Args:
        source: the model tuned.
        out: the directory written (the winner's model directory).
        task: the model's task.
        winner: the chosen variant's name.
        explanation: one line on why.
        variants: every candidate, fp32 first.
        bound: the bound applied.
        metric: the eval file's headline metric ("f1" / "accuracy"), when one was given.
        texts: how many texts were measured; corpus: where they came from.
        batch_size / max_seq_length / threads: the settings measured with.
        repeats: timed runs per variant.
        preset: the int8 preset chosen from the CPU flags.
        serving: the winner at other thread counts and batch sizes (None: not measured).
        seconds: how long tuning took.
    """

    source: Path
    out: Path
    task: str
    winner: str
    explanation: str
    variants: tuple[VariantResult, ...]
    bound: TuneBound
    metric: str | None
    texts: int
    corpus: str
    batch_size: int
    max_seq_length: int
    threads: int
    repeats: int
    preset: str
    serving: ServingAdvice | None
    seconds: float

    def variant(self, name: str) -> VariantResult:
        return next(v for v in self.variants if v.name == name)

    def header(self) -> list[str]:
        head = ["variant", "texts/s", "× fp32", f"agreement ({HEADLINES[self.task]})"]
        head += ["max abs diff", "detail"]
        if self.metric is not None:
            head.append(f"{self.metric} Δ (points)")
        return head + ["MB", "verdict"]

    def rows(self) -> list[list[str]]:
        """The table: one row per variant, in the order they were planned."""
        rows = []
        for v in self.variants:
            if v.error is not None or v.texts_per_s is None or v.speedup is None:
                blank = ["—"] * (len(self.header()) - 2)
                rows.append([v.name, *blank, f"not run: {v.error}"])
                continue
            a = v.agreement
            assert a is not None
            row = [
                v.name,
                v.texts_per_s.fmt(1),
                "—" if v.name == "fp32" else v.speedup.fmt(2, "×"),
                f"{a.agreement:.2%}",
                f"{a.max_abs_diff:.2e}",
                "; ".join(x for x in (_detail(self.task, a), _drift(v)) if x),
            ]
            if self.metric is not None:
                delta = v.evaluation.delta(self.metric) * 100 if v.evaluation else float("nan")
                row.append(f"{delta:+.2f}")
            row.append("—" if v.size_mb is None else f"{v.size_mb:.1f}")
            rows.append([*row, self._verdict(v)])
        return rows

    def _verdict(self, v: VariantResult) -> str:
        if v.name == self.winner:
            return "CHOSEN"
        if not v.eligible:
            return f"out: {v.miss}"
        return "within bound" if v.steady else "within bound; slower than fp32 in some runs"

    def lines(self) -> list[str]:
        """Plain-text summary: settings, the table as text, the choice, serving advice."""
        out = [self.settings_line()]
        out += [" | ".join(self.header())] + [" | ".join(r) for r in self.rows()]
        out.append(self.explanation)
        chosen = self.variant(self.winner)
        if chosen.drifts:
            out.append(
                f"{self.winner}'s answers depend on the batch (batch drift {chosen.batch_drift:.2g} "
                "on the probe batch: dynamic int8 scales activations per batch), so a text can "
                "score differently alone and beside others; if that matters, tune with "
                "--candidates O1,O2,O3,int8-rows."
            )
        if self.serving is not None:
            out += self.serving.lines()
        out.append(f"wrote {self.out} ({REPORT_NAME} inside); {self.deploy_hint()}")
        return out

    def deploy_hint(self) -> str:
        """How to load OUT so that it runs as it was measured."""
        v = self.variant(self.winner)
        flags = f" --device {v.device}" if v.device != "cpu" else ""
        flags += " --fp16" if v.fp16 else ""
        return f"load it with: ernie-deploy predict {self.out}{flags} TEXT"

    def settings_line(self) -> str:
        return (
            f"tuned {self.source} ({self.task}) on {self.texts} texts ({self.corpus}), batch "
            f"{self.batch_size}, max_seq_length {self.max_seq_length}, {self.threads} thread(s), "
            f"{self.repeats} timed runs each, int8 preset {self.preset}; bound: "
            f"{self.bound.describe(self.metric is not None, self.metric)}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "out": str(self.out),
            "task": self.task,
            "winner": self.winner,
            "explanation": self.explanation,
            "bound": self.bound.to_dict(),
            "agreement_measure": HEADLINES[self.task],
            "metric": self.metric,
            "texts": self.texts,
            "corpus": self.corpus,
            "batch_size": self.batch_size,
            "max_seq_length": self.max_seq_length,
            "threads": self.threads,
            "repeats": self.repeats,
            "int8_preset": self.preset,
            "variants": [v.to_dict(self.metric) for v in self.variants],
            "serving": self.serving.to_dict() if self.serving else None,
            "seconds": self.seconds,
        }


def _drift(v: VariantResult) -> str:
    return f"batch drift {v.batch_drift:.2g}" if v.drifts else ""


def _detail(task: str, a: Agreement) -> str:
    if task == "token_cls" and a.argmax is not None:
        return f"token argmax {a.argmax:.2%}"
    if task == "embedding" and a.cosine_min is not None and a.cosine_mean is not None:
        return f"cosine min {a.cosine_min:.4f}, mean {a.cosine_mean:.4f}"
    if task == "rerank" and a.kendall_tau is not None:
        return f"Kendall tau {a.kendall_tau:.3f}"
    return ""


def explain(variants: tuple[VariantResult, ...], winner: str, task: str) -> str:
    """One line: the winner's speed-up and agreement, and what the faster ones lost."""
    chosen = next(v for v in variants if v.name == winner)
    base = chosen.speedup.median if chosen.speedup is not None else 1.0
    faster = [v for v in variants if v.speedup is not None and v.speedup.median > base]
    lost = max(faster, key=lambda v: v.speedup.median if v.speedup else 0, default=None)
    why = ""
    if lost is not None and lost.speedup is not None:
        why = f"; {lost.name} was faster ({lost.speedup.median:.2f}×) but {lost.miss}"
    if winner == "fp32":
        if lost is None:
            return "fp32 kept: no variant was faster on this machine" + why
        return "fp32 kept: no faster variant stayed within the bound" + why
    assert chosen.speedup is not None and chosen.agreement is not None
    noisy = "" if chosen.steady else " (slower than fp32 in some timed runs: a noisy machine)"
    return (
        f"{winner} chosen: {chosen.speedup.fmt(2, '×')} fp32's speed{noisy} with "
        f"{chosen.agreement.agreement:.2%} {HEADLINES[task]} agreement, the fastest within "
        f"the bound{why}"
    )
