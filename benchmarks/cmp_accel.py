"""Acceleration modes on CPU: fp32 vs optimised graphs (O2 / O3) vs dynamic int8, speed and agreement.

For each model, every mode is our predictor on a variant of the same model directory:
fp32 (the converted graph), O2 / O3 (`ernie_deploy.convert.optimize.optimize_model`: ORT
transformer fusions; O3 adds approximate GELU), int8 (`ernie_deploy.convert.quantize
.quantize_model`, default preset) and O2+int8 (int8 of the O2 graph). Speed: end to end,
interleaved, on the mixed-length corpus. Agreement with fp32, on the same batches: largest
absolute difference of the logits over real (non-padding) positions, and argmax agreement
(per token for token_cls, per text for seq_cls).

Models: the ERNIE 3.0 medium-shaped token_cls model (random init: the speed is what matters;
its logits are close together, so argmax agreement is a harsh test there; the seq_cls one
with `--subjects`), and the bundled default models (trained: agreement as users will see it)
when they ship. Writes the section "accel".

    python benchmarks/cmp_accel.py [--quick] [--modes fp32,O2,O3,int8,O2+int8]
    python benchmarks/cmp_accel.py --subjects ernie-token_cls,ernie-seq_cls,bundled
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402
import _data  # noqa: E402
import _harness as h  # noqa: E402
import _models  # noqa: E402
import _ours  # noqa: E402
import _rss  # noqa: E402

SECTION = "accel"
# The medium-shaped seq_cls model (same encoder as token_cls) is left out by default to keep
# `make bench` within its time: add it with --subjects.
DEFAULT_SUBJECTS = ("ernie-token_cls", "bundled")
MAX_LEN = 512
BATCH = 32


@dataclass(frozen=True)
class Subject:
    """One model whose modes are compared."""

    key: str  # table key (used by the RSS probe)
    title: str
    task: str
    path: Path
    max_seq_length: int | None  # None: the directory's own
    trained: bool


@dataclass(frozen=True)
class Setup:
    quick: bool
    shape: _models.Shape
    corpus: _data.Corpus

    def subjects(self) -> list[Subject]:
        out = [
            Subject(
                f"ernie-{task}",
                f"ERNIE, {self.shape.describe()}, {task} (random init)",
                task,
                _models.ernie_onnx(task, self.shape),
                MAX_LEN,
                False,
            )
            for task in ("token_cls", "seq_cls")
        ]
        for task in ("token_cls", "seq_cls"):
            found = _models.bundled(task)
            if found is not None:
                name, path = found
                out.append(Subject(name, f"bundled {name} ({task})", task, path, None, True))
        return out

    def subject(self, key: str) -> Subject:
        return next(s for s in self.subjects() if s.key == key)


def setup(quick: bool) -> Setup:
    corpus = _data.mixed_corpus(32, seed=2, long_share=0.125, max_chars=300)
    return Setup(quick, _models.shape_for(quick), corpus)


def missing_bundled() -> list[str]:
    return [
        f"{name} ({task})"
        for task, name in _models.ERNIE_BUNDLED.items()
        if _models.bundled(task) is None
    ]


def factories(
    s: Setup, key: str, modes: list[str] | None = None
) -> dict[str, Callable[[], h.Contender]]:
    subject = s.subject(key)

    def make(mode: str) -> Callable[[], h.Contender]:
        def build() -> h.Contender:
            path = _models.variant(subject.path, mode)
            p = _ours.load(path, subject.task, subject.max_seq_length, BATCH)
            return h.Contender(mode, p.predict, str(path.relative_to(path.parent.parent)))

        return build

    return {mode: make(mode) for mode in modes or list(_models.VARIANTS)}


def probe(table: str, name: str, quick: bool) -> tuple[list[str], Callable[[], h.Contender]]:
    s = setup(quick)
    return h.probe_texts(s.corpus.texts), factories(s, table)[name]


@dataclass
class Agreement:
    """Each mode against fp32 on the same batches."""

    max_diff: dict[str, float]  # largest |logit difference| on real positions
    match: dict[str, float]  # share of argmax decisions equal to fp32's
    flip_margin: dict[str, float]  # largest fp32 top-1 - top-2 margin among changed decisions
    decisions: int  # argmax decisions compared (tokens or texts)
    margin_median: float  # fp32's median top-1 - top-2 logit margin


def agreement(subject: Subject, modes: list[str], texts: list[str]) -> Agreement:
    outputs: dict[str, np.ndarray] = {}
    masks: list[np.ndarray] = []
    for mode in modes:  # the batches are the same for every mode (same tokenizer, same order)
        p = _ours.load(_models.variant(subject.path, mode), subject.task, subject.max_seq_length)
        if not masks:
            masks = [f["attention_mask"].astype(bool) for f in _ours.feature_batches(p, texts)]
        rows = _ours.raw_batches(p, texts).run()
        token_level = subject.task == "token_cls"
        outputs[mode] = np.concatenate([o[m] if token_level else o for o, m in zip(rows, masks)])
    ref = outputs["fp32"]
    top2 = np.sort(ref, axis=-1)[:, -2:]
    margins = top2[:, 1] - top2[:, 0]
    out = Agreement({}, {}, {}, len(ref), float(np.median(margins)))
    for mode in modes:
        got = outputs[mode]
        same = ref.argmax(-1) == got.argmax(-1)
        out.max_diff[mode] = float(np.abs(ref - got).max())
        out.match[mode] = float(same.mean())
        out.flip_margin[mode] = float(margins[~same].max()) if (~same).any() else float("nan")
    return out


def agreement_texts(s: Setup, subject: Subject) -> list[str]:
    """The timing corpus; for the (small, trained) bundled models a larger one, 1,000 texts."""
    if not subject.trained:
        return s.corpus.texts
    return _data.mixed_corpus(100 if s.quick else 1000, seed=5).texts


def run_subject(
    s: Setup, subject: Subject, modes: list[str], args: argparse.Namespace, rss_here: bool
) -> tuple[list[str], list[h.Goal]]:
    texts = s.corpus.texts
    contenders, missing = h.make_all(factories(s, subject.key, modes), subject.key)
    warm = h.warmup_texts(texts)
    fp32 = _ours.load(subject.path, subject.task, subject.max_seq_length, BATCH)
    tokens = _ours.count_tokens(fp32, texts)
    m = h.measure(contenders, texts, tokens, args.repeats, warm, subject.key, args.deadline)
    present = [k.name for k in contenders]
    agree = agreement(subject, present, agreement_texts(s, subject))
    rss = _rss.rss_column("cmp_accel", subject.key, present, args) if rss_here else None
    unit = "tokens" if subject.task == "token_cls" else "texts"
    header = ["mode", "texts/s", "tokens/s", "× fp32", "max abs diff"]
    header += [f"argmax agreement ({agree.decisions:,} {unit})"]
    header += ["peak RSS MB (own process)"] if rss is not None else []
    header += ["MB on disk", "model"]
    rows = []
    for k in contenders:
        speed = "—" if k.name == "fp32" else h.fmt_ratio(m.speedup(k.name, "fp32"))
        diff, match = agree.max_diff[k.name], agree.match[k.name]
        row = [
            k.name,
            c.Spread.of(m.texts_per_s(k.name)).fmt(1),
            c.Spread.of(m.tokens_per_s(k.name)).fmt(0),
            speed,
            f"{diff:.2e}",
            f"{match:.2%}",
        ]
        row += [h.fmt_mb(rss.get(k.name, float("nan")))] if rss is not None else []
        size = _disk_mb(_models.variant(subject.path, k.name))
        rows.append(row + [f"{size:.1f}", k.note])
    max_len = subject.max_seq_length or "the model's own"
    lines = [f"### {subject.title}", "", f"max_seq_length {max_len}.", ""]
    lines += [c.table(header, rows), ""]
    lines += [f"- {name}: not measured, it failed here: {why}" for name, why in missing]
    if (cut := m.cut_note(args.repeats)) is not None:
        lines.append(f"- {cut}")
    flip = agree.flip_margin.get("int8", float("nan"))
    margin = f"fp32's median margin between its two best logits: {agree.margin_median:.3g}; " + (
        "int8 changed no argmax decision"
        if flip != flip
        else f"the argmax decisions int8 changed had fp32 margins of at most {flip:.3g}"
    )
    if "int8" in agree.match:
        lines.append(f"- {margin}.")
    goals = []
    if "int8" in m.runs and "fp32" in m.runs:
        speed = m.speedup("int8", "fp32")
        match = agree.match["int8"]
        note = f"ERNIE, {s.shape.short}, random init" if not subject.trained else "trained"
        note += f"; {margin}"
        if "O2+int8" in m.runs:
            note += f"; O2+int8: {h.fmt_ratio(m.speedup('O2+int8', 'fp32'))}, "
            note += f"agreement {agree.match['O2+int8']:.2%}"
        goals.append(
            h.Goal(
                f"{subject.key}: int8 ≥ 1.5 × fp32 throughput with argmax agreement ≥ 99%",
                f"{h.fmt_ratio(speed)}, agreement {match:.2%}",
                speed.median >= 1.5 and match >= 0.99,
                note,
            )
        )
    return lines, goals


def _disk_mb(directory: Path) -> float:
    return sum(p.stat().st_size for p in directory.glob("model.onnx*")) / 2**20


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    h.add_common_args(p, repeats=3, seconds=180)
    p.add_argument("--modes", default=",".join(_models.VARIANTS), help="modes to compare")
    p.add_argument(
        "--subjects",
        default=",".join(DEFAULT_SUBJECTS),
        help="models: ernie-token_cls, ernie-seq_cls, bundled (every bundled default model) "
        f"[{','.join(DEFAULT_SUBJECTS)}]",
    )
    args = h.finish_args(p.parse_args(argv), repeats=3)
    modes = [m for m in args.modes.split(",") if m]
    if "fp32" not in modes:
        modes.insert(0, "fp32")
    machine = c.machine_line()
    c.progress(f"machine: {machine}")
    s = setup(args.quick)
    subjects = s.subjects()
    keys = set(args.subjects.split(","))
    subjects = [x for x in subjects if x.key in keys or (x.trained and "bundled" in keys)]
    lines = h.section_head(
        "## Acceleration modes on CPU: fp32, O2, O3, int8", args, "cmp_accel.py", machine
    )
    lines += [
        f"Corpus: {s.corpus.description}. Batches of {BATCH}, {args.repeats} repeats, modes "
        "interleaved; every mode is `ernie_deploy.load(variant_dir).predict(texts)`. "
        "× fp32: the mode's throughput over fp32's, per repeat. Agreement: each mode against "
        "fp32 on the same batches, of the timing corpus (random-init models) or of 1,000 "
        "texts made the same way, seed 5 (bundled models). Peak RSS (first model only): a "
        f"fresh process that loads the mode and predicts the {h.PROBE_TEXTS} longest texts once.",
        "",
    ]
    absent = missing_bundled()
    if absent:
        lines += [f"Bundled models not in this checkout (not measured): {', '.join(absent)}.", ""]
    goals: list[h.Goal] = []
    for subject in subjects:  # build (or find) every variant before any timing
        for mode in modes:
            _models.variant(subject.path, mode)
    h.start_clock(args)
    for i, subject in enumerate(subjects):
        body, g = run_subject(s, subject, modes, args, rss_here=i == 0)
        lines += body
        goals += g
    h.finish(SECTION, lines, machine, args, goals)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
