"""tools/prune_han_joined.han_joined_pieces: the pieces a Han-isolating tokenizer can never emit.

The shipped NER table was cut by this rule; a wrong rule would change tokenization, so the
test builds a small Unigram tokenizer with the NER pre-tokenizer, drops what the rule names and
compares the pieces on texts that reach every kind of piece.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

tokenizers = pytest.importorskip("tokenizers")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

from prune_e5_vocab import pruned_tokenizer  # noqa: E402
from prune_han_joined import han_joined_pieces, reachable_texts  # noqa: E402

VOCAB = [
    ("<s>", 0.0),
    ("<pad>", 0.0),
    ("</s>", 0.0),
    ("<unk>", 0.0),
    ("\u2581", -2.0),
    ("中", -3.0),
    ("\u2581中", -1.0),  # reachable: text-initial metaspace + one Han character
    ("中国", -0.5),  # unreachable: two Han characters
    ("a中", -0.5),  # unreachable: Latin + Han
    ("国", -3.0),
    ("\u2581国", -1.0),
    ("国!", -0.5),  # unreachable: Han + punctuation
    ("a", -4.0),
    ("\u2581a", -3.0),
    ("ab", -2.0),
    ("b", -4.0),
    ("!", -3.0),
    ("z中z", -20.0),  # the lowest score sets the unknown penalty: always kept
]
UNREACHABLE = {"中国", "a中", "国!"}


def tokenizer_json() -> dict:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    tok = Tokenizer(models.Unigram(VOCAB, unk_id=3))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\p{Han}"), "isolated"),
            pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=True),
        ]
    )
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    tok.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>"])
    return json.loads(tok.to_str())


def test_rule_names_exactly_the_unreachable_pieces():
    tj = tokenizer_json()
    assert {VOCAB[i][0] for i in han_joined_pieces(tj)} == UNREACHABLE


def test_dropping_them_keeps_every_tokenization():
    from tokenizers import Tokenizer

    tj = tokenizer_json()
    drop = set(han_joined_pieces(tj))
    keep = [i for i in range(len(VOCAB)) if i not in drop]
    full = Tokenizer.from_str(json.dumps(tj))
    small = Tokenizer.from_str(json.dumps(pruned_tokenizer(tj, keep)))
    texts = reachable_texts(tj) + ["中国!", "a中国 ab", " 中 国!", "ab中b", "z中z", "中"]
    used = set()
    for text in texts:
        a, b = full.encode(text), small.encode(text)
        assert [keep[i] for i in b.ids] == a.ids, text
        used.update(a.tokens)
    assert {"\u2581中", "\u2581国", "中", "国", "ab"} <= used  # the texts do reach the kept pieces
