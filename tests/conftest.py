"""Shared fixtures: registry data and tiny models built at test time."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import _data


@pytest.fixture(scope="session")
def chinese_vocab() -> Path:
    return _data.chinese_vocab()


# Tiny reference models (paddlenlp ERNIE via paddle2onnx, transformers BERT / XLM-R via
# torch.onnx) built at test time, each with a callable running the source framework.
from tests._model_fixtures import *  # noqa: E402,F401,F403


@pytest.fixture(scope="session")
def lookup_ner(tmp_path_factory: pytest.TempPathFactory, chinese_vocab: Path) -> Path:
    """A deterministic gazetteer NER model directory (guide entities + a few mixed ones)."""
    from tests import _lookup

    entities = {**_lookup.GUIDE_ENTITIES, **MIXED_ENTITIES}
    return _lookup.lookup_ner_dir(
        tmp_path_factory.mktemp("lookup") / "ner", chinese_vocab, entities
    )


# Entities spelled with English words and digit runs, for offset tests.
MIXED_ENTITIES = {"new york": "LOC", "2008": "ORG", "michael jordan": "PER", "nba": "ORG"}


@pytest.fixture(scope="session")
def bag_cls(tmp_path_factory: pytest.TempPathFactory, chinese_vocab: Path) -> Path:
    """A deterministic 15-class classifier directory with no labels (like a bare paddle2onnx export)."""
    from tests import _lookup

    d = tmp_path_factory.mktemp("bag") / "cls"
    d.mkdir()
    (d / "vocab.txt").write_bytes(chinese_vocab.read_bytes())
    size = len(chinese_vocab.read_text(encoding="utf-8").splitlines())
    _lookup.build_bag_classifier(d / "tnews_model.onnx", size, 15)
    return d
