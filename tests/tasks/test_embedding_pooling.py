"""Issue 14.6: an optimum export without sentence-transformers' pooling files is not silently
CLS-pooled, and sentence_bert_config.json's max_seq_length is the limit sentence-transformers uses."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ernie_deploy
from ernie_deploy.cli.describe import describe
from ernie_deploy.errors import InputTooLongError

TEXTS = ["hello world", "good morning to you", "the weather is good today"]
ST_FILES = ("1_Pooling", "modules.json", "sentence_bert_config.json")


@pytest.fixture(scope="module")
def bare_export(bert_embed: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bert_embed as `optimum-cli export onnx` writes it without sentence-transformers."""
    d = tmp_path_factory.mktemp("bare") / "emb"
    shutil.copytree(bert_embed.path, d)
    for name in ST_FILES:
        target = d / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    return d


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return (a * b).sum(axis=-1)


def test_guessed_pooling_warns_and_mean_matches(
    bert_embed: Any, bare_export: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reference = ernie_deploy.load(bert_embed.path, device="cpu")  # its 1_Pooling says mean
    assert reference.pooling == "mean"
    with caplog.at_level(logging.WARNING, logger="ernie_deploy"):
        guessed = ernie_deploy.load(bare_export, device="cpu")
    warnings = [r.getMessage() for r in caplog.records if "pool" in r.getMessage()]
    assert len(warnings) == 1 and 'pooling="mean"' in warnings[0] and "--pooling" in warnings[0]
    assert guessed.pooling == "cls" and guessed.pooling_guessed
    assert cosine(guessed.vectors(TEXTS), reference.vectors(TEXTS)).max() < 0.99
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ernie_deploy"):
        mean = ernie_deploy.load(bare_export, device="cpu", pooling="mean")
    assert not [r for r in caplog.records if "pool" in r.getMessage()]
    assert cosine(mean.vectors(TEXTS), reference.vectors(TEXTS)).min() >= 0.9999


def test_inspect_says_the_pooling_was_guessed(bert_embed: Any, bare_export: Path) -> None:
    assert "pooling:    cls (guessed" in describe(bare_export)
    assert "pooling:    mean," in describe(bert_embed.path)


def test_sentence_bert_config_sets_the_length(bert_embed: Any, tmp_path: Path) -> None:
    d = tmp_path / "emb"
    shutil.copytree(bert_embed.path, d)
    (d / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 16}))
    predictor = ernie_deploy.load(d, device="cpu")
    assert predictor.engine.max_seq_length == 16  # tokenizer_config.json says 128
    long = " ".join(["hello"] * 30)
    with pytest.raises(InputTooLongError):
        predictor.vectors([long])
    cut = ernie_deploy.load(d, device="cpu", truncate=True).vectors([long])
    tokens = predictor.engine.tokenizer.tokenize([long])[0]
    head = predictor.vectors([long[: int(tokens.offsets[13][1])]])  # its first 14 tokens
    assert np.allclose(cut, head, atol=1e-5)
