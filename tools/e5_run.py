"""What every e5 training tool does before it trains: one-sentence flag errors, number flags,
the device and base checks, the prepared data (the run directory is train_loop.open_workdir).

Shared by tools/train_e5_heads.py, tools/tapt_e5.py, soup_e5_heads.py and ensemble_e5_heads.py.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any, NoReturn

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))

import e5_heads_data as hd  # noqa: E402
from train_loop import cached_data  # noqa: E402


def number_arg(
    kind: type, low: float, high: float | None = None, low_ok: bool = False, high_ok: bool = False
) -> Any:
    """An argparse type: a number of `kind` above `low` (or at it, with low_ok), below `high`
    (or at it, with high_ok)."""

    def check(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        inside = value is not None and math.isfinite(value)
        inside = inside and (value >= low if low_ok else value > low)
        if not inside or (high is not None and (value > high if high_ok else value >= high)):
            where = f"{'at least' if low_ok else 'above'} {low:g}" + (
                f" and {'at most' if high_ok else 'below'} {high:g}" if high is not None else ""
            )
            noun = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun} {where}")
        return value

    return check


class OneLineParser(argparse.ArgumentParser):
    """One sentence on a bad flag (no usage block), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}: fix it and run the same command again.\n")


def device_is_usable(device: str) -> bool:
    """True if torch can place a tensor on `device`; otherwise one sentence on stderr."""
    if device == "cpu":
        return True
    import torch

    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as e:
        print(
            f"--device {device} cannot be used ({str(e).splitlines()[0]}): pass --device "
            "cpu or a device this torch build sees.",
            file=sys.stderr,
        )
        return False
    return True


def base_is_a_model(base: str) -> bool:
    """True if `base` holds model weights; otherwise one sentence on stderr."""
    if (Path(base) / "model.safetensors").exists():
        return True
    print(
        f"{base} holds no model.safetensors: run tools/import_e5.py --pruned-out {base} first.",
        file=sys.stderr,
    )
    return False


def load_data(a: argparse.Namespace, work: Path) -> dict:
    """The run's tokenized splits (<work>/data.pkl, prepared on the first start)."""
    return cached_data(
        work,
        lambda: hd.prepare(
            a.task,
            Path(a.base),
            a.split_seed,
            a.dev_size,
            a.heldout_size,
            a.max_len,
            getattr(a, "prompt", ""),
        ),
    )
