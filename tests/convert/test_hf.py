"""`convert hf`: save_pretrained directories (BERT, ERNIE, XLM-R) → model dirs equal to PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ernie_deploy
from ernie_deploy.convert.hf import convert_hf
from ernie_deploy.errors import ConfigError, ModelNotFoundError, VerificationError
from ernie_deploy.tasks.embedding import pool
from tests import _models
from tests._models import RefModel
from tests.tasks.test_reference_parity import TEXTS, reference_batch

TOL = 1e-4

pytest.importorskip("optimum.exporters.onnx")


def _source(tmp_path: Path, name: str, task: str, labels: tuple[str, ...] = (), **kw: object):
    """A save_pretrained directory (weights kept), the input a user has."""
    return _models.build_bert(tmp_path / name, task, labels, keep_weights=True, **kw)  # type: ignore[arg-type]


def test_bert_token_cls_equals_pytorch(tmp_path: Path) -> None:
    src = _source(tmp_path, "src", "token_cls", _models.NER_LABELS)
    (src.path / "model.onnx").unlink()  # a plain save_pretrained dir has no graph
    report = convert_hf(src.path, tmp_path / "out")
    assert report.task == "token_cls" and report.labels == _models.NER_LABELS
    assert report.parity.max_abs_diff <= TOL and report.parity.argmax_agreement == 1.0
    ner = ernie_deploy.load(tmp_path / "out")
    assert isinstance(ner, ernie_deploy.TokenClassifier)
    _, logits, toks, prefixes = reference_batch(src, ner, TEXTS)
    for i, mine in enumerate(ner.token_logits(TEXTS)):
        theirs = logits[i, prefixes[i] : prefixes[i] + len(toks[i].ids)]
        assert np.abs(mine - theirs).max() <= TOL


@pytest.mark.parametrize("family", ["Bert", "Ernie"])
def test_seq_cls_equals_pytorch(family: str, tmp_path: Path) -> None:
    src = _source(tmp_path, "src", "seq_cls", _models.BERT_CLS_LABELS, family=family)
    report = convert_hf(src.path, tmp_path / "out", task="text-classification", opset=14)
    assert report.opset == 14 and report.parity.max_abs_diff <= TOL
    cls = ernie_deploy.load(tmp_path / "out")
    assert isinstance(cls, ernie_deploy.SequenceClassifier)
    assert cls.labels == _models.BERT_CLS_LABELS
    _, logits, _, _ = reference_batch(src, cls, TEXTS)
    assert np.abs(cls.logits(TEXTS) - logits).max() <= TOL


def test_sentence_transformers_embedding_keeps_pooling(tmp_path: Path) -> None:
    src = _source(tmp_path, "src", "embedding")
    report = convert_hf(src.path, tmp_path / "out", task="feature-extraction")
    assert report.parity.argmax_agreement is None and report.parity.max_abs_diff <= TOL
    assert (tmp_path / "out" / "1_Pooling" / "config.json").is_file()
    emb = ernie_deploy.load(tmp_path / "out")
    assert isinstance(emb, ernie_deploy.Embedder) and emb.pooling == "mean"
    feats, hidden, _, _ = reference_batch(src, emb, TEXTS)
    expected = pool(hidden, feats["attention_mask"], "mean")
    got = np.stack([r.vector for r in emb(TEXTS)])
    assert np.abs(got - expected).max() <= TOL


def test_xlmr_cross_encoder_becomes_reranker(tmp_path: Path) -> None:
    src: RefModel = _models.build_xlmr_rerank(tmp_path / "src", keep_weights=True)
    report = convert_hf(src.path, tmp_path / "out")
    assert report.task == "rerank" and report.parity.max_abs_diff <= TOL
    rr = ernie_deploy.load(tmp_path / "out")
    assert isinstance(rr, ernie_deploy.Reranker)
    docs = ["the game is in new york", "hello", "北京的涮肉"]
    _, logits, _, _ = reference_batch(src, rr, ["where is the game"] * 3, docs)
    got = rr("where is the game", docs)
    assert [h.index for h in got.hits] == list(np.argsort(-logits[:, 0], kind="stable"))


def test_failures_leave_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _source(tmp_path, "src", "token_cls", ("LABEL_0", "LABEL_1", "LABEL_2"))
    with pytest.raises(ConfigError, match="--labels"):  # placeholder names are no labels
        convert_hf(src.path, tmp_path / "out")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError, match="save_pretrained"):
        convert_hf(empty, tmp_path / "out")
    from ernie_deploy.convert import hf

    real = hf._torch_run
    monkeypatch.setattr(hf, "_torch_run", lambda *a: real(*a) + 1e-3)
    with pytest.raises(VerificationError):
        convert_hf(src.path, tmp_path / "out", labels="O,B-X,I-X")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "src"]
