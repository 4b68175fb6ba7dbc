"""Peak RSS of a benchmark contender, measured in a fresh process per contender (`rss_probe`).

The process imports what the contender needs, loads it, predicts the longest texts (one full
batch, `_harness.probe_texts`) once, and reports its VmHWM. That is the memory a deployment of
that contender needs, framework included; in-process deltas would be blurred by the other
contenders' allocations. A comparison module offers `probe(table, contender, quick)`, which
returns the texts and a factory of the loaded contender.
"""

from __future__ import annotations

import argparse
import importlib
import resource
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import _common as c
import _harness as h

RSS_GRACE_S = 60  # RSS probes run after the timings and may start this long past the budget


def peak_rss_kb() -> float:
    """This process's peak RSS in KiB: VmHWM (ru_maxrss survives exec: it would report the
    parent's peak in a child started by a big process)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def rss_probe(module: str, table: str, contender: str, quick: bool, timeout: float = 300) -> float:
    """Peak RSS (MB) of a new process that loads one contender and predicts the texts once."""
    cmd = [sys.executable, str(Path(__file__)), module, table, contender]
    cmd += ["--quick"] if quick else []
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        c.progress(f"RSS probe {module} {table} {contender}: timed out after {timeout:.0f} s")
        return float("nan")
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or "").strip().splitlines()[-3:]
        c.progress(f"RSS probe {module} {table} {contender} failed: {' | '.join(tail)}")
        return float("nan")
    for line in out.stdout.splitlines():
        if line.startswith("PEAK_RSS_MB "):
            return float(line.split()[1])
    return float("nan")


def rss_column(
    module: str, table: str, names: Sequence[str], args: argparse.Namespace
) -> dict[str, float] | None:
    """`rss_probe` for each name, one after another (never beside a timed run); None when
    probes are off; a probe that would start past the deadline is skipped (NaN)."""
    if args.no_rss:
        return None
    out = {}
    for name in names:
        if h.past_deadline(args, grace=RSS_GRACE_S):
            c.progress(f"peak RSS {table} / {name}: skipped (time budget)")
            out[name] = float("nan")
            continue
        out[name] = rss_probe(module, table, name, args.quick)
        c.progress(f"peak RSS {table} / {name}: {out[name]:,.0f} MB")
    return out


def _probe_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description="peak RSS of one contender (used by rss_probe)")
    p.add_argument("module")
    p.add_argument("table")
    p.add_argument("contender")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    mod = importlib.import_module(args.module)
    texts, factory = mod.probe(args.table, args.contender, args.quick)
    contender = factory()
    contender.predict(texts)
    print(f"PEAK_RSS_MB {peak_rss_kb() / 1024:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(_probe_main(sys.argv[1:]))
