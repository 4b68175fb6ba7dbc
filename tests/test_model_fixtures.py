"""Smoke test: each reference-model fixture's ONNX graph matches its source framework on ORT."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests._models import RefModel

ort = pytest.importorskip("onnxruntime")

TEXTS = [
    "张三在北京的华为公司工作。",
    "hi",
    "The new model ranks search results for 2024, and it works well!",
    "上海市",
]
QUERY = "what is the best search model"
DOCS = [
    "the best search model is a small one",
    "北京",
    "people play music at home in the city of london after work",
    "no",
]

EXPECTED_FILES = {
    "paddle": {
        "config.json",
        "model_state.pdparams",
        "vocab.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "model.onnx",
    },
    "bert": {
        "config.json",
        "model.onnx",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
    },
    "xlmr": {
        "config.json",
        "model.onnx",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    },
}

FIXTURES = {
    # name: (layout, expected ONNX inputs)
    "paddle_ner": ("paddle", {"input_ids", "token_type_ids"}),
    "paddle_cls": ("paddle", {"input_ids", "token_type_ids"}),
    "paddle_embed": ("paddle", {"input_ids", "token_type_ids"}),
    "bert_ner": ("bert", {"input_ids", "attention_mask", "token_type_ids"}),
    "bert_cls": ("bert", {"input_ids", "attention_mask", "token_type_ids"}),
    "bert_embed": ("bert", {"input_ids", "attention_mask", "token_type_ids"}),
    "bert_rerank2": ("bert", {"input_ids", "attention_mask", "token_type_ids"}),
    "xlmr_rerank": ("xlmr", {"input_ids", "attention_mask"}),
}


def _config(model: RefModel) -> dict:
    return json.loads((model.path / "config.json").read_text(encoding="utf-8"))


def _encode_paddle(model: RefModel) -> dict[str, np.ndarray]:
    """Tokenize with PaddleNLP from the saved directory (checks that it reloads offline)."""
    from paddlenlp.transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model.path))
    enc = tok(TEXTS, padding=True, return_attention_mask=True, return_token_type_ids=True)
    return {
        k: np.asarray(enc[k], dtype=np.int64)
        for k in ("input_ids", "token_type_ids", "attention_mask")
    }


def _encode_hf(model: RefModel) -> dict[str, np.ndarray]:
    """Tokenize with the `tokenizers` library from the saved tokenizer.json."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model.path / "tokenizer.json"))
    pad_id = _config(model)["pad_token_id"]
    tok.enable_padding(pad_id=pad_id, pad_token=tok.id_to_token(pad_id))
    encs = (
        tok.encode_batch([(QUERY, doc) for doc in DOCS])
        if model.task == "rerank"
        else tok.encode_batch(TEXTS)
    )
    return {
        "input_ids": np.array([e.ids for e in encs], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encs], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int64),
    }


@pytest.mark.parametrize("name", list(FIXTURES))
def test_fixture_onnx_matches_reference(name: str, request: pytest.FixtureRequest) -> None:
    model: RefModel = request.getfixturevalue(name)
    layout, expected_inputs = FIXTURES[name]

    assert model.onnx == model.path / "model.onnx" and model.onnx.is_file()
    present = {p.name for p in model.path.iterdir()}
    assert EXPECTED_FILES[layout] <= present, EXPECTED_FILES[layout] - present

    config = _config(model)
    if model.labels:
        id2label = {int(k): v for k, v in config["id2label"].items()}
        assert tuple(id2label[i] for i in range(len(id2label))) == model.labels

    batch = _encode_paddle(model) if layout == "paddle" else _encode_hf(model)
    lengths = batch["attention_mask"].sum(axis=1)
    assert len(set(lengths.tolist())) > 1, "batch must mix lengths (padding)"

    sess = ort.InferenceSession(str(model.onnx), providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in sess.get_inputs()}
    assert set(inputs) == expected_inputs
    assert all(i.type == "tensor(int64)" for i in inputs.values())
    outputs = sess.run(None, {k: batch[k] for k in inputs})
    rank = 3 if model.task in ("token_cls", "embedding") else 2
    got = next(o for o in outputs if o.ndim == rank)
    if name == "paddle_embed":  # sequence output and pooled output
        assert sorted(o.ndim for o in outputs) == [2, 3]

    want = model.reference(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
    assert want.dtype == np.float32 and got.dtype == np.float32
    assert got.shape == want.shape
    n_batch, n_tokens = batch["input_ids"].shape
    if model.task == "token_cls":
        assert want.shape == (n_batch, n_tokens, len(model.labels))
    elif model.task == "embedding":
        assert want.shape == (n_batch, n_tokens, config["hidden_size"])
    else:
        assert want.shape == (n_batch, max(len(model.labels), 1))
    diff = float(np.abs(got - want).max())
    print(f"{name}: max abs diff {diff:.3g}")
    assert diff <= 1e-4


def test_bert_embed_sentence_transformers_files(bert_embed: RefModel) -> None:
    modules = json.loads((bert_embed.path / "modules.json").read_text(encoding="utf-8"))
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling"]
    pooling = json.loads((Path(bert_embed.path) / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] is True
    assert pooling["pooling_mode_cls_token"] is False
    assert pooling["word_embedding_dimension"] == _config(bert_embed)["hidden_size"]


def test_xlmr_rerank_pads_with_one(xlmr_rerank: RefModel) -> None:
    config = _config(xlmr_rerank)
    assert config["pad_token_id"] == 1
    assert len(config["id2label"]) == 1  # num_labels=1: one relevance logit
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(xlmr_rerank.path / "tokenizer.json"))
    assert [tok.token_to_id(t) for t in ("<s>", "<pad>", "</s>", "<unk>")] == [0, 1, 2, 3]
    enc = tok.encode("query", "doc")
    assert enc.ids[0] == 0 and enc.ids[-1] == 2 and enc.tokens.count("</s>") == 3
