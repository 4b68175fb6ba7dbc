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
    monkeypatch.undo()
    # the message names the length asked for, not the 512 a recorded length is capped at
    with pytest.raises(ConfigError, match="max_seq_length 100000 is more than the 128 positions"):
        convert_hf(src.path, tmp_path / "out", labels="O,B-X,I-X", max_seq_length=100_000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "src"]


def _mean_head_source(tmp_path: Path, pooling: str = "mean") -> Path:
    """A tiny two-label XLM-R classifier saved as a user saves it, config.json naming the pooling."""
    import json

    import torch
    import transformers

    src = _models.build_xlmr_rerank(tmp_path / "src", keep_weights=True).path
    (src / "model.onnx").unlink(missing_ok=True)
    config = transformers.AutoConfig.from_pretrained(str(src))
    config.num_labels, config.id2label = 2, {0: "negative", 1: "positive"}
    config.label2id = {"negative": 0, "positive": 1}
    torch.manual_seed(1)
    model = transformers.XLMRobertaForSequenceClassification(config)
    with torch.no_grad():  # no two tensors equal (LayerNorms start at 1 and 0), as after training
        for param in model.parameters():
            param.add_(0.02 * torch.randn_like(param))
    model.save_pretrained(str(src))
    saved = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**saved, "classifier_pooling": pooling}))
    return src


def test_mean_pooled_classifier_reads_the_mean_of_the_tokens(tmp_path: Path) -> None:
    import torch
    import transformers

    from ernie_deploy.tasks.batching import Encoded, pad

    src = _mean_head_source(tmp_path)
    report = convert_hf(src, tmp_path / "out")
    assert report.task == "seq_cls" and report.labels == ("negative", "positive")
    assert "mean-pooled head" in report.source and report.parity.max_abs_diff <= TOL
    cls = ernie_deploy.load(tmp_path / "out")
    assert isinstance(cls, ernie_deploy.SequenceClassifier)
    tok = cls.engine.tokenizer
    feats = pad([Encoded(*tok.build_inputs(t.ids, None)[:2]) for t in tok.tokenize(TEXTS)], 1)
    model = transformers.XLMRobertaForSequenceClassification.from_pretrained(str(src)).eval()
    ids, mask = (torch.from_numpy(feats[k]) for k in ("input_ids", "attention_mask"))
    with torch.no_grad():  # the reference written out: masked mean, dense, tanh, out_proj
        hidden = model.roberta(input_ids=ids, attention_mask=mask)[0].numpy()
        first_token = model(input_ids=ids, attention_mask=mask).logits.numpy()
    m = feats["attention_mask"][..., None].astype(np.float32)
    mean = (hidden * m).sum(1) / m.sum(1)
    head = {k: v.detach().numpy() for k, v in model.classifier.state_dict().items()}
    dense = np.tanh(mean @ head["dense.weight"].T + head["dense.bias"])
    expected = dense @ head["out_proj.weight"].T + head["out_proj.bias"]
    got = cls.logits(TEXTS)
    assert np.abs(got - expected).max() <= TOL
    assert np.abs(got - first_token).max() > 100 * TOL  # the first token alone gives others

    # the GPU's fp16 recipe (fuse, then convert) keeps the appended head's mask cast in fp32
    import onnxruntime as ort

    from ernie_deploy.runtime.fp16_graph import fuse_and_convert

    fp16, _ = fuse_and_convert(tmp_path / "out" / "model.onnx")
    run = ort.InferenceSession(fp16.SerializeToString(), providers=["CPUExecutionProvider"])
    half = run.run(None, {k: feats[k] for k in ("input_ids", "attention_mask")})[0]
    assert np.abs(half - expected).max() <= 1e-2


def test_mean_pooling_needs_a_known_value_and_a_roberta_head(tmp_path: Path) -> None:
    from ernie_deploy.errors import ModelLoadError

    bad = _mean_head_source(tmp_path / "a", pooling="max")
    with pytest.raises(ModelLoadError, match="set it to one of cls, mean"):
        convert_hf(bad, tmp_path / "out")
    import json

    bert = _source(tmp_path, "bert", "seq_cls", _models.BERT_CLS_LABELS).path
    config = json.loads((bert / "config.json").read_text())
    (bert / "config.json").write_text(json.dumps({**config, "classifier_pooling": "mean"}))
    with pytest.raises(ModelLoadError, match="no RoBERTa-style classification head"):
        convert_hf(bert, tmp_path / "out", task="seq_cls")
    assert not (tmp_path / "out").exists()


def test_a_model_that_reads_the_key_itself_is_left_to_transformers() -> None:
    from transformers import ModernBertConfig, XLMRobertaConfig

    from ernie_deploy.convert.hf_mean_head import classifier_pooling

    assert classifier_pooling(ModernBertConfig(classifier_pooling="mean"), "m") == "cls"
    assert classifier_pooling(XLMRobertaConfig(classifier_pooling="mean"), "x") == "mean"
    assert classifier_pooling(XLMRobertaConfig(), "x") == "cls"


def test_a_failed_export_is_one_sentence_without_the_torch_graph(tmp_path: Path) -> None:
    # torch.onnx prints its IR graph from C++ on fd 1 when an export fails
    import subprocess
    import sys

    src = _source(tmp_path, "src", "token_cls", _models.NER_LABELS)
    run = subprocess.run(
        [sys.executable, "-m", "ernie_deploy", "convert", "hf", str(src.path),
         str(tmp_path / "out"), "--opset", "5"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert run.stdout == "", run.stdout[:300]
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "could not export" in errors[0] and "--opset" in errors[0]
    assert not (tmp_path / "out").exists()
