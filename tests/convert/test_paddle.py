"""`convert paddle`: static and dygraph Paddle models → model directories equal to Paddle."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ernie_deploy
from ernie_deploy.convert.paddle import convert_paddle, find_source
from ernie_deploy.errors import (
    ConfigError,
    LabelMismatchError,
    ModelNotFoundError,
    OutputExistsError,
    TokenizerNotFoundError,
    VerificationError,
)
from tests import _models
from tests._models import RefModel
from tests.tasks.test_reference_parity import TEXTS, reference_batch

TOL = 1e-4


@pytest.fixture(scope="module")
def static_dirs(
    paddle_ner: RefModel, paddle_cls: RefModel, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The guide's export_model.py output: inference.json + .pdiparams, nothing else."""
    root = tmp_path_factory.mktemp("static")
    return {
        "token_cls": _models.save_static(paddle_ner.path, "token_cls", root / "ner"),
        "seq_cls": _models.save_static(paddle_cls.path, "seq_cls", root / "cls"),
    }


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name)


def test_static_token_cls_equals_paddle(
    static_dirs: dict[str, Path], paddle_ner: RefModel, tmp_path: Path
) -> None:
    src = static_dirs["token_cls"]
    assert find_source(src).kind == "static"
    report = convert_paddle(
        src, tmp_path / "ner", tokenizer_dir=paddle_ner.path, labels=",".join(paddle_ner.labels)
    )
    assert report.parity.passed and report.parity.max_abs_diff <= TOL
    assert report.parity.argmax_agreement == 1.0
    assert report.task == "token_cls" and report.labels == paddle_ner.labels
    assert {"model.onnx", "vocab.txt", "ernie_deploy.json"} <= {
        p.name for p in (tmp_path / "ner").iterdir()
    }
    ner = ernie_deploy.load(tmp_path / "ner")
    assert isinstance(ner, ernie_deploy.TokenClassifier)
    _, logits, toks, prefixes = reference_batch(paddle_ner, ner, TEXTS)
    for i, mine in enumerate(ner.token_logits(TEXTS)):
        theirs = logits[i, prefixes[i] : prefixes[i] + len(toks[i].ids)]
        assert np.abs(mine - theirs).max() <= TOL
    original = ernie_deploy.load(paddle_ner.path)
    assert ner(TEXTS) == original(TEXTS)
    assert _leftovers(tmp_path) == []


def test_static_seq_cls_equals_paddle(
    static_dirs: dict[str, Path], paddle_cls: RefModel, tmp_path: Path
) -> None:
    label_file = tmp_path / "labels.txt"
    label_file.write_text("\n".join(paddle_cls.labels) + "\n", encoding="utf-8")
    program = static_dirs["seq_cls"] / "inference.json"  # the program file works as SRC too
    report = convert_paddle(
        program, tmp_path / "cls", task="seq_cls", tokenizer_dir=paddle_cls.path,
        labels=str(label_file),
    )  # fmt: skip
    assert report.parity.max_abs_diff <= TOL
    cls = ernie_deploy.load(tmp_path / "cls")
    assert isinstance(cls, ernie_deploy.SequenceClassifier)
    assert cls.labels == paddle_cls.labels
    _, logits, _, _ = reference_batch(paddle_cls, cls, TEXTS)
    assert np.abs(cls.logits(TEXTS) - logits).max() <= TOL
    assert [r.label for r in cls(TEXTS)] == [paddle_cls.labels[i] for i in logits.argmax(-1)]


def test_dygraph_checkpoint_is_exported_then_converted(
    paddle_ner: RefModel, tmp_path: Path
) -> None:
    # paddle_ner.path is a PaddleNLP save dir: model_state.pdparams + config.json + vocab.txt
    assert find_source(paddle_ner.path).kind == "dygraph"
    report = convert_paddle(paddle_ner.path, tmp_path / "out", opset=17)
    assert report.labels == paddle_ner.labels  # from config.json's id2label
    assert report.parity.max_abs_diff <= TOL
    ner = ernie_deploy.load(tmp_path / "out")
    assert ner(TEXTS) == ernie_deploy.load(paddle_ner.path)(TEXTS)


def test_failed_verification_leaves_nothing(
    paddle_ner: RefModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ernie_deploy.convert import paddle as paddle_convert

    real = paddle_convert._dygraph_reference

    def drifted(model: object):  # a converter bug: the graph no longer matches Paddle
        run = real(model)
        return lambda feeds: [x + 1e-2 for x in run(feeds)]

    monkeypatch.setattr(paddle_convert, "_dygraph_reference", drifted)
    with pytest.raises(VerificationError, match="max abs diff"):
        convert_paddle(paddle_ner.path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert _leftovers(tmp_path) == []


def test_bad_sources_name_the_fix(
    static_dirs: dict[str, Path], paddle_ner: RefModel, tmp_path: Path
) -> None:
    src = static_dirs["token_cls"]
    with pytest.raises(TokenizerNotFoundError, match="--tokenizer"):  # no vocab in SRC
        convert_paddle(src, tmp_path / "a", task="token_cls", labels="O,B-PER")
    vocab_only = tmp_path / "vocab_only"
    vocab_only.mkdir()
    shutil.copy(paddle_ner.path / "vocab.txt", vocab_only)
    with pytest.raises(ConfigError, match="--labels"):  # neither SRC nor the vocab dir names them
        convert_paddle(src, tmp_path / "b", task="token_cls", tokenizer_dir=vocab_only)
    with pytest.raises(LabelMismatchError, match="7 classes"):
        convert_paddle(src, tmp_path / "c", tokenizer_dir=paddle_ner.path, task="token_cls",
                       labels="O,B-PER,I-PER")  # fmt: skip
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError, match="No Paddle model"):
        convert_paddle(empty, tmp_path / "d")
    (tmp_path / "e").mkdir()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        convert_paddle(src, tmp_path / "e")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e", "empty", "vocab_only"]


def test_cli_convert_then_predict(
    static_dirs: dict[str, Path], paddle_ner: RefModel, tmp_path: Path
) -> None:
    out = tmp_path / "ner"
    cmd = [sys.executable, "-m", "ernie_deploy", "convert", "paddle", str(static_dirs["token_cls"]),
           str(out), "--tokenizer", str(paddle_ner.path), "--labels", ",".join(paddle_ner.labels),
           "--task", "token_cls"]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "parity ONNX Runtime vs Paddle on 8 probe rows: passed" in run.stdout
    assert "argmax agreement 100.00%" in run.stdout
    bad = subprocess.run(
        [*cmd[:5], str(static_dirs["token_cls"]), str(tmp_path / "bad"), "--tokenizer",
         str(paddle_ner.path), "--labels", "O,B-PER", "--task", "token_cls"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1].startswith("error: The model outputs 7 classes")
    assert not (tmp_path / "bad").exists() and _leftovers(tmp_path) == []
    predict = subprocess.run(
        [sys.executable, "-m", "ernie_deploy", "predict", str(out), "北京的涮肉"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert predict.returncode == 0, predict.stderr
