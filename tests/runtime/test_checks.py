"""The checks load() runs before a model answers (runtime.checks), and inspect saying what they refuse."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ernie_deploy
from ernie_deploy import errors
from ernie_deploy.cli import app
from ernie_deploy.runtime.bundled import bundled_models
from ernie_deploy.runtime.checks import position_limit, read_graph
from tests._cli import one_error as _one_error
from tests._models import RefModel

runner = CliRunner()


def _bundled(name: str) -> Path:
    found = {m.name: m.path for m in bundled_models()}
    if name not in found:
        pytest.skip(f"bundled model {name} is not in this checkout")
    return Path(found[name])


def test_position_limit_is_read_from_the_graph(
    paddle_ner: RefModel, bert_ner: RefModel, xlmr_rerank: RefModel
) -> None:
    assert position_limit(read_graph(paddle_ner.onnx)) == 512  # paddle2onnx: CumSum positions
    bert = json.loads((bert_ner.path / "config.json").read_text("utf-8"))
    assert position_limit(read_graph(bert_ner.onnx)) == bert["max_position_embeddings"]
    # XLM-R counts positions from padding_idx + 1: a 130-row table holds 128 tokens.
    xlmr = json.loads((xlmr_rerank.path / "config.json").read_text("utf-8"))
    rows = xlmr["max_position_embeddings"]
    assert position_limit(read_graph(xlmr_rerank.onnx)) == rows - xlmr["pad_token_id"] - 1


def test_max_seq_length_beyond_the_position_table_is_refused_at_load(
    paddle_ner: RefModel, xlmr_rerank: RefModel
) -> None:
    with pytest.raises(errors.ConfigError, match="--max-seq-length 512 .*or less"):
        ernie_deploy.load(paddle_ner.path, max_seq_length=513)
    assert ernie_deploy.load(paddle_ner.path, max_seq_length=512)(["北京"])
    limit = position_limit(read_graph(xlmr_rerank.onnx))
    assert limit is not None
    with pytest.raises(errors.ConfigError, match=f"{limit} positions"):
        ernie_deploy.load(xlmr_rerank.path, max_seq_length=limit + 1)
    # At exactly the limit the longest pair still runs: the offset is right, not just safe.
    reranker = ernie_deploy.load(xlmr_rerank.path, max_seq_length=limit, truncate=True)
    assert len(reranker.rerank("beijing", ["beijing " * 300]).hits) == 1
    result = runner.invoke(app, ["predict", str(paddle_ner.path), "--max-seq-length", "600", "x"])
    assert "600 is more than the 512 positions" in _one_error(result)


def test_infer_py_refuses_it_too(paddle_ner: RefModel) -> None:
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run(
        [sys.executable, str(root / "infer.py"), "--task_name", "token_cls", "--model_path",
         str(paddle_ner.onnx), "--max_seq_length", "600"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode != 0 and "Traceback" not in run.stderr
    lines = [x for x in run.stderr.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "512 positions" in lines[0], run.stderr


def test_embedding_task_on_a_classifier_is_refused() -> None:
    sentiment = _bundled("sentiment-zh")
    with pytest.raises(errors.UnsupportedGraphError, match="class logits"):
        ernie_deploy.load(sentiment, task="embedding")
    result = runner.invoke(app, ["predict", str(sentiment), "--task", "embedding", "很好"])
    assert "load it as seq_cls" in _one_error(result)


def test_gbk_vocab_gets_one_sentence(lookup_ner: Path, tmp_path: Path) -> None:
    model = tmp_path / "gbk"
    shutil.copytree(lookup_ner, model)
    vocab = model / "vocab.txt"
    vocab.write_bytes(vocab.read_text("utf-8").encode("gbk", errors="replace"))
    with pytest.raises(errors.ConfigError, match="re-save it as UTF-8"):
        ernie_deploy.load(model)
    assert "not UTF-8" in _one_error(runner.invoke(app, ["predict", str(model), "北京"]))


def _labels_mismatch(model: Path) -> None:
    (model / "ernie_deploy.json").write_text(
        json.dumps({"task": "token_cls", "labels": ["O", "B-PER", "I-PER"]}), "utf-8"
    )


def _empty_vocab(model: Path) -> None:
    (model / "vocab.txt").write_text("", "utf-8")


def _gbk_vocab(model: Path) -> None:
    vocab = model / "vocab.txt"
    vocab.write_bytes(vocab.read_text("utf-8").encode("gbk", errors="replace"))


def _no_tokenizer(model: Path) -> None:
    for name in ("vocab.txt", "tokenizer.json"):
        (model / name).unlink(missing_ok=True)


INSPECT_CASES = {
    "labels_vs_outputs": (_labels_mismatch, "3 labels were given"),
    "no_tokenizer": (_no_tokenizer, "No tokenizer"),  # the graph is still listed
    "empty_vocab": (_empty_vocab, "is empty"),
    "gbk_vocab": (_gbk_vocab, "not UTF-8"),
}


@pytest.mark.parametrize("case", sorted(INSPECT_CASES))
def test_inspect_says_what_load_refuses(case: str, lookup_ner: Path, tmp_path: Path) -> None:
    model = tmp_path / case
    shutil.copytree(lookup_ner, model)
    spoil, words = INSPECT_CASES[case]
    spoil(model)
    with pytest.raises(errors.ErnieDeployError, match=words):
        ernie_deploy.load(model)
    result = runner.invoke(app, ["inspect", str(model)])
    assert result.exit_code == 0, result.output
    refused = [x for x in result.stdout.splitlines() if x.startswith("load would refuse:")]
    assert len(refused) == 1 and words in refused[0], result.stdout
    assert "outputs:" in result.stdout and "opset:" in result.stdout


def test_inspect_flags_an_embedding_config_on_a_classifier(tmp_path: Path) -> None:
    model = tmp_path / "sentiment"
    shutil.copytree(_bundled("sentiment-zh"), model)
    (model / "ernie_deploy.json").write_text(json.dumps({"task": "embedding"}), "utf-8")
    result = runner.invoke(app, ["inspect", str(model)])
    assert result.exit_code == 0, result.output
    assert "load would refuse: model.onnx outputs class logits" in result.stdout


def test_inspect_says_ok_when_load_accepts(lookup_ner: Path) -> None:
    result = runner.invoke(app, ["inspect", str(lookup_ner)])
    assert result.exit_code == 0, result.output
    assert "load:       ok" in result.stdout


def test_inspect_counts_external_data_in_the_model_size() -> None:
    result = runner.invoke(app, ["inspect", "e5-small-zh-en"])
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0]  # model.onnx is 0.1 MB of graph; the weights lie beside
    size = float(first.split("(")[1].split(" MB")[0])
    assert size > 20 and "with 2 external data file(s)" in first
