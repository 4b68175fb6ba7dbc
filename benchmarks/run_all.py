"""`make bench`: every comparison in benchmarks/, one after another, then the goals table.

Each comparison runs as its own process (`python benchmarks/cmp_*.py`), so frameworks
(Paddle, PyTorch, ONNX Runtime) never share a process across tables, and writes its own
section of RESULTS.md as soon as it finishes; a failing one is reported and the rest still
run. Then this script writes the "goals" section (each goal of the benchmark issue with the
measured value and pass / miss) and orders the sections. The models are built first
(`_models.py`; about 2 minutes once, then cached under .cache/bench/). The whole run is
bounded by `--max-minutes` (20): each comparison gets a share of it (`--max-seconds`) and
starts no timed repeat that would end past its share, so on a slower machine tables come
back with fewer repeats (they say so) rather than the run taking longer; a comparison left
with under 15 seconds is skipped and listed.

    python benchmarks/run_all.py                  # full run (what `make bench` does)
    python benchmarks/run_all.py --quick          # smoke run: tiny models, writes
                                                  #   .cache/bench/RESULTS-quick.md
    python benchmarks/run_all.py --only cmp_accel,cmp_longtext
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402
import _harness as h  # noqa: E402

HERE = Path(__file__).resolve().parent
SECTION = "goals"
# (script, its section, seconds of measurement it gets, the goals it checks: shown as "not
# measured" when it reports none). With OVERHEAD_S per step they fill 20 minutes; a run that
# builds the models first (~2 minutes, once) scales them down to fit --max-minutes. A step
# stops starting repeats (and RSS probes) when its seconds are spent.
STEPS = (
    ("cmp_runtime", "runtime", 250, ("ours ≥ 0.95 × raw session.run", "ours ≥ 2 × the guide")),
    ("cmp_torch", "torch", 110, ("ours ≥ 1.5 × PyTorch eager", "ours ≥ 1.2 × optimum pipeline")),
    ("cmp_embed", "embedding", 40, ()),
    ("cmp_accel", "accel", 80, ("int8 ≥ 1.5 × fp32 with argmax agreement ≥ 99%",)),
    ("cmp_shapes", "shapes", 60, ()),
    ("cmp_longtext", "longtext", 80, ("long-text NER per 1,000 chars at 100k within 1.2 × 1k",)),
    # four workloads, ours vs Infinity (issue 13): two repeats of everything need ~200 s
    (
        "serve_load",
        "serve_load",
        220,
        ("serve ≥ 0.9 × in-process at 64 clients", "serve MiniLM ours ≥ 1.3 × Infinity"),
    ),
)
ORDER = (SECTION, *(step[1] for step in STEPS), "serve_budget")  # serve_budget: by hand
# what a step takes beyond its budget (imports, loading models, RSS probes past the budget)
OVERHEAD_S = 45


@dataclass
class Step:
    script: str
    status: str = "not run"
    seconds: float = 0.0


def command(script: str, args: argparse.Namespace, budget: float) -> list[str]:
    cmd = [sys.executable, str(HERE / f"{script}.py"), "--results", str(args.results)]
    cmd += ["--max-seconds", f"{budget:.0f}"]
    if script == "serve_load":
        cmd += (
            ["--quick", "--repeats", "1"] if args.quick else ["--repeats", "2", "--requests", "128"]
        )
    else:
        cmd += ["--quick"] if args.quick else []
        cmd += ["--no-rss"] if args.no_rss else []
    for note in args.note or []:
        cmd += ["--note", note]
    return cmd


def prepare(args: argparse.Namespace) -> Step:
    """Build (or find) every model first, so no comparison's budget pays for a build."""
    step = Step("models")
    cmd = [sys.executable, str(HERE / "_models.py")] + (["--quick"] if args.quick else [])
    c.progress(f"=== models: {' '.join(cmd[1:])}")
    t0 = time.perf_counter()
    rc = subprocess.run(cmd).returncode
    step.seconds = time.perf_counter() - t0
    step.status = "ready" if rc == 0 else f"failed (exit status {rc}; see the log above)"
    c.progress(f"=== models: {step.status} after {step.seconds / 60:.1f} min")
    return step


def run_steps(args: argparse.Namespace, deadline: float) -> list[Step]:
    chosen = [i for i, step in enumerate(STEPS) if not args.only or step[0] in args.only]
    steps = []
    for i, (script, _, budget, _) in enumerate(STEPS):
        step = Step(script)
        steps.append(step)
        if i not in chosen:
            step.status = "not selected"
            continue
        # the steps left share what is left of the run's time, in proportion to their budgets
        later = [STEPS[j][2] for j in chosen if j >= i]
        remaining = deadline - time.perf_counter() - OVERHEAD_S * len(later)
        budget = min(budget, remaining * budget / sum(later))
        if budget < 15:
            step.status = f"skipped: the {args.max_minutes:g}-minute budget was spent"
            c.progress(f"{script}: {step.status}")
            continue
        cmd = command(script, args, budget)
        c.progress(f"=== {script}: {' '.join(cmd[1:])}")
        t0 = time.perf_counter()
        try:
            timeout = budget + 600  # loading, the last repeat, RSS probes: never hang forever
            rc = subprocess.run(cmd, timeout=timeout).returncode
            step.status = "ok" if rc == 0 else f"failed (exit status {rc}; see the log above)"
        except subprocess.TimeoutExpired:
            step.status = "stopped: ran 10 minutes past its budget"
        step.seconds = time.perf_counter() - t0
        c.progress(f"=== {script}: {step.status} after {step.seconds / 60:.1f} min")
    return steps


def goals_section(
    steps: list[Step], started: float, args: argparse.Namespace, machine: str, total: float
) -> str:
    lines = h.section_head(
        "## Goals (CPU, fp32 unless stated, measured in the same run)", args, "run_all.py", machine
    )
    rows = []
    for step, (script, section, _, expected) in zip(steps[1:], STEPS):
        goals = h.read_goals(section, since=started)
        if goals:
            rows += [[g.goal, g.measured, h.verdict(g.passed), g.note] for g in goals]
        elif expected and step.status != "not selected":
            rows += [[goal, "—", "not measured", f"{script}: {step.status}"] for goal in expected]
    lines += [
        "Each ratio is ours' throughput over the contender's, median (min–max) over interleaved "
        "repeats; the tables below give the conditions. A miss stays listed here until a "
        "re-run passes. Reproduce with `make bench` (20 minutes on 2 cores; the first run also "
        "builds the models into .cache/bench/, about 2 minutes).",
        "",
        c.table(["goal", "measured", "verdict", "note"], rows),
        "",
        f"Run: {total / 60:.1f} min in all; "
        + "; ".join(
            f"{s.script} {s.status}" + (f" {s.seconds / 60:.1f} min" if s.seconds else "")
            for s in steps
        )
        + ".",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="smoke run: tiny models, few texts")
    p.add_argument("--only", help="comma-separated scripts to run (cmp_runtime, ..., serve_load)")
    p.add_argument("--max-minutes", type=float, default=20, help="time budget of the run [20]")
    p.add_argument("--no-rss", action="store_true", help="skip the peak-RSS probe processes")
    p.add_argument("--note", action="append", help="a line for every section's notes")
    p.add_argument("--results", type=Path, help="the file to update (see _harness.finish_args)")
    args = p.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",")] if args.only else None
    known = [step[0] for step in STEPS]
    if args.only and not set(args.only) <= set(known):
        p.error(f"--only takes some of {', '.join(known)}")
    args.repeats = None
    return h.finish_args(args, repeats=1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    t0 = time.perf_counter()
    deadline = t0 + args.max_minutes * 60
    machine = c.machine_line()
    c.progress(f"machine: {machine}")
    c.progress(f"results: {args.results}")
    steps = [prepare(args)]
    if steps[0].status == "ready":
        steps += run_steps(args, deadline)
    total = time.perf_counter() - t0
    section = goals_section(steps, started, args, c.machine_line(), total)
    print("\n" + section)
    c.write_section(SECTION, section, machine, args.results)
    c.order_sections(ORDER, args.results)
    c.progress(f"wrote {args.results} in {total / 60:.1f} min")
    return 0 if all(s.status in ("ready", "ok", "not selected") for s in steps) else 1


if __name__ == "__main__":
    raise SystemExit(main())
