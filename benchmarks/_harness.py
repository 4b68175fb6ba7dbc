"""Running contenders side by side: warm-up, interleaved timed repeats, ratios, peak RSS, goals.

A comparison builds `Contender`s (name + a `predict(texts)` callable; loading happens before,
untimed) and hands them to `measure`, which warms each up once, then runs every contender on
the same texts `repeats` times, interleaved with the order rotated each repeat
(`_common.interleaved`), and records wall and CPU time per run. Ratios to "ours" are taken
per repeat (pairs that ran back to back) and summarised as median (min-max).

Peak RSS is measured in a fresh process per contender: `_rss.py`.

Comparison modules report goal checks through `record_goals` (a JSON file per module under
.cache/bench/goals/) for run_all's goals table.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import _common as c
import _data

GOALS_DIR = _data.CACHE / "goals"
QUICK_RESULTS = _data.CACHE / "RESULTS-quick.md"
GAP_S = 0.2  # pause between timed runs: lets other runtimes' spinning threads go idle


@dataclass
class Contender:
    """One way of predicting: `predict(texts)` is timed; loading happened before."""

    name: str
    predict: Callable[[list[str]], object]
    note: str = ""
    padding: float | None = None  # tokens run / real tokens, where known


@dataclass
class Runs:
    """Every timed run of one contender."""

    name: str
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)


@dataclass
class Measurement:
    """The timed runs of a table's contenders on one set of texts."""

    texts: int
    tokens: int  # real tokens (with [CLS]/[SEP], no padding) by our tokenizer
    runs: dict[str, Runs]
    padding: dict[str, float | None] = field(default_factory=dict)
    repeats: int = 0  # repeats done
    cut: bool = False  # fewer than asked: the time budget ran out

    def cut_note(self, asked: int) -> str | None:
        if not self.cut:
            return None
        return f"Cut to {self.repeats} of {asked} repeats by the time budget (--max-seconds)."

    def texts_per_s(self, name: str) -> list[float]:
        return [self.texts / w for w in self.runs[name].walls]

    def tokens_per_s(self, name: str) -> list[float]:
        return [self.tokens / w for w in self.runs[name].walls]

    def speedup(self, ours: str, other: str) -> c.Spread:
        """Ours' throughput over `other`'s, per repeat: above 1 means ours is faster."""
        a, b = self.runs[ours].walls, self.runs[other].walls
        return c.Spread.of([wb / wa for wa, wb in zip(a, b)])

    def cpu_ms_per_text(self, name: str) -> c.Spread:
        return c.Spread.of([cpu * 1000 / self.texts for cpu in self.runs[name].cpus])


def measure(
    contenders: Sequence[Contender],
    texts: list[str],
    tokens: int,
    repeats: int,
    warmup: list[str] | None = None,
    label: str = "",
    deadline: float | None = None,
) -> Measurement:
    """Warm each contender up (on `warmup`, default the texts), then time interleaved repeats.

    No repeat starts that would end past `deadline` (a time.perf_counter() value), judged by
    the longest repeat so far; every contender gets the same number of runs (at least one)."""
    by_name = {k.name: k for k in contenders}
    for k in contenders:
        k.predict(warmup if warmup is not None else texts)
    runs = {k.name: Runs(k.name) for k in contenders}
    done, round_start, round_s = 0, time.perf_counter(), 0.0
    for r, name in c.interleaved(repeats, list(by_name)):
        if r > done:  # a repeat (every contender once) is complete
            now = time.perf_counter()
            done, round_s, round_start = r, max(round_s, now - round_start), now
            if deadline is not None and now + round_s > deadline:
                c.progress(f"{label}: the next repeat would end past the time budget: {done} done")
                break
        gc.collect()
        time.sleep(GAP_S)
        with c.Clock() as clock:
            by_name[name].predict(texts)
        runs[name].walls.append(clock.wall)
        runs[name].cpus.append(clock.cpu if clock.cpu is not None else float("nan"))
        c.progress(
            f"{label}{' ' if label else ''}repeat {r + 1}/{repeats} {name}: "
            f"{len(texts) / clock.wall:,.1f} texts/s, {tokens / clock.wall:,.0f} tokens/s"
        )
    padding = {k.name: k.padding for k in contenders}
    n = min(len(x.walls) for x in runs.values())
    return Measurement(len(texts), tokens, runs, padding, n, n < repeats)


@dataclass
class TaskRun:
    """A table's measurement, kept without its contenders (so their memory can go)."""

    task: str
    m: Measurement
    notes: dict[str, str]
    missing: list[tuple[str, str]]
    info: dict[str, Any] = field(default_factory=dict)


def make_all(
    factories: dict[str, Callable[[], Contender]], label: str, only: str | None = None
) -> tuple[list[Contender], list[tuple[str, str]]]:
    """Load every contender (or those named in `only`, comma-separated); one that fails is
    left out and named with its error's first line."""
    made, missing = [], []
    chosen = None if not only else {x.strip() for x in only.split(",")}
    for name, make in factories.items():
        if chosen is not None and name not in chosen and name != "ours":
            continue
        try:
            made.append(make())
        except Exception as exc:  # reported in the table, not fatal to the other contenders
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            c.progress(f"{label}: {name} failed to load: {type(exc).__name__}: {why}")
            missing.append((name, f"{type(exc).__name__}: {why}"))
    return made, missing


PROBE_TEXTS = 32


def probe_texts(texts: list[str]) -> list[str]:
    """What an RSS probe predicts: the longest texts, one full batch (the peak activations)."""
    return sorted(texts, key=len, reverse=True)[:PROBE_TEXTS]


def warmup_texts(texts: list[str], n: int = 8) -> list[str]:
    """The `n` longest texts plus the first `n`: every code path runs once, cheaply."""
    longest = sorted(texts, key=len, reverse=True)[:n]
    return longest + texts[:n]


# ---- report helpers ----------------------------------------------------------------------------


def fmt_mb(value: float) -> str:
    return "n/a" if value != value else f"{value:,.0f}"


def fmt_ratio(s: c.Spread) -> str:
    return s.fmt(2, "×")


def throughput_rows(
    m: Measurement,
    ours: str,
    rss: dict[str, float] | None = None,
    notes: dict[str, str] | None = None,
) -> list[list[str]]:
    """contender | texts/s | tokens/s | CPU ms/text | ours ÷ this | padding | peak RSS | how."""
    rows = []
    for name in m.runs:
        pad = m.padding.get(name)
        ratio = "—" if name == ours else fmt_ratio(m.speedup(ours, name))
        row = [
            f"**{name}**" if name == ours else name,
            c.Spread.of(m.texts_per_s(name)).fmt(1),
            c.Spread.of(m.tokens_per_s(name)).fmt(0),
            m.cpu_ms_per_text(name).fmt(1),
            ratio,
            "—" if pad is None else f"{pad:.2f}",
        ]
        if rss is not None:
            row.append(fmt_mb(rss.get(name, float("nan"))))
        row.append((notes or {}).get(name, ""))
        rows.append(row)
    return rows


THROUGHPUT_HEADER = [
    "contender",
    "texts/s",
    "tokens/s",
    "CPU ms / text",
    "ours ÷ this",
    "padding",
]


def throughput_header(with_rss: bool) -> list[str]:
    extra = ["peak RSS MB (own process)"] if with_rss else []
    return THROUGHPUT_HEADER + extra + ["how"]


# ---- goals -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Goal:
    """One goal check: what was measured, against which bound, and whether it held."""

    goal: str  # the wording
    measured: str
    passed: bool | None  # None: not measurable in this run
    note: str = ""


def record_goals(module: str, goals: Sequence[Goal], quick: bool) -> None:
    GOALS_DIR.mkdir(parents=True, exist_ok=True)
    data = {"quick": quick, "time": time.time(), "goals": [asdict(g) for g in goals]}
    tmp = GOALS_DIR / f"{module}.json.part"
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, GOALS_DIR / f"{module}.json")


def read_goals(module: str, since: float) -> list[Goal] | None:
    """The goals a module recorded after `since` (None if it recorded none since)."""
    path = GOALS_DIR / f"{module}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if data.get("time", 0) < since:
        return None
    return [Goal(**g) for g in data["goals"]]


def verdict(passed: bool | None) -> str:
    return {True: "pass", False: "**miss**", None: "not measured"}[passed]


# ---- shared command line ---------------------------------------------------------------------


def add_common_args(p: argparse.ArgumentParser, repeats: int, seconds: float) -> None:
    p.add_argument("--quick", action="store_true", help="smoke run: tiny model, few texts")
    p.add_argument(
        "--max-seconds",
        type=float,
        default=seconds,
        help=f"time for the measurements, models already built [{seconds:g}]: no repeat or "
        "RSS probe starts past it",
    )
    p.add_argument("--repeats", type=int, help=f"timed repeats per contender [{repeats}; quick 2]")
    p.add_argument("--no-rss", action="store_true", help="skip the peak-RSS probe processes")
    p.add_argument("--contenders", help="comma-separated contender names to run (default: all)")
    p.add_argument("--note", action="append", help="a line for the section's notes")
    p.add_argument(
        "--results",
        type=Path,
        help=f"the file to update [benchmarks/RESULTS.md; quick: {QUICK_RESULTS}]",
    )


def finish_args(args: argparse.Namespace, repeats: int) -> argparse.Namespace:
    if args.repeats is None:
        args.repeats = 2 if args.quick else repeats
    if args.results is None:
        args.results = QUICK_RESULTS if args.quick else c.RESULTS
    if args.repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    args.deadline = None
    return args


def start_clock(args: argparse.Namespace) -> None:
    """Start the measurement budget and the load accounting (call once models are built)."""
    now = time.perf_counter()
    args.deadline = now + args.max_seconds
    args.load_start = (now, _machine_busy_s(), _own_cpu_s())


def past_deadline(args: argparse.Namespace, grace: float = 0.0) -> bool:
    return args.deadline is not None and time.perf_counter() > args.deadline + grace


def section_head(title: str, args: argparse.Namespace, script: str, machine: str) -> list[str]:
    """Title, smoke-run banner, command line, machine line, the user's notes."""
    cmd = " ".join(["python", f"benchmarks/{script}", *sys.argv[1:]])
    lines = [title, ""]
    if args.quick:
        lines += [
            "**SMOKE RUN (`--quick`): tiny model, few texts, 2 repeats. These numbers only "
            "show that the benchmark works; they say nothing about speed.**",
            "",
        ]
    lines += [f"Command: `{cmd}`", "", f"Machine: {machine}", ""]
    for note in args.note or []:
        lines += [f"Note: {note}", ""]
    return lines


def _machine_busy_s() -> float:
    """CPU seconds all processes have used since boot (/proc/stat), NaN where unknown."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    """CPU seconds of this process and its finished children (the RSS probes)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def load_note(args: argparse.Namespace) -> str | None:
    """A warning when other processes used the CPUs while this table was measured (since
    `start_clock`): the machine's CPU time minus this process's and its children's."""
    start = getattr(args, "load_start", None)
    if start is None:
        return None
    wall = time.perf_counter() - start[0]
    others = (_machine_busy_s() - start[1] - (_own_cpu_s() - start[2])) / max(wall, 1e-9)
    usable, _, _ = c.usable_cores()
    if not others > 0.1 * usable:  # NaN: unknown, say nothing
        return None
    return (
        f"The machine was busy: other processes used {others:.2f} of the {usable} usable cores "
        "on average while this table was measured, so the contenders shared the CPUs with "
        "them. Expect noise (see the ranges)."
    )


def finish(
    section: str,
    lines: list[str],
    machine: str,
    args: argparse.Namespace,
    goals: Sequence[Goal] = (),
) -> str:
    """End a comparison: add the busy-machine note, print the section, write it into the
    results file and record its goals (none: the issue sets none for it). Returns the text."""
    if busy := load_note(args):
        lines.append(f"- {busy}")
    text = "\n".join(lines)
    print("\n" + text)
    c.write_section(section, text, machine, args.results)
    record_goals(section, goals, args.quick)
    return text
