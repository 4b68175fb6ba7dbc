"""Shared helpers of the benchmark scripts: machine line, timing summaries, RESULTS.md sections.

Every script in benchmarks/ writes only its own section of RESULTS.md (between
`<!-- BEGIN name -->` and `<!-- END name -->` lines, see `write_section`), so the
scripts may run in any order or alone without clobbering each other's tables. The file's
header (title, how to reproduce, latest machine line) is rewritten by whichever script
ran last; each section also carries the machine line of the run that produced it, since
sections come from different runs.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import importlib.metadata
import importlib.util
import os
import platform
import re
import statistics
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"

# ---- machine line ----------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else platform's guess)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def usable_cores() -> tuple[int, int | None, float | None]:
    """(CPUs this process may run on, CPUs in the machine, cgroup CPU quota or None)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    quota = None
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if text and text[0] != "max":
            quota = int(text[0]) / int(text[1])
    except (OSError, ValueError, IndexError):
        pass
    return usable, os.cpu_count(), quota


def load_average() -> str:
    """The 1 / 5 / 15-minute load averages, e.g. '2.50 / 2.69 / 2.66'."""
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def version(dist: str) -> str:
    """An installed distribution's version, or 'not installed'."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def git_revision() -> str:
    """The checkout's short commit (with '+dirty' when it has local changes), or 'n/a'."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "n/a"
    return rev + ("+dirty" if dirty else "")


def machine_line(extra: Sequence[str] = ()) -> str:
    """One line naming where and with what a benchmark ran (CPU, cores, load, versions, date)."""
    usable, total, quota = usable_cores()
    cores = f"{usable} usable of {total}"
    if quota is not None:
        cores += f", cgroup quota {quota:g}"
    ort = version("onnxruntime")
    if ort == "not installed":
        ort = version("onnxruntime-gpu") + " (gpu)"
    parts = [
        f"CPU {cpu_model()} ({cores})",
        f"load average {load_average()}",
        f"Python {platform.python_version()}",
        f"onnxruntime {ort}",
        f"ernie-deploy {version('ernie-deploy')} ({git_revision()})",
        *extra,
        f"{platform.system()} {platform.release()}",
        _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    ]
    return "; ".join(parts)


def has_module(name: str) -> bool:
    """Whether `import name` would find a module (without importing it)."""
    return importlib.util.find_spec(name) is not None


# ---- timing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    """Median and range of repeated measurements."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        vals = [v for v in values if v == v]  # drop NaN
        if not vals:
            return cls(float("nan"), float("nan"), float("nan"), 0)
        return cls(statistics.median(vals), min(vals), max(vals), len(vals))

    def fmt(self, digits: int = 0, unit: str = "") -> str:
        """'1234 (1200–1300)'; a single value without the range; 'n/a' when empty."""
        if self.n == 0:
            return "n/a"
        f = f"{{:,.{digits}f}}"
        mid = f.format(self.median) + unit
        if self.n == 1:
            return mid
        return f"{mid} ({f.format(self.low)}–{f.format(self.high)})"


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100, linear interpolation), NaN when empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def interleaved(repeats: int, names: Sequence[str]) -> Iterator[tuple[int, str]]:
    """(repeat, name) pairs: every contender once per repeat, the order rotated each repeat,
    so slow drift of the machine (other load, thermal) spreads over all contenders alike."""
    for r in range(repeats):
        k = r % len(names)
        for name in list(names[k:]) + list(names[:k]):
            yield r, name


def best_predict_seconds(
    models: dict[str, Any], texts: list[str], repeats: int
) -> dict[str, float]:
    """Seconds of the fastest `predict(texts)` of each loaded model: one warm-up call of 64 texts
    each, then `repeats` rounds that run every model once, in the dict's order."""
    for m in models.values():
        m.predict(texts[:64])  # warm-up
    best = {n: float("inf") for n in models}
    for _ in range(repeats):
        for n, m in models.items():
            t0 = time.perf_counter()
            m.predict(texts)
            best[n] = min(best[n], time.perf_counter() - t0)
    return best


def process_cpu_seconds(pid: int | None = None) -> float | None:
    """User + system CPU seconds of a process (all its threads); None where unknown."""
    if pid is None or pid == os.getpid():
        t = os.times()
        return t.user + t.system
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks
    except (OSError, ValueError, IndexError):
        return None


class Clock:
    """Wall and CPU time of a stretch of work: `with Clock() as c: ...; c.wall, c.cpu`."""

    def __init__(self, pid: int | None = None) -> None:
        self.pid = pid
        self.wall = 0.0
        self.cpu: float | None = None

    def __enter__(self) -> Clock:
        self._cpu0 = process_cpu_seconds(self.pid)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._t0
        cpu1 = process_cpu_seconds(self.pid)
        self.cpu = None if cpu1 is None or self._cpu0 is None else cpu1 - self._cpu0


def progress(message: str) -> None:
    """One progress line on stdout, flushed at once, with seconds since import."""
    print(f"[{time.perf_counter() - _START:6.1f}s] {message}", flush=True)


_START = time.perf_counter()

# ---- RESULTS.md --------------------------------------------------------------------------------

_HEADER_NAME = "header"
_HEADER = """# Benchmark results

Written by the scripts in `benchmarks/` (see each section for its command line). Each
script rewrites only its own section, between the BEGIN / END comment lines named after
it; text outside those markers is kept. Numbers are medians over repeats with the
range (min–max) in brackets; contenders of one table ran interleaved in one process run.

Latest run's machine: {machine}
"""


_BEGIN = re.compile(r"^<!-- BEGIN ([\w.-]+) -->[ \t]*$", re.MULTILINE)


def _blocks(text: str) -> list[tuple[str | None, str]]:
    """The file as (section name, or None for loose text; text) blocks, in order.

    Markers count only on lines of their own; a BEGIN without its END is loose text."""
    out: list[tuple[str | None, str]] = []
    pos = 0
    while m := _BEGIN.search(text, pos):
        end = re.compile(rf"^<!-- END {re.escape(m.group(1))} -->[ \t]*$", re.MULTILINE)
        e = end.search(text, m.end())
        if e is None:
            break
        if text[pos : m.start()].strip():
            out.append((None, text[pos : m.start()].strip("\n")))
        out.append((m.group(1), text[m.end() : e.start()].strip("\n")))
        pos = e.end()
    if text[pos:].strip():
        out.append((None, text[pos:].strip("\n")))
    return out


def _render(blocks: list[tuple[str | None, str]]) -> str:
    parts = []
    for name, body in blocks:
        if name is None:
            parts.append(body)
        else:
            parts.append(f"<!-- BEGIN {name} -->\n{body}\n<!-- END {name} -->")
    return "\n\n".join(parts) + "\n"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock = path.with_name(path.name + ".lock")
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    with suppress(OSError):
        lock.unlink()


def write_section(name: str, body: str, machine: str, path: Path = RESULTS) -> None:
    """Replace section `name` of RESULTS.md with `body` (appended when new); refresh the header.

    Other sections and any text outside the markers are kept as they are. The write is
    atomic (temporary file, then rename) and locked against another script writing at once.
    """
    with _locked(path):
        old = path.read_text(encoding="utf-8") if path.exists() else ""
        blocks = _blocks(old)
        header = _HEADER.format(machine=machine).strip("\n")
        replaced = {_HEADER_NAME: False, name: False}
        for i, (key, _) in enumerate(blocks):
            if key == _HEADER_NAME:
                blocks[i] = (key, header)
                replaced[_HEADER_NAME] = True
            elif key == name:
                blocks[i] = (key, body.strip("\n"))
                replaced[name] = True
        if not replaced[_HEADER_NAME]:
            blocks.insert(0, (_HEADER_NAME, header))
        if not replaced[name]:
            blocks.append((name, body.strip("\n")))
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(_render(blocks), encoding="utf-8")
        os.replace(tmp, path)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def order_sections(names: Sequence[str], path: Path = RESULTS) -> None:
    """Put the named sections (those present) right after the header, in the given order;
    other sections and loose text keep their relative order after them."""
    with _locked(path):
        if not path.exists():
            return
        blocks = _blocks(path.read_text(encoding="utf-8"))
        rank = {name: i for i, name in enumerate([_HEADER_NAME, *names])}
        first = sorted((b for b in blocks if b[0] in rank), key=lambda b: rank[str(b[0])])
        rest = [b for b in blocks if b[0] not in rank]
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(_render(first + rest), encoding="utf-8")
        os.replace(tmp, path)


def emit(section: str, text: str, machine: str, results: Path, write: bool = True) -> None:
    """Print a finished section, and (unless `write` is off) put it into the results file."""
    print("\n" + text)
    if write:
        write_section(section, text, machine, results)
        progress(f"wrote section {section!r} of {results}")
