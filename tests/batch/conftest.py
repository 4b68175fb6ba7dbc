"""Fixtures for the batch tests: a few hundred made-up rows and the tiny NER / classifier models."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

WORDS = ["北京", "重庆", "成都", "乔丹", "科比", "詹姆斯", "姚明", "打球", "天气", "很好", "去了"]


def make_texts(n: int, seed: int = 0) -> list[str]:
    """`n` short Chinese texts, some with gazetteer entities, of mixed lengths."""
    rng = random.Random(seed)
    return ["".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12))) for _ in range(n)]


def write_jsonl(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
    )
    return path


def read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 rows (`doc` text, `source` column, no id column) as jsonl."""
    records = [{"doc": t, "source": f"s{i % 7}"} for i, t in enumerate(make_texts(300))]
    return write_jsonl(tmp_path_factory.mktemp("corpus") / "docs.jsonl", records)


@pytest.fixture(scope="session")
def cls_model(bag_cls: Path) -> list[str]:
    """The bag-of-words classifier's MODEL argument plus the --task its bare export needs."""
    return [str(bag_cls), "--task", "seq_cls"]
