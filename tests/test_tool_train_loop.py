"""The training loop both trainers run (tools/train_default_models.py on Paddle, tools/e5_trainer.py
on PyTorch): a run stopped part-way and resumed with the same command ends with the same weights
as one that ran straight through, and a finished run leaves best/, final/, DONE and a history that
matches its state, with no half-written directory behind."""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))


def sentiment_data(vocab: int) -> dict:
    """Train / dev / held-out splits of 12 random sentiment examples each, ids in [5, vocab)."""
    rng = np.random.default_rng(0)
    examples = [
        (np.concatenate(([0], rng.integers(5, vocab, size=n), [2])).astype(np.int64), int(n % 2))
        for n in rng.integers(3, 12, size=36)
    ]
    return {
        name: {"examples": examples[k : k + 12], "texts": [f"{name} {i}" for i in range(12)]}
        for name, k in (("train", 0), ("dev", 12), ("heldout", 24))
    }


def finished_run(make: Callable[[Path, int], Any], work: Path) -> None:
    """What any finished run leaves in its workdir."""
    assert (work / "DONE").exists()
    for name in ("best", "final"):
        info = json.loads((work / name / "training_info.json").read_text("utf-8"))
        assert info["labels"] == ["negative", "positive"]
    assert not [p for p in work.rglob("*") if p.name.endswith((".tmp", ".old"))]
    trainer = make(work, 0)
    assert trainer.run() == 0  # nothing left to do: the finished state is what it loads
    history = [
        json.loads(line) for line in (work / "history.jsonl").read_text("utf-8").splitlines()
    ]
    assert history == trainer.state["history"]
    assert [r["epoch"] for r in history if r["kind"] == "eval"] == [1.0, 2.0]
    assert "schedule already complete" in (work / "train.log").read_text("utf-8")


def same_trajectory(make: Callable[..., Any], weights: Callable[[Path], dict], tmp: Path):
    straight, split = tmp / "straight", tmp / "split"
    assert make(straight, 0).run() == 0
    first = make(split, 3)
    assert first.run() == 0  # stopped at step 3 with a checkpoint
    assert first.state["step"] == 3 and not (split / "DONE").exists()
    assert (split / "checkpoints" / "latest").read_text("utf-8") == "step-00000003"
    second = make(split, 0)
    assert second.run() == 0
    assert "resumed from step-00000003" in (split / "train.log").read_text("utf-8")
    finished_run(make, straight)
    finished_run(make, split)
    a, b = weights(straight / "final"), weights(split / "final")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    start = {k: np.array(v.numpy()) for k, v in make(tmp / "fresh", 0).model.state_dict().items()}
    assert start.keys() & a.keys()
    assert any(not np.array_equal(start[k], a[k]) for k in start.keys() & a.keys())  # it trained
    # --allow-change to more epochs: the finished run trains on from its last checkpoint
    longer = make(straight, 0, 3)
    assert longer.run() == 0
    assert longer.state["epoch"] == 3 and (straight / "DONE").exists()
    assert json.loads((straight / "final" / "training_info.json").read_text("utf-8"))["epoch"] == 3
    assert "extending the finished schedule to 3 epochs" in (straight / "train.log").read_text(
        "utf-8"
    )


class OwnNames:
    """A Paddle trainer in a name space of its own, as each run's own process gives it: Paddle
    names parameters (and the optimizer's state after them) from one counter per process."""

    def __init__(self, paddle: Any, build: Callable[[], Any]) -> None:
        self.names = paddle.base.unique_name.UniqueNameGenerator()
        with paddle.utils.unique_name.guard(self.names):
            self.trainer = build()
        self.paddle = paddle

    def __getattr__(self, name: str) -> Any:
        return getattr(self.trainer, name)

    def run(self) -> int:
        with self.paddle.utils.unique_name.guard(self.names):
            return int(self.trainer.run())


def test_the_paddle_trainer_resumes_on_the_same_trajectory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paddle = pytest.importorskip("paddle")
    pytest.importorskip("paddlenlp")
    import train_default_models as tdm

    vocab = tmp_path / "vocab.txt"
    vocab.write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"好差很不错"]), "utf-8"
    )
    monkeypatch.setattr(tdm, "vocab_file", lambda: vocab)
    data = sentiment_data(60)
    flags = ["--layers", "1", "--hidden", "16", "--heads", "2", "--ffn", "32", "--batch-size", "4"]
    flags += ["--eval-minutes", "0", "--log-seconds", "0", "--dev-size", "12"]

    def make(work: Path, max_steps: int, epochs: int = 2) -> Any:
        work.mkdir(parents=True, exist_ok=True)
        args = tdm.parse_args(
            ["sentiment", "--workdir", str(work), "--max-steps", str(max_steps), *flags]
            + ["--epochs", str(epochs)]
        )
        return OwnNames(paddle, lambda: tdm.Trainer(args, data))

    def weights(model_dir: Path) -> dict:
        state = paddle.load(str(model_dir / "model_state.pdparams"))
        return {k: np.asarray(v) for k, v in state.items()}

    same_trajectory(make, weights, tmp_path)


def test_the_e5_trainer_resumes_on_the_same_trajectory(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import train_e5_heads
    from e5_trainer import E5Trainer
    from safetensors.torch import load_file

    from tests.test_tool_soup import tiny_member

    base = tiny_member(tmp_path / "base", 1, layers=2)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        (base / name).write_text("{}", "utf-8")
    data = sentiment_data(40)

    def make(work: Path, max_steps: int, epochs: int = 2) -> Any:
        work.mkdir(parents=True, exist_ok=True)
        args: argparse.Namespace = train_e5_heads.parse_args(
            ["sentiment", "--workdir", str(work), "--base", str(base), "--layers", "0"]
            + ["--epochs", str(epochs), "--batch-size", "4", "--eval-minutes", "0"]
            + ["--log-seconds", "0.001"]
            + ["--dev-size", "12", "--max-steps", str(max_steps), "--threads", "1"]
        )
        torch.set_num_threads(1)
        return E5Trainer(args, pickle.loads(pickle.dumps(data)))

    def weights(model_dir: Path) -> dict:
        return {k: v.numpy() for k, v in load_file(str(model_dir / "model.safetensors")).items()}

    same_trajectory(make, weights, tmp_path)
