"""What every e5 training tool does before it trains: one-sentence flag errors, number flags,
the device and base checks, the run directory with its saved hyperparameters, the prepared data.

Shared by tools/train_e5_heads.py, tools/tapt_e5.py, soup_e5_heads.py and ensemble_e5_heads.py.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, NoReturn

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))

import e5_heads_data as hd  # noqa: E402
from train_default_models import cached_data  # noqa: E402


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


def open_workdir(a: argparse.Namespace, keys: tuple[str, ...], added: dict) -> Path | None:
    """The run's directory, created; hparams.json written on a fresh start (or with
    --allow-change). A started run whose trajectory `keys` differ from the saved ones (a key in
    `added` reads as its value there when an older run lacks it) is refused in one sentence on
    stderr (None), unless --allow-change."""
    work, allow = Path(a.workdir), getattr(a, "allow_change", False)
    if work.exists() and not work.is_dir():
        print(f"--workdir {work} is a file: pass a directory.", file=sys.stderr)
        return None
    work.mkdir(parents=True, exist_ok=True)
    hp_file, hp = work / "hparams.json", dict(vars(a))
    if hp_file.exists():
        saved = json.loads(hp_file.read_text("utf-8"))
        saved.setdefault("split_seed", saved.get("seed"))  # runs from before --split-seed
        for key, value in added.items():
            saved.setdefault(key, value)
        diff = {k: (saved.get(k), hp.get(k)) for k in keys if saved.get(k) != hp.get(k)}
        if diff and not allow:
            print(
                f"{work} was started with other hyperparameters {diff} (saved, now): pass "
                + (
                    "the saved values, a new --workdir, or --allow-change."
                    if hasattr(a, "allow_change")
                    else "the saved values or a new --workdir."
                ),
                file=sys.stderr,
            )
            return None
        if diff:
            print(
                f"--allow-change: continuing with changed hyperparameters {diff} (saved, now)",
                flush=True,
            )
    if not hp_file.exists() or allow:
        hp_file.write_text(json.dumps(hp, indent=1), "utf-8")
    return work


def load_data(a: argparse.Namespace, work: Path) -> dict:
    """The run's tokenized splits (<work>/data.pkl, prepared on the first start)."""
    return cached_data(
        work,
        lambda: hd.prepare(
            a.task, Path(a.base), a.split_seed, a.dev_size, a.heldout_size, a.max_len
        ),
    )
