"""Tag decoding and window planning: unit cases plus hypothesis properties."""

from __future__ import annotations

import json
import unicodedata
from functools import cache
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import ernie_deploy
from ernie_deploy.runtime.bundled import bundled_path
from ernie_deploy.tasks.bio import TagSet, decode, isolate_cjk, parse_label
from ernie_deploy.tasks.token_cls import plan_windows
from ernie_deploy.tasks.tokenization import Tokenizer

BIO = TagSet.from_labels(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])
BIOES = TagSet.from_labels(
    ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC"]
)


def run(tags: list[str], tagset: TagSet = BIO, strict: bool = False) -> list[tuple[str, str]]:
    """Decode one character per token over a text of 'abcd...'."""
    text = "abcdefghijklmnopqrstuvwxyz"[: len(tags)]
    ids = np.array([tagset.labels.index(t) for t in tags])
    offsets = np.array([[i, i + 1] for i in range(len(tags))])
    ents = decode(text, ids, np.ones(len(tags)), offsets, np.arange(len(tags)), tagset, strict)
    return [(e.text, e.label) for e in ents]


def test_parse_label() -> None:
    assert parse_label("B-PER") == ("B", "PER")
    assert parse_label("I_LOC") == ("I", "LOC")
    assert parse_label("M-ORG") == ("I", "ORG")
    assert parse_label("O") == ("O", "")
    assert parse_label("PER") == ("I", "PER")


def test_bio_rules() -> None:
    assert run(["B-PER", "I-PER", "O", "B-LOC"]) == [("ab", "PER"), ("d", "LOC")]
    # B-X B-Y: the guide's older versions lost the first entity.
    assert run(["B-PER", "B-LOC"]) == [("a", "PER"), ("b", "LOC")]
    # I-Y inside an X entity closes X and opens Y (the guide silently continued X).
    assert run(["B-PER", "I-PER", "I-LOC", "I-LOC"]) == [("ab", "PER"), ("cd", "LOC")]
    # I-X after O opens an entity; strict mode drops it.
    assert run(["O", "I-PER", "I-PER"]) == [("bc", "PER")]
    assert run(["O", "I-PER", "I-PER"], strict=True) == []
    assert run(["B-PER", "I-PER", "I-LOC"], strict=True) == [("ab", "PER")]
    # An entity still open at the end keeps its label (the guide emitted an empty one).
    assert run(["O", "B-LOC", "I-LOC"]) == [("bc", "LOC")]


def test_bioes_rules() -> None:
    assert run(["B-PER", "I-PER", "E-PER", "S-LOC", "O"], BIOES) == [("abc", "PER"), ("d", "LOC")]
    assert run(["S-PER", "S-PER"], BIOES) == [("a", "PER"), ("b", "PER")]
    assert run(["B-PER", "E-PER", "E-PER"], BIOES) == [("ab", "PER"), ("c", "PER")]
    assert run(["B-PER", "E-PER", "E-PER"], BIOES, strict=True) == [("ab", "PER")]


def test_subword_pieces_take_first_piece_label() -> None:
    text = "Johnson lives"
    # tokens: john ##son lives ; word ids 0 0 1
    offsets = np.array([[0, 4], [4, 7], [8, 13]])
    word_ids = np.array([0, 0, 1])
    tags = np.array([BIO.labels.index(t) for t in ["B-PER", "O", "O"]])
    ents = decode(text, tags, np.ones(3), offsets, word_ids, BIO)
    assert [(e.text, e.label, e.start, e.end) for e in ents] == [("Johnson", "PER", 0, 7)]


texts = st.text(
    alphabet=st.sampled_from(list("北京abc XYZ12 3\t，。é😀") + ["\u3000", "\u0301"]),
    min_size=1,
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(texts, st.data())
def test_offsets_always_slice_the_text(text: str, data: st.DataObject) -> None:
    # Random word segmentation of the non-space characters, random tags per token.
    spans = [(i, i + 1) for i, ch in enumerate(text) if not ch.isspace()]
    if not spans:
        return
    word_ids = np.array(
        data.draw(st.lists(st.integers(0, 1), min_size=len(spans), max_size=len(spans)))
    )
    word_ids = np.cumsum(word_ids)
    tags = np.array(
        data.draw(
            st.lists(st.integers(0, len(BIO.labels) - 1), min_size=len(spans), max_size=len(spans))
        )
    )
    strict = data.draw(st.booleans())
    ents = decode(text, tags, np.full(len(spans), 0.5), np.array(spans), word_ids, BIO, strict)
    prev_end = 0
    for e in ents:
        assert e.text == text[e.start : e.end]
        assert e.start >= prev_end and e.end > e.start
        assert e.label in ("PER", "LOC")
        prev_end = e.end


@settings(max_examples=300, deadline=None)
@given(texts, st.data())
def test_sentencepiece_space_pieces_never_reach_an_entity(text: str, data: st.DataObject) -> None:
    # Metaspace-style tokens: a word piece may cover the spaces before it, and a run of
    # spaces may be a "word" of its own; any of them may be tagged as part of an entity.
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(text)), max_size=len(text)))))
    bounds = [0, *[c for c in cuts if c < len(text)], len(text)]
    spans = [(a, b) for a, b in zip(bounds, bounds[1:]) if a < b]
    word_ids = np.cumsum(
        data.draw(st.lists(st.integers(0, 1), min_size=len(spans), max_size=len(spans)))
    )
    tags = np.array(
        data.draw(
            st.lists(st.integers(0, len(BIO.labels) - 1), min_size=len(spans), max_size=len(spans))
        )
    )
    ents = decode(text, tags, np.full(len(spans), 0.5), np.array(spans), word_ids, BIO)
    prev_end = 0
    for e in ents:
        assert e.text == text[e.start : e.end] and e.text.strip() == e.text and e.text
        assert e.start >= prev_end
        prev_end = e.end


def test_space_only_word_tagged_b_is_dropped_and_spaces_trimmed() -> None:
    text = "a  bc d"
    # pieces: "a", "▁" (the spaces, a word of its own), "bc", "▁d"; word ids 0 1 2 3
    offsets = np.array([[0, 1], [1, 3], [3, 5], [5, 7]])
    tags = np.array([BIO.labels.index(t) for t in ["O", "B-PER", "B-PER", "I-PER"]])
    ents = decode(text, tags, np.ones(4), offsets, np.arange(4), BIO)
    assert [(e.text, e.start, e.end) for e in ents] == [("bc d", 3, 7)]


def test_an_entity_keeps_the_combining_marks_of_its_last_letter() -> None:
    text = "Jose\u0301 在北京"
    # the tokenizer's offsets leave the combining acute out of "Jose" (0, 4)
    offsets = np.array([[0, 4], [6, 7], [7, 8], [8, 9]])
    ids = np.array([BIO.labels.index(t) for t in ["B-PER", "O", "B-LOC", "I-LOC"]])
    ents = decode(text, ids, np.ones(4), offsets, np.arange(4), BIO)
    assert [(e.text, e.start, e.end) for e in ents] == [("Jose\u0301", 0, 5), ("北京", 7, 9)]


def test_invisible_format_characters_never_reach_an_entity() -> None:
    for blank in ("\u200b", "\ufeff", "\u2060", "\u200d"):
        text = f"{blank}乔丹{blank} 北京"
        # one piece per character; the invisible ones are tagged as part of the entities
        offsets = np.array([[i, i + 1] for i in range(len(text))])
        tags = ["B-PER", "I-PER", "I-PER", "I-PER", "O", "B-LOC", "I-LOC"]
        ids = np.array([BIO.labels.index(t) for t in tags])
        ents = decode(text, ids, np.ones(len(text)), offsets, np.arange(len(text)), BIO)
        assert [(e.text, e.start, e.end) for e in ents] == [("乔丹", 1, 3), ("北京", 5, 7)]
        alone = decode(blank, ids[:1], np.ones(1), offsets[:1], np.arange(1), BIO)
        assert alone == ()


def model_path(name: str) -> Path:
    path = bundled_path(name)
    assert path is not None, name
    return path


@cache
def tokenizer(name: str) -> Tokenizer:
    return Tokenizer.from_dir(model_path(name))


def ideograph(ch: str) -> bool:
    return unicodedata.name(ch, "").startswith("CJK") and unicodedata.category(ch) == "Lo"


mixed = st.text(
    alphabet=st.sampled_from(
        list("北京在乔丹打球的涮肉亜abc XYZ12 3\t，。é😀ㄱか") + ["\u3000", "\u200b"]
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(mixed)
def test_every_piece_holding_an_ideograph_starts_its_own_word(text: str) -> None:
    # The stock E5 tokenizer (SentencePiece behind a Metaspace pre-tokenizer) splits only at
    # spaces; after isolate_cjk a piece with an ideograph starts a word, or follows a bare "▁"
    # piece that does, and no word joins pieces the tokenizer kept apart.
    t = tokenizer("e5-small-zh-en").tokenize([text])[0]
    words = isolate_cjk(text, t.offsets, t.word_ids)
    assert len(words) == len(t.ids) and (np.diff(words) >= 0).all()
    for i in range(1, len(words)):
        if words[i] == words[i - 1]:
            assert t.word_ids[i] == t.word_ids[i - 1]
            (a, b), (pa, pb) = t.offsets[i], t.offsets[i - 1]
            if not (pb <= pa or pa >= a):  # the previous piece is not a bare "▁"
                assert not any(ideograph(ch) for ch in text[a:b] + text[pa:pb])
    # ERNIE's WordPiece tokenizer, and ner-zh-e5's Han-isolating one, make each ideograph a
    # word already: the shipped NER models' words do not change
    for name in ("ner-zh", "ner-zh-e5"):
        w = tokenizer(name).tokenize([text])[0]
        assert (isolate_cjk(text, w.offsets, w.word_ids) == w.word_ids).all()


def test_a_stock_sentencepiece_tokenizer_tags_chinese_per_character(tmp_path: Path) -> None:
    # ner-zh-e5's tokenizer isolates each Han character before SentencePiece; the stock E5
    # pre-tokenizer does not, and a run of Chinese used to come back as one entity
    stock = tmp_path / "stock"
    stock.mkdir()
    shipped = model_path("ner-zh-e5")
    for f in shipped.iterdir():
        if f.name != "tokenizer.json":
            (stock / f.name).symlink_to(f)
    spec = json.loads((shipped / "tokenizer.json").read_text(encoding="utf-8"))
    spec["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "split": True,
                             "prepend_scheme": "always"}  # fmt: skip
    (stock / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    guide = (
        "北京的涮肉，重庆的火锅，成都的小吃都是极具特色的美食。"
        "乔丹、科比、詹姆斯和姚明都是篮球界的标志性人物。"
    )
    texts = ["乔丹在北京打球", guide]
    got = [r.entities for r in ernie_deploy.load(stock).predict(texts)]
    assert [(e.text, e.start) for e in got[0]] == [("乔丹", 0), ("北京", 3)]
    assert got == [r.entities for r in ernie_deploy.load("ner-zh-e5").predict(texts)]
    assert len(got[1]) == 7


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 3000), st.integers(1, 200), st.data())
def test_windows_partition_tokens(n: int, size: int, data: st.DataObject) -> None:
    overlap = data.draw(st.integers(0, size - 1))
    windows = plan_windows(n, size, overlap)
    covered = 0
    for w in windows:
        assert w.end - w.start <= size
        assert w.start <= w.core_start <= w.core_end <= w.end
        assert w.core_start == covered
        covered = w.core_end
    assert covered == n
