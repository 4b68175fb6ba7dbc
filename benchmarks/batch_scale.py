"""Batch throughput: `ernie-deploy batch` with the local engine vs the Ray engine with 1 and 2 actors.

Writes a corpus of made-up Chinese review sentences (`_data.mixed_chinese_texts`) as jsonl,
then runs the same job (`ernie_deploy.batch.run_batch`, jsonl output, `--batch-size` rows per
predict call) with each contender, interleaved over `--repeats`: the local engine (one ONNX
Runtime session with the usable cores as threads) and the Ray engine on a local Ray instance
with N actors x (cores / N) threads each. Reports rows/s over the whole job (what a user
waits for: Ray's actor start-up and model loads included), rows/s after the first batch came
back (steady state), the driver's CPU per row (reading, JSON, writing, Ray's bookkeeping: it
bounds what one driver can feed however many nodes work for it), and whether the output is
byte-identical to the local engine's.

Bounded by `--max-seconds` (no repeat starts past it). Writes the "batch_scale" section of
benchmarks/RESULTS.md.

    python benchmarks/batch_scale.py                     # bundled sentiment-zh, 6,000 rows
    python benchmarks/batch_scale.py --quick --no-write  # 600 rows, 1 repeat, print only
    python benchmarks/batch_scale.py --model ner-zh --rows 20000 --actors 1,2,4
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402
import _data  # noqa: E402

SECTION = "batch_scale"
TITLE = "## Batch jobs: local engine vs Ray actors"


@dataclass
class Run:
    """One timed job."""

    name: str
    repeat: int
    rows: int = 0
    wall: float = float("nan")
    first: float = float("nan")  # seconds until the first batch was written
    first_rows: int = 0
    driver_cpu: float | None = None
    same: bool | None = None
    stamps: list[float] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.wall if self.wall > 0 else float("nan")

    @property
    def steady_rows_per_s(self) -> float:
        rest = self.wall - self.first
        return (self.rows - self.first_rows) / rest if rest > 0 else float("nan")


def write_corpus(path: Path, rows: int) -> None:
    texts = _data.mixed_chinese_texts(rows, seed=0)
    with path.open("w", encoding="utf-8") as fh:
        for i, text in enumerate(texts):
            fh.write(json.dumps({"id": f"doc-{i}", "text": text}, ensure_ascii=False) + "\n")


def run_job(args: argparse.Namespace, name: str, corpus: Path, out: Path, repeat: int) -> Run:
    from ernie_deploy.batch import BatchOptions, ModelOptions, run_batch

    actors = int(name.split("x")[1]) if name.startswith("ray") else None
    options = BatchOptions(
        batch_size=args.batch_size,
        engine="ray" if actors else "local",
        num_actors=actors,
        threads=args.threads,
        overwrite=True,
    )
    run = Run(name, repeat)
    t0 = time.perf_counter()
    rows_seen = [0]

    def progress(total: int, done: int) -> Any:
        def advance(n: int) -> None:
            rows_seen[0] += n
            run.stamps.append(time.perf_counter() - t0)
            if len(run.stamps) == 1:
                run.first, run.first_rows = run.stamps[0], n

        return advance

    with c.Clock() as clock:
        report = run_batch(
            ModelOptions(args.model_path, truncate=True), corpus, out, options, progress
        )
    run.wall, run.driver_cpu, run.rows = clock.wall, clock.cpu, report.written
    return run


def report(args: argparse.Namespace, runs: list[Run], info: dict[str, Any]) -> str:
    rows = []
    local = c.Spread.of([r.rows_per_s for r in runs if r.name == "local"])
    for name in info["names"]:
        rs = [r for r in runs if r.name == name]
        if not rs:
            rows.append([name, "skipped (time budget)"] + [""] * 6)
            continue
        per_row = [r.driver_cpu * 1000 / r.rows for r in rs if r.driver_cpu is not None and r.rows]
        speed = c.Spread.of([r.rows_per_s / local.median for r in rs]) if local.n else None
        rows.append(
            [
                info["labels"][name],
                c.Spread.of([r.rows_per_s for r in rs]).fmt(0),
                c.Spread.of([r.steady_rows_per_s for r in rs]).fmt(0),
                c.Spread.of([r.first for r in rs]).fmt(1, " s"),
                speed.fmt(2, "×") if speed else "n/a",
                c.Spread.of(per_row).fmt(2),
                "yes" if all(r.same for r in rs) else "NO",
            ]
        )
    command = "python benchmarks/batch_scale.py" + "".join(
        " " + shlex.quote(a) for a in info["argv"]
    )
    lengths = info["lengths"]
    lines = [
        TITLE,
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {info['machine']}; load average at the end {info['load_end']}.",
        "",
        f"Job: `ernie-deploy batch {args.model} corpus.jsonl out.jsonl --truncate "
        f"--batch-size {args.batch_size} [--engine ray --num-actors N]` on {args.rows:,} made-up "
        f"Chinese review sentences ({min(lengths)}–{max(lengths)} characters, mean "
        f"{sum(lengths) / len(lengths):.0f}); task {info['task']}. Ray: a local instance with "
        f"{info['cpus']} CPUs, started once before the timed runs; each Ray job starts its "
        "actors and loads the model in each (included in rows/s). Local engine: one session, "
        f"{args.threads or 'the usable cores as'} threads. {args.repeats} repeat(s), "
        "contenders interleaved. CPU per row counts the `batch` process only: for the local "
        "engine that is the whole job, for Ray the driver (actors run in other processes).",
        "",
        c.table(
            [
                "engine",
                "rows/s (whole job)",
                "rows/s after first batch",
                "first batch after",
                "vs local",
                "CLI process CPU ms / row",
                "same rows as local",
            ],
            rows,
        ),
        "",
    ]
    lines += [f"- {n}" for n in notes(args, runs, info)]
    return "\n".join(lines)


def notes(args: argparse.Namespace, runs: list[Run], info: dict[str, Any]) -> list[str]:
    out = list(args.note or [])
    usable = c.usable_cores()[0]
    if info["load_start_1m"] > 0.5 * usable:
        out.append(
            f"The machine was busy before this benchmark started (1-minute load average "
            f"{info['load_start_1m']:.2f} on {usable} usable cores): expect noise."
        )
    per_row = [r.driver_cpu * 1000 / r.rows for r in runs if r.name != "local" and r.driver_cpu]
    if per_row:
        ms = c.Spread.of(per_row).median
        out.append(
            f"The Ray driver spent {ms:.2f} ms of CPU per row (reading, JSON, writing, Ray), so "
            f"one driver can feed at most about {1000 / ms:,.0f} rows/s however many nodes run "
            "actors; below that, throughput grows with the actors' cores."
        )
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default="sentiment-zh", help="model path or bundled name")
    p.add_argument("--rows", type=int, default=6000, help="rows in the corpus [6000]")
    p.add_argument("--actors", default="1,2", help="Ray actor counts [1,2]")
    p.add_argument("--batch-size", type=int, default=256, help="rows per predict call [256]")
    p.add_argument("--threads", type=int, help="local engine threads [usable cores]")
    p.add_argument("--repeats", type=int, default=2, help="repeats of every contender [2]")
    p.add_argument("--max-seconds", type=float, default=900, help="time budget [900]")
    p.add_argument("--quick", action="store_true", help="600 rows, 1 repeat")
    p.add_argument("--note", action="append", help="a line for the section's notes")
    p.add_argument("--results", type=Path, default=c.RESULTS, help="the RESULTS.md to update")
    p.add_argument("--no-write", action="store_true", help="print the section only")
    args = p.parse_args(argv)
    if args.quick:
        args.rows, args.repeats = 600, 1
    args.actors = [int(x) for x in args.actors.split(",") if x.strip()]
    if min(args.rows, args.repeats, args.batch_size, *args.actors) < 1:
        p.error("--rows, --repeats, --batch-size and --actors must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    deadline = time.perf_counter() + args.max_seconds
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    import ernie_deploy

    usable = c.usable_cores()[0]
    info: dict[str, Any] = {
        "argv": sys.argv[1:] if argv is None else argv,
        "load_start_1m": os.getloadavg()[0],
        "machine": c.machine_line([f"ray {c.version('ray')}"]),
        "cpus": usable,
    }
    c.progress(f"machine: {info['machine']}")
    args.model_path = args.model
    info["task"] = ernie_deploy.load(args.model).task
    names = ["local"] + [f"rayx{n}" for n in args.actors]
    info["names"] = names
    info["labels"] = {"local": "local (1 session)"}
    for n in args.actors:
        threads = max(1, usable // n)
        info["labels"][f"rayx{n}"] = f"ray, {n} actor(s) x {threads} thread(s)"
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="batch-scale-") as tmp:
        root = Path(tmp)
        corpus = root / "corpus.jsonl"
        write_corpus(corpus, args.rows)
        info["lengths"] = [len(json.loads(line)["text"]) for line in corpus.open(encoding="utf-8")]
        ray.init(num_cpus=usable, include_dashboard=False, logging_level="WARNING")
        try:
            reference = root / "reference.jsonl"  # untimed warm-up, and the rows to compare to
            run_job(args, "local", corpus, reference, -1)
            for repeat, name in c.interleaved(args.repeats, names):
                if time.perf_counter() > deadline:
                    c.progress(f"time budget ({args.max_seconds:.0f} s) spent: skipping the rest")
                    break
                out = root / f"{name}.jsonl"
                run = run_job(args, name, corpus, out, repeat)
                run.same = out.read_bytes() == reference.read_bytes()
                runs.append(run)
                c.progress(
                    f"repeat {repeat + 1}/{args.repeats} {name:>6}: {run.rows_per_s:,.0f} rows/s "
                    f"({run.steady_rows_per_s:,.0f} after the first batch at {run.first:.1f} s)"
                    + ("" if run.same else " -- OUTPUT DIFFERS from the local engine")
                )
        finally:
            ray.shutdown()
    info["load_end"] = c.load_average()
    section = report(args, runs, info)
    c.emit(SECTION, section, info["machine"], args.results, write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
