"""Session-scoped pytest fixtures building the tiny reference models of tests/_models.py lazily.

Each fixture builds its model directory under ``tmp_path_factory`` the first time a test asks for
it, and skips when the source framework (paddle / paddlenlp / paddle2onnx, torch / transformers)
is not installed.
"""

from __future__ import annotations

import pytest

from tests import _data, _models
from tests._models import RefModel

__all__ = [
    "bert_cls",
    "bert_embed",
    "bert_ner",
    "bert_rerank2",
    "paddle_cls",
    "paddle_embed",
    "paddle_ner",
    "xlmr_rerank",
]


def _need_paddle() -> None:
    for module in ("paddle", "paddlenlp", "paddle2onnx", "onnx"):
        pytest.importorskip(module)


def _need_torch() -> None:
    for module in ("torch", "transformers", "onnx"):
        pytest.importorskip(module)


def _build_paddle(
    factory: pytest.TempPathFactory, name: str, task: str, labels: tuple[str, ...]
) -> RefModel:
    _need_paddle()
    return _models.build_paddle_ernie(
        factory.mktemp(name), task, vocab_file=_data.chinese_vocab(), labels=labels
    )


@pytest.fixture(scope="session")
def paddle_ner(tmp_path_factory: pytest.TempPathFactory) -> RefModel:
    """PaddleNLP ErnieForTokenClassification (7 BIO labels) + paddle2onnx model.onnx."""
    return _build_paddle(tmp_path_factory, "paddle_ner", "token_cls", _models.NER_LABELS)


@pytest.fixture(scope="session")
def paddle_cls(tmp_path_factory: pytest.TempPathFactory) -> RefModel:
    """PaddleNLP ErnieForSequenceClassification (15 tnews labels) + paddle2onnx model.onnx."""
    return _build_paddle(tmp_path_factory, "paddle_cls", "seq_cls", _models.TNEWS_LABELS)


@pytest.fixture(scope="session")
def paddle_embed(tmp_path_factory: pytest.TempPathFactory) -> RefModel:
    """PaddleNLP ErnieModel; ONNX outputs sequence (3D) and pooled (2D) output."""
    return _build_paddle(tmp_path_factory, "paddle_embed", "embedding", ())


@pytest.fixture(scope="session")
def bert_ner(tmp_path_factory: pytest.TempPathFactory) -> RefModel:
    """transformers BertForTokenClassification (7 BIO labels), optimum-cli layout."""
    _need_torch()
    return _models.build_bert(tmp_path_factory.mktemp("bert_ner"), "token_cls", _models.NER_LABELS)


@pytest.fixture(scope="session")
def bert_cls(tmp_path_factory: pytest.TempPathFactory) -> RefModel:
    """transformers BertForSequenceClassification (3 labels), optimum-cli layout."""
    _need_torch()
    return _models.build_bert(
        tmp_path_factory.mktemp("bert_cls"), "seq_cls", _models.BERT_CLS_LABELS
    )


@pytest.fixture(scope="session")
def bert_embed(tmp_path_factory: pytest.TempPathFactory) -> RefModel:
    """transformers BertModel (last_hidden_state) + sentence-transformers mean-pooling files."""
    _need_torch()
    return _models.build_bert(tmp_path_factory.mktemp("bert_embed"), "embedding")


@pytest.fixture(scope="session")
def xlmr_rerank(tmp_path_factory: pytest.TempPathFactory) -> RefModel:
    """XLMRobertaForSequenceClassification, num_labels=1 (bge-reranker shape); pad id 1."""
    _need_torch()
    pytest.importorskip("tokenizers")
    return _models.build_xlmr_rerank(tmp_path_factory.mktemp("xlmr_rerank"))


@pytest.fixture(scope="session")
def bert_rerank2(tmp_path_factory: pytest.TempPathFactory) -> RefModel:
    """2-class BertForSequenceClassification cross-encoder (irrelevant / relevant)."""
    _need_torch()
    return _models.build_bert(
        tmp_path_factory.mktemp("bert_rerank2"), "rerank", _models.RERANK2_LABELS, seed=1
    )
