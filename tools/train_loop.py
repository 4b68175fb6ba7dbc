"""The resumable training loop both trainers run: tools/train_default_models.py (Paddle) and
tools/e5_trainer.py (PyTorch), with the run directory and data cache their tools open.

Batch order and dropout are derived from (seed, epoch) and (seed, step), so a run split across
sessions follows the same trajectory as one uninterrupted run. Checkpoints are written every
``--checkpoint-minutes``, at each epoch end and on SIGTERM/SIGINT, each through a ``.tmp``
directory and a rename, the last two kept; ``best/`` (by dev) and ``final/`` are swapped in the
same way. A subclass supplies the framework: ``step``, ``evaluate``, ``demo``, ``save_model``,
``write_checkpoint``, ``read_checkpoint`` and ``current_lr``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


class TrainLoop:
    """What both trainers share; the subclass's __init__ sets args, data, work, ner, labels,
    model, train_set, lengths, steps_per_epoch and total_steps, and calls start_state()."""

    args: argparse.Namespace
    data: dict
    work: Path
    ner: bool
    labels: tuple[str, ...]
    model: Any
    train_set: list
    lengths: np.ndarray
    steps_per_epoch: int
    total_steps: int

    def start_state(self) -> None:
        self.state: dict[str, Any] = {
            "epoch": 0,
            "batch": 0,
            "step": 0,
            "train_seconds": 0.0,
            "best": None,
            "history": [],
        }
        self.stop_signal = 0

    # -- what the framework supplies
    def step(self, batch: list) -> float:
        """One optimiser step on these training examples, its dropout seeded by the step alone;
        the loss."""
        raise NotImplementedError

    def evaluate(self, split: str) -> dict:
        raise NotImplementedError

    def demo(self) -> list:
        raise NotImplementedError

    def save_model(self, tmp: Path) -> dict:
        """Write the model and tokenizer files into `tmp`; what training_info.json adds."""
        raise NotImplementedError

    def write_checkpoint(self, tmp: Path) -> None:
        """Weights, optimiser, schedule, random states and self.state, into `tmp`."""
        raise NotImplementedError

    def read_checkpoint(self, d: Path) -> None:
        """The inverse of write_checkpoint: everything back, self.state included."""
        raise NotImplementedError

    def current_lr(self) -> float:
        raise NotImplementedError

    # -- batches: deterministic in (seed, epoch); length-bucketed
    def batches(self, epoch: int) -> list[np.ndarray]:
        bs = self.args.batch_size
        rng = np.random.default_rng([self.args.seed, epoch])
        perm = rng.permutation(len(self.lengths))
        out = []
        for b0 in range(0, len(perm), bs * 50):
            bucket = perm[b0 : b0 + bs * 50]
            bucket = bucket[np.argsort(self.lengths[bucket], kind="stable")]
            out += [bucket[i : i + bs] for i in range(0, len(bucket), bs)]
        order = rng.permutation(len(out))
        return [out[i] for i in order]

    # -- logging
    def epoch_float(self) -> float:
        return round(self.state["step"] / self.steps_per_epoch, 3)

    def log(self, msg: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}"
        print(line, flush=True)
        with open(self.work / "train.log", "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def record(self, rec: dict) -> None:
        rec = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "step": self.state["step"],
            "epoch": self.epoch_float(),
            "train_minutes": round(self.state["train_seconds"] / 60, 2),
            **rec,
        }
        self.state["history"].append(rec)
        with open(self.work / "history.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        if rec["kind"] == "eval":
            self.log(
                "eval "
                + json.dumps(
                    {k: v for k, v in rec.items() if k in ("dev", "test", "heldout", "demo")},
                    ensure_ascii=False,
                )
            )

    def safe_eval(self, full: bool) -> None:
        """Evaluate and keep the best; a failure here is logged, never fatal to the run."""
        try:
            self.eval_and_keep_best(full)
        except Exception:  # noqa: BLE001
            import traceback

            self.log("evaluation failed, training goes on:\n" + traceback.format_exc())
            self.model.train()

    def eval_and_keep_best(self, full: bool) -> None:
        dev = self.evaluate("dev")
        record = {"kind": "eval", "dev": dev, "demo": self.demo()}
        if full:
            record["test" if self.ner else "heldout"] = self.evaluate(
                "test" if self.ner else "heldout"
            )
        score = dev["viterbi"]["f1"] if self.ner else dev["accuracy"]
        self.record(record)
        trained_on_dev = getattr(self.args, "train_on_dev", False)  # dev then chooses nothing
        if (
            self.args.dev_size
            and not trained_on_dev
            and (self.state["best"] is None or score > self.state["best"]["score"])
        ):
            self.state["best"] = {
                "score": score,
                "step": self.state["step"],
                "epoch_float": self.epoch_float(),
            }
            self.export("best", record)

    def export(self, name: str, record: dict) -> None:
        """The model, its tokenizer files and training_info.json into <workdir>/<name>, written
        in <name>.tmp and swapped in; a failure leaves the previous <name> and no .tmp."""
        final, tmp, old = self.work / name, self.work / f"{name}.tmp", self.work / f"{name}.old"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            info = {
                "step": self.state["step"],
                "epoch": self.epoch_float(),
                "train_minutes": round(self.state["train_seconds"] / 60, 1),
                "hparams": vars(self.args),
                "metrics": record,
                **self.save_model(tmp),
            }
            (tmp / "training_info.json").write_text(
                json.dumps(info, ensure_ascii=False, indent=1), "utf-8"
            )
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        self.log(f"saved {name}/ (step {self.state['step']})")

    # -- checkpoints
    def save_checkpoint(self) -> None:
        ck = self.work / "checkpoints"
        name = f"step-{self.state['step']:08d}"
        tmp = ck / (name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.write_checkpoint(tmp)
        shutil.rmtree(ck / name, ignore_errors=True)
        os.replace(tmp, ck / name)
        (ck / "latest.tmp").write_text(name, "utf-8")
        os.replace(ck / "latest.tmp", ck / "latest")
        for stale in sorted(
            p for p in ck.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp")
        )[:-2]:
            shutil.rmtree(stale, ignore_errors=True)
        self.log(f"checkpoint {name} (epoch {self.state['epoch']} batch {self.state['batch']})")

    def load_checkpoint(self) -> bool:
        latest = self.work / "checkpoints" / "latest"
        if not latest.exists():
            return False
        d = self.work / "checkpoints" / latest.read_text("utf-8").strip()
        self.read_checkpoint(d)
        # history.jsonl may hold records written after this checkpoint: rewrite it from the state.
        tmp = self.work / "history.jsonl.tmp"
        tmp.write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.state["history"]),
            "utf-8",
        )
        os.replace(tmp, self.work / "history.jsonl")
        self.log(
            f"resumed from {d.name}: epoch {self.state['epoch']} batch {self.state['batch']} "
            f"step {self.state['step']} lr {self.current_lr():.3e} "
            f"train_minutes {self.state['train_seconds'] / 60:.1f}"
        )
        return True

    # -- the loop
    def start(self) -> int:
        """Log this process and its flags, then run (or resume) the schedule."""
        self.log(f"start pid {os.getpid()} hparams {json.dumps(vars(self.args))}")
        return self.run()

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda num, frame: setattr(self, "stop_signal", num))
        if not self.load_checkpoint():
            self.log(
                f"fresh start: {self.steps_per_epoch} steps/epoch x {self.args.epochs} epochs = "
                f"{self.total_steps} steps"
            )
        a, st = self.args, self.state
        if (self.work / "DONE").exists():
            if st["epoch"] >= a.epochs:
                self.log("schedule already complete (DONE); nothing to do")
                return 0
            self.log(f"extending the finished schedule to {a.epochs} epochs (--allow-change)")
            (self.work / "DONE").unlink()
        t_start = t_ckpt = t_eval = t_log = time.time()
        seen, losses = 0, []
        self.model.train()
        while st["epoch"] < a.epochs:
            batches = self.batches(st["epoch"])
            while st["batch"] < len(batches):
                t_step = time.time()
                value = self.step([self.train_set[i] for i in batches[st["batch"]]])
                if not math.isfinite(value):
                    self.log(
                        f"non-finite loss {value} at step {st['step']}: stopping without checkpoint"
                    )
                    return 3
                losses.append(value)
                seen += len(batches[st["batch"]])
                st["batch"] += 1
                st["step"] += 1
                st["train_seconds"] += time.time() - t_step
                now = time.time()
                if now - t_log >= a.log_seconds:
                    rate, lr = seen / (now - t_log), self.current_lr()
                    self.record(
                        {
                            "kind": "train",
                            "loss": round(float(np.mean(losses)), 4),
                            "lr": lr,
                            "sent_per_s": round(rate, 1),
                        }
                    )
                    self.log(
                        f"epoch {self.epoch_float():.3f} step {st['step']}/{self.total_steps} "
                        f"loss {np.mean(losses):.4f} lr {lr:.2e} {rate:.1f} sent/s"
                    )
                    t_log, seen, losses = now, 0, []
                if (
                    a.eval_minutes
                    and now - t_eval >= a.eval_minutes * 60
                    and st["batch"] < len(batches)
                ):
                    self.safe_eval(full=False)
                    t_eval = t_log = time.time()
                    seen = 0
                stop = (
                    bool(self.stop_signal)
                    or (a.max_steps and st["step"] >= a.max_steps)
                    or (a.minutes and time.time() - t_start >= a.minutes * 60)
                )
                if stop or time.time() - t_ckpt >= a.checkpoint_minutes * 60:
                    self.save_checkpoint()
                    t_ckpt = time.time()
                if stop:
                    why = f"signal {self.stop_signal}" if self.stop_signal else "time/step budget"
                    self.log(
                        f"stopped ({why}) at step {st['step']}; re-run the same command to resume"
                    )
                    return 0
            st["epoch"] += 1
            st["batch"] = 0
            self.log(f"epoch {st['epoch']} done")
            self.safe_eval(full=True)
            t_eval = t_log = time.time()
            seen, losses = 0, []
            self.save_checkpoint()
            t_ckpt = time.time()
        self.export("final", self.state["history"][-1] if self.state["history"] else {})
        (self.work / "DONE").write_text(
            json.dumps({"step": st["step"], "best": st["best"]}), "utf-8"
        )
        self.log(f"schedule complete: best {st['best']}")
        return 0


def cached_data(work: Path, prepare: Callable[[], dict]) -> dict:
    """The run's prepared data: <work>/data.pkl, or prepare() written there (through a .tmp
    file and a rename) with its facts in data_facts.json."""
    data_file = work / "data.pkl"
    if data_file.exists():
        with open(data_file, "rb") as f:
            return pickle.load(f)
    t0 = time.time()
    data = prepare()
    with open(work / "data.pkl.tmp", "wb") as f:
        pickle.dump(data, f)
    os.replace(work / "data.pkl.tmp", data_file)
    (work / "data_facts.json").write_text(
        json.dumps(data["facts"], ensure_ascii=False, indent=1), "utf-8"
    )
    print(
        f"data prepared in {time.time() - t0:.0f}s: {json.dumps(data['facts'], ensure_ascii=False)}",
        flush=True,
    )
    return data


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
