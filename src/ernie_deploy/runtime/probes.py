"""Probe batches for the fp16 check: real sentences tokenized with the model's own vocabulary.

A probe of random ids 1-99 tests little on ERNIE / BERT vocabularies, where those ids are
`[unused]` tokens the model never saw in training. `text_probe` tokenizes PROBE_TEXTS (Chinese
and English sentences of several lengths, news and dialogue registers, digits and symbols) with
the tokenizer beside the model (`tokenizer.json`, else a WordPiece `vocab.txt`), right-padded with
the vocabulary's pad id as the engine pads. `random_probe` is the fallback when no tokenizer file
sits beside the graph or the graph fixes its input shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

PROBE_TEXTS = (
    "乔丹在北京打球，科比去了成都和重庆。",
    "中华人民共和国国务院总理在人民大会堂会见了来访的外国代表团。",
    "今天上海的最高气温是35℃，请大家注意防暑降温。",
    "这家餐厅的服务很好，菜也很好吃，下次还会再来！",
    "物流太慢了，等了一个星期才到，包装还破了。",
    "2008年北京奥运会开幕式于8月8日晚8时在国家体育场举行。",
    "阿里巴巴集团总部位于杭州，马云是其主要创始人之一。",
    "你好",
    "新华社记者从教育部获悉，今年全国高校毕业生预计达到1100万人，同比增加约80万人。",
    "Michael Jordan played for the Chicago Bulls in the NBA.",
    "The quick brown fox jumps over the lazy dog near New York.",
    "ERNIE 3.0 在中文自然语言理解任务上取得了很好的效果，例如 CLUE 基准。",
    "股市今日小幅上涨，上证指数收于3200点，成交额约为8000亿元。",
    "请问从北京南站到天津站的高铁票价是多少？",
    "他说：“我们明天早上九点在清华大学东门见面。”",
    "深度学习模型在GPU上推理时，半精度（fp16）通常能带来明显的加速。",
)
PROBE_ROWS, PROBE_LENGTH = 8, 32
_PAD_TOKENS = ("[PAD]", "<pad>", "<|pad|>", "[pad]")


def text_probe(model_dir: Path, max_length: int = 128) -> dict[str, np.ndarray] | None:
    """input_ids / token_type_ids / attention_mask / position_ids for PROBE_TEXTS, or None.

    None when the directory has no tokenizer.json or vocab.txt (or the tokenizer cannot load).
    """
    try:
        tok, pad = _tokenizer(model_dir)
    except Exception:  # a tokenizer file the tokenizers library rejects: use the fallback
        return None
    if tok is None:
        return None
    tok.no_padding()
    tok.enable_truncation(max_length)
    encodings = tok.encode_batch(list(PROBE_TEXTS))
    width = max(len(e.ids) for e in encodings)
    ids = np.full((len(encodings), width), pad, dtype=np.int64)
    types = np.zeros_like(ids)
    mask = np.zeros_like(ids)
    for row, enc in enumerate(encodings):
        n = len(enc.ids)
        ids[row, :n] = enc.ids
        types[row, :n] = enc.type_ids
        mask[row, :n] = 1
    return {
        "input_ids": ids,
        "token_type_ids": types,
        "attention_mask": mask,
        "position_ids": np.broadcast_to(np.arange(width, dtype=np.int64), ids.shape).copy(),
    }


def random_probe(shape: Sequence[object]) -> dict[str, np.ndarray]:
    """The tokenizer-free fallback: 8 rows of lengths 32..2 (static dims honoured), ids 1-99."""
    dims = [*list(shape)[:2], None, None]
    rows = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else PROBE_ROWS
    length = dims[1] if isinstance(dims[1], int) and dims[1] > 0 else PROBE_LENGTH
    lengths = np.linspace(length, min(2, length), rows).round().astype(np.int64)
    mask = np.arange(length)[None, :] < lengths[:, None]
    ids = np.where(mask, np.random.default_rng(0).integers(1, 100, (rows, length)), 0)
    return {
        "input_ids": ids,
        "attention_mask": mask.astype(np.int64),
        "token_type_ids": np.zeros_like(ids),
        "position_ids": np.broadcast_to(np.arange(length), ids.shape).copy(),
    }


def _tokenizer(model_dir: Path) -> tuple[Any, int]:
    import tokenizers

    if (model_dir / "tokenizer.json").is_file():
        tok = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    elif (model_dir / "vocab.txt").is_file():
        from tokenizers.implementations import BertWordPieceTokenizer

        tok = BertWordPieceTokenizer(str(model_dir / "vocab.txt"), lowercase=True)
    else:
        return None, 0
    pad = next((i for t in _PAD_TOKENS if (i := tok.token_to_id(t)) is not None), 0)
    return tok, pad
