"""The NER table's second cut: drop the pieces a Han-isolating tokenizer can never emit.

The NER head's tokenizer (tools/e5_heads_data.ner_tokenizer_json) cuts every Han character
into a pre-token of its own, so the pieces that join a Han character with anything but a
leading metaspace are dead rows of its word-embedding table. ``drop_han_joined`` removes them
and proves, on the held-out texts of tools/prune_e5_vocab.py and on stress texts, that the
tokenization and the model's logits do not change (tools/export_e5_heads.py calls it).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from prune_e5_vocab import META, corpus_parts, heldout_texts, padded, pruned_tokenizer


def han_chars(tok_json: dict) -> list[str]:
    """The table's characters that ``\\p{Han}`` matches, decided by the tokenizers library's own
    Split pre-tokenizer (its regex engine, not Python's)."""
    from tokenizers import Regex, pre_tokenizers

    split = pre_tokenizers.Split(Regex(r"\p{Han}"), "isolated")
    chars = sorted({c for p, _ in tok_json["model"]["vocab"] for c in p})
    return [c for c in chars if len(split.pre_tokenize_str(f"a{c}a")) == 3]


def han_joined_pieces(tok_json: dict) -> list[int]:
    """Ids of pieces a Han-isolating tokenizer (tools/e5_heads_data.ner_tokenizer_json) can never emit.

    Its pre-tokenizer cuts every Han character (``\\p{Han}``, decided here by the same
    pre-tokenizer, so the regex engine is the tokenizer's own) into a pre-token of its own, and
    Metaspace may put the metaspace before it only at the start of the text. A piece with a Han
    character is therefore reachable only as that character alone or metaspace + it; every other
    piece with a Han character cannot match inside any pre-token. The lowest-scoring piece sets
    the unknown penalty and is never returned.
    """
    vocab = tok_json["model"]["vocab"]
    han = set(han_chars(tok_json))
    lowest = int(np.argmin([s for _, s in vocab]))
    drop = []
    for i, (p, _) in enumerate(vocab):
        if i == lowest or not any(c in han for c in p):
            continue
        if not (len(p) == 1 or (len(p) == 2 and p[0] == META)):
            drop.append(i)
    return drop


def reachable_texts(tok_json: dict) -> list[str]:
    """Stress texts for the Han rule: each Han character of the table at the start of a text,
    after a space, between Latin letters and digits, and beside its neighbours in the table."""
    han = han_chars(tok_json)
    out = []
    for i, c in enumerate(han):
        nxt = han[(i + 1) % len(han)]
        out += [c + nxt, f" {c}x", f"ab{c}cd 12{c}34", f"{c} {nxt}{c}！", f"\u2581{c}"]
    return out


def drop_han_joined(checkpoint: Path, out_dir: Path, check_texts: int = 2000) -> dict:
    """Copy an NER checkpoint (Han-isolating tokenizer) without the pieces it can never emit.

    Proof, recorded in ``out_dir/import_info.json``: the same pieces (as original ids) on every
    held-out text of this module and on the stress texts, and identical logits of the two
    PyTorch models on the first `check_texts` held-out texts.
    """
    import torch
    from import_e5 import write_model_dir
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer
    from transformers import AutoModelForTokenClassification

    t0 = time.time()
    tok_json = json.loads((checkpoint / "tokenizer.json").read_text("utf-8"))
    dropped = set(han_joined_pieces(tok_json))
    keep = [i for i in range(len(tok_json["model"]["vocab"])) if i not in dropped]
    state = load_file(str(checkpoint / "model.safetensors"))
    key = next(k for k in state if k.endswith("embeddings.word_embeddings.weight"))
    rows = int(state[key].shape[0])
    state[key] = state[key][np.array(keep)]
    config = json.loads((checkpoint / "config.json").read_text("utf-8"))
    config["vocab_size"] = len(keep)
    facts: dict[str, Any] = {
        "rule": "drop pieces that join a Han character with anything but a leading metaspace",
        "rows": {"before": rows, "after": len(keep), "dropped": len(dropped)},
    }
    write_model_dir(out_dir, config, state, pruned_tokenizer(tok_json, keep), {})
    shutil.copy2(checkpoint / "training_info.json", out_dir / "training_info.json")
    for crf in checkpoint.glob("crf_*.npy"):  # a --crf head's tables: its decode needs them
        shutil.copy2(crf, out_dir / crf.name)

    full_tok = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    small_tok = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
    old_of_new = np.array(keep)
    held = heldout_texts(corpus_parts())
    stress = reachable_texts(tok_json)
    for name, texts in (("heldout", held), ("stress", stress)):
        a, b = full_tok.encode_batch(texts), small_tok.encode_batch(texts)
        diff = sum(1 for x, y in zip(a, b) if list(old_of_new[y.ids]) != x.ids)
        facts[f"{name}_texts"] = len(texts)
        facts[f"{name}_tokenization_differences"] = diff
    full = AutoModelForTokenClassification.from_pretrained(str(checkpoint)).eval()
    small = AutoModelForTokenClassification.from_pretrained(str(out_dir)).eval()
    worst = 0.0
    with torch.no_grad():
        for i in range(0, min(check_texts, len(held)), 32):
            ids, mask = padded(small_tok.encode_batch(held[i : i + 32]))
            m = torch.from_numpy(mask)
            old = full(
                input_ids=torch.from_numpy(np.where(mask == 1, old_of_new[ids], 1)),
                attention_mask=m,
            )
            new = small(input_ids=torch.from_numpy(ids), attention_mask=m)
            worst = max(worst, ((old.logits - new.logits).abs() * m.unsqueeze(-1)).max().item())
    facts["logits_texts"] = min(check_texts, len(held))
    facts["logits_max_abs_diff"] = worst
    facts["seconds"] = round(time.time() - t0)
    (out_dir / "import_info.json").write_text(
        json.dumps({"han_joined_pieces_dropped": facts}, indent=1, ensure_ascii=False), "utf-8"
    )
    print(f"dropped Han-joined pieces: {json.dumps(facts)}", flush=True)
    bad = facts["heldout_tokenization_differences"] + facts["stress_tokenization_differences"]
    if bad or worst > 0:
        raise SystemExit(f"dropping Han-joined pieces changed the model: {facts}")
    return facts
