"""Constrained Viterbi decoding: hypothesis properties, hand-made repairs, CRF transitions, the head."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ernie_deploy
from ernie_deploy.errors import ConfigError
from ernie_deploy.runtime import model_dir
from ernie_deploy.tasks import viterbi as vt
from ernie_deploy.tasks.bio import TagSet, word_starts
from ernie_deploy.tasks.engine import Engine
from ernie_deploy.tasks.token_cls import TokenClassifier
from ernie_deploy.tasks.viterbi import (
    Constraints,
    Transitions,
    ViterbiDecoder,
    log_softmax,
    path_score,
    viterbi,
)
from tests._lookup import GUIDE_ENTITIES
from tests._models import RefModel

# --- a reference validity check written from the scheme rules, independent of Constraints ---


def valid_reference(path: Sequence[str], labels: Sequence[str], complete: bool = True) -> bool:
    """Whether tag names `path` obey the rules of the scheme of `labels`. BIO: I-X continues
    B-X / I-X. BIOES (the labels have E-X): E-X continues like I-X, B-X / I-X must go on with
    I-X / E-X, and a complete path may not end inside an entity. IO (bare names): anything."""
    bioes = any(label.startswith("E-") for label in labels)
    open_kind = ""  # the type of the entity left open by the previous tag
    for label in path:
        prefix, dash, kind = label.partition("-")
        if not dash:  # O, or a bare IO label: neither continues nor opens an entity
            prefix, kind = "O", ""
        if prefix in ("I", "E") and open_kind != kind:
            return False
        if bioes and open_kind and prefix not in ("I", "E"):
            return False
        open_kind = kind if prefix in ("B", "I") else ""
    return not (complete and bioes and open_kind)


def scheme_labels(types: list[str], bioes: bool, order: list[int]) -> list[str]:
    prefixes = "BIES" if bioes else "BI"
    labels = ["O"] + [f"{p}-{t}" for t in types for p in prefixes]
    return [labels[i] for i in order]


@st.composite
def label_sets(draw: st.DrawFn, max_types: int = 3, bioes: bool | None = None) -> list[str]:
    types = draw(
        st.lists(
            st.sampled_from(["PER", "LOC", "ORG"]), min_size=1, max_size=max_types, unique=True
        )
    )
    use_bioes = draw(st.booleans()) if bioes is None else bioes
    n = 1 + len(types) * (4 if use_bioes else 2)
    order = draw(st.permutations(range(n)))
    return scheme_labels(types, use_bioes, list(order))


# Logits on a grid of halves: exact in floating point, with plenty of exact ties.
def logit_arrays(n_steps: st.SearchStrategy[int], n_labels: int) -> st.SearchStrategy[np.ndarray]:
    cell = st.integers(-16, 16).map(lambda v: v / 2)
    return n_steps.flatmap(
        lambda t: st.lists(
            st.lists(cell, min_size=n_labels, max_size=n_labels), min_size=t, max_size=t
        ).map(lambda rows: np.array(rows, dtype=np.float32).reshape(t, n_labels))
    )


def raw_viterbi(decoder: ViterbiDecoder, logits: np.ndarray) -> np.ndarray:
    """The dynamic programme itself (decode() short-cuts a valid argmax path)."""
    return viterbi(log_softmax(logits), decoder.transitions, decoder.start, decoder.end)


def names(labels: Sequence[str], path: Sequence[int] | np.ndarray) -> list[str]:
    return [labels[i] for i in path]


# --- properties ---


@settings(max_examples=300, deadline=None)
@given(label_sets(), st.data())
def test_path_is_always_valid(labels: list[str], data: st.DataObject) -> None:
    decoder = ViterbiDecoder(TagSet.from_labels(labels))
    logits = data.draw(logit_arrays(st.integers(0, 30), len(labels)))
    for path in (decoder.decode(logits), raw_viterbi(decoder, logits)):
        assert path.shape == (len(logits),)
        assert valid_reference(names(labels, path), labels)
        assert decoder.constraints.valid(path)


@settings(max_examples=300, deadline=None)
@given(label_sets(), st.data())
def test_constraints_match_the_reference_rules(labels: list[str], data: st.DataObject) -> None:
    constraints = Constraints.from_tagset(TagSet.from_labels(labels))
    path = np.array(data.draw(st.lists(st.integers(0, len(labels) - 1), max_size=8)), np.int64)
    assert constraints.valid(path) == valid_reference(names(labels, path), labels)


@st.composite
def valid_paths(draw: st.DrawFn, labels: list[str]) -> np.ndarray:
    """A valid tag path, drawn step by step from the tags the reference rules allow."""
    n = draw(st.integers(1, 25))
    path: list[int] = []
    for t in range(n):
        ok = [
            i
            for i in range(len(labels))
            if valid_reference(names(labels, path + [i]), labels, False)
        ]
        if t == n - 1:
            ok = [i for i in ok if valid_reference(names(labels, path + [i]), labels)]
        path.append(draw(st.sampled_from(ok)))
    return np.array(path, dtype=np.int64)


@settings(max_examples=200, deadline=None)
@given(label_sets(), st.data())
def test_equals_argmax_when_argmax_is_valid(labels: list[str], data: st.DataObject) -> None:
    decoder = ViterbiDecoder(TagSet.from_labels(labels))
    path = data.draw(valid_paths(labels))
    logits = data.draw(logit_arrays(st.just(len(path)), len(labels)))
    margin = data.draw(st.integers(1, 6)) / 2
    logits[np.arange(len(path)), path] = logits.max(axis=1) + margin
    assert np.array_equal(logits.argmax(axis=1), path)
    assert np.array_equal(raw_viterbi(decoder, logits), path)
    assert np.array_equal(decoder.decode(logits), path)


@settings(max_examples=300, deadline=None)
@given(label_sets(), st.data())
def test_equals_argmax_on_random_logits_when_valid(labels: list[str], data: st.DataObject) -> None:
    decoder = ViterbiDecoder(TagSet.from_labels(labels))
    logits = data.draw(logit_arrays(st.integers(1, 12), len(labels)))
    argmax = log_softmax(logits).argmax(axis=1)  # ties to the lower index, like viterbi()
    if valid_reference(names(labels, argmax), labels):
        assert np.array_equal(raw_viterbi(decoder, logits), argmax)


@st.composite
def small_cases(draw: st.DrawFn) -> tuple[list[str], np.ndarray, Transitions | None]:
    labels = draw(
        st.sampled_from(
            [
                ["O", "B-PER", "I-PER"],
                ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"],
                ["B-LOC", "O", "I-LOC", "I-PER", "B-PER"],
                ["O", "B-PER", "I-PER", "E-PER", "S-PER"],
                ["S-PER", "E-PER", "O", "B-PER", "I-PER"],
                ["O", "PER", "LOC"],  # IO: everything allowed
            ]
        )
    )
    n = len(labels)
    logits = draw(logit_arrays(st.integers(1, 5), n))
    transitions = None
    if draw(st.booleans()):
        cell = st.integers(-8, 8).map(lambda v: v / 4)
        matrix = np.array(draw(st.lists(cell, min_size=n * n, max_size=n * n))).reshape(n, n)
        start = draw(st.none() | st.lists(cell, min_size=n, max_size=n).map(np.array))
        end = draw(st.none() | st.lists(cell, min_size=n, max_size=n).map(np.array))
        transitions = Transitions(matrix, start, end)
    return labels, logits, transitions


@settings(max_examples=300, deadline=None)
@given(small_cases())
def test_score_beats_every_valid_path(
    case: tuple[list[str], np.ndarray, Transitions | None],
) -> None:
    labels, logits, transitions = case
    decoder = ViterbiDecoder(TagSet.from_labels(labels), transitions)
    path = decoder.decode(logits)
    best = decoder.score(logits, path)
    scores = log_softmax(logits)
    learned = transitions or Transitions(np.zeros((len(labels), len(labels))))
    zeros = np.zeros(len(labels))
    top = -np.inf
    for other in itertools.product(range(len(labels)), repeat=len(logits)):
        candidate = np.array(other)
        if not valid_reference(names(labels, candidate), labels):
            continue
        score = path_score(
            scores,
            candidate,
            learned.matrix,
            zeros if learned.start is None else learned.start,
            zeros if learned.end is None else learned.end,
        )
        assert best >= score - 1e-9
        top = max(top, score)
    assert valid_reference(names(labels, path), labels)
    assert best == pytest.approx(top, abs=1e-9)


# --- hand-made repairs ---

BIO = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
BIOES = ("O", "B-PER", "I-PER", "E-PER", "S-PER")


def decode_probs(labels: tuple[str, ...], rows: list[dict[str, float]], **kw: object) -> list[str]:
    """Decode per-step probabilities given as {label: p}; unnamed labels share what is left."""
    probs = np.zeros((len(rows), len(labels)))
    for t, row in enumerate(rows):
        rest = (1 - sum(row.values())) / (len(labels) - len(row))
        probs[t] = [row.get(label, rest) for label in labels]
    decoder = ViterbiDecoder(TagSet.from_labels(labels), **kw)  # type: ignore[arg-type]
    return names(labels, decoder.decode(np.log(probs)))


def test_orphan_inside_tags_become_an_entity() -> None:
    rows = [{"O": 0.9}, {"I-PER": 0.6, "B-PER": 0.3, "O": 0.05}, {"I-PER": 0.9, "O": 0.05}]
    assert decode_probs(BIO, rows) == ["O", "B-PER", "I-PER"]
    # With no B-PER worth taking, the orphan run is dropped.
    rows = [{"O": 0.9}, {"I-PER": 0.6, "O": 0.38}, {"I-PER": 0.6, "O": 0.38}]
    assert decode_probs(BIO, rows) == ["O", "O", "O"]


def test_type_switch_inside_an_entity_is_repaired() -> None:
    rows = [{"B-PER": 0.7, "B-LOC": 0.1}, {"I-LOC": 0.5, "I-PER": 0.3, "O": 0.1}]
    assert decode_probs(BIO, rows) == ["B-PER", "I-PER"]
    rows = [{"B-PER": 0.5, "B-LOC": 0.4}, {"I-LOC": 0.8, "I-PER": 0.1}]
    assert decode_probs(BIO, rows) == ["B-LOC", "I-LOC"]


def test_bioes_entities_must_close_and_may_not_start_inside() -> None:
    # Ending on B-PER is not allowed: the single-token entity is S-PER.
    assert decode_probs(BIOES, [{"O": 0.9}, {"B-PER": 0.6, "S-PER": 0.3}]) == ["O", "S-PER"]
    # Starting on E-PER is not allowed either.
    rows = [{"E-PER": 0.6, "S-PER": 0.3}, {"O": 0.9}]
    assert decode_probs(BIOES, rows) == ["S-PER", "O"]
    # B-PER then O: the entity is closed with E-PER.
    rows = [{"B-PER": 0.8}, {"O": 0.5, "E-PER": 0.4}, {"O": 0.9}]
    assert decode_probs(BIOES, rows) == ["B-PER", "E-PER", "O"]


def test_io_labels_are_unconstrained() -> None:
    labels = ("O", "PER", "LOC")
    rows = [{"LOC": 0.8}, {"PER": 0.8}, {"LOC": 0.8}]
    assert decode_probs(labels, rows) == ["LOC", "PER", "LOC"]
    assert Constraints.from_tagset(TagSet.from_labels(labels)).transitions.all()


def test_bmes_reads_as_bioes() -> None:
    labels = ("O", "B-PER", "M-PER", "E-PER", "S-PER")
    rows = [{"M-PER": 0.5, "B-PER": 0.4}, {"M-PER": 0.9}, {"E-PER": 0.5, "O": 0.4}]
    assert decode_probs(labels, rows) == ["B-PER", "M-PER", "E-PER"]


def test_infinite_logits_give_no_nan() -> None:
    decoder = ViterbiDecoder(TagSet.from_labels(BIO))
    logits = np.array([[0.0, -np.inf, 5.0, 0.0, 0.0], [-np.inf, 0.0, 5.0, 0.0, 0.0]])
    with np.errstate(all="raise"):
        path = decoder.decode(logits.astype(np.float32))
    assert names(BIO, path) == ["O", "B-PER"]


def test_empty_and_single_step() -> None:
    decoder = ViterbiDecoder(TagSet.from_labels(BIO))
    assert decoder.decode(np.zeros((0, 5), np.float32)).shape == (0,)
    assert names(BIO, decoder.decode(np.log([[0.1, 0.1, 0.6, 0.1, 0.1]]))) == ["O"]


# --- learned transitions ---


def test_learned_transitions_change_the_path() -> None:
    labels = ("O", "B-PER", "I-PER")
    rows = [{"B-PER": 0.55, "O": 0.4}, {"O": 0.5, "I-PER": 0.45}]
    assert decode_probs(labels, rows) == ["B-PER", "O"]
    bonus = np.zeros((3, 3))
    bonus[1, 2] = 1.0  # B-PER -> I-PER
    assert decode_probs(labels, rows, transitions=Transitions(bonus)) == ["B-PER", "I-PER"]
    # An end score against O moves the last step off it; the mask still applies.
    end = np.array([-5.0, 0.0, 0.0])
    got = decode_probs(labels, rows, transitions=Transitions(np.zeros((3, 3)), end=end))
    assert got == ["B-PER", "I-PER"]
    start = np.array([5.0, 0.0, 0.0])
    got = decode_probs(labels, rows, transitions=Transitions(np.zeros((3, 3)), start=start))
    assert got == ["O", "O"]
    # A huge learned bonus for a forbidden step cannot beat the constraint.
    bad = np.zeros((3, 3))
    bad[0, 2] = 1e6  # O -> I-PER
    rows = [{"O": 0.9}, {"I-PER": 0.9}]
    assert decode_probs(labels, rows, transitions=Transitions(bad)) == ["O", "O"]


def test_transitions_from_dir(tmp_path: Path) -> None:
    assert Transitions.from_dir(tmp_path) is None
    matrix = np.arange(9, dtype=np.float32).reshape(3, 3)
    np.save(tmp_path / vt.TRANSITIONS_NAME, matrix)
    np.save(tmp_path / vt.END_NAME, np.array([1.0, 2.0, 3.0]))
    loaded = Transitions.from_dir(tmp_path)
    assert loaded is not None
    assert np.array_equal(loaded.matrix, matrix) and loaded.start is None
    assert loaded.end is not None and loaded.end.tolist() == [1.0, 2.0, 3.0]
    np.save(tmp_path / vt.START_NAME, np.zeros(4))
    with pytest.raises(ConfigError, match="shape"):
        Transitions.from_dir(tmp_path)
    np.save(tmp_path / vt.TRANSITIONS_NAME, np.zeros((3, 4)))
    with pytest.raises(ConfigError, match="square"):
        Transitions.from_dir(tmp_path)
    (tmp_path / vt.TRANSITIONS_NAME).write_text("not numpy")
    with pytest.raises(ConfigError, match="numpy.save"):
        Transitions.from_dir(tmp_path)
    with pytest.raises(ConfigError, match="finite"):
        Transitions(np.array([[0.0, np.nan], [0.0, 0.0]]))
    with pytest.raises(ConfigError, match="3 labels but the model has 5"):
        ViterbiDecoder(TagSet.from_labels(BIO), Transitions(np.zeros((3, 3))))


# --- configuration ---


def test_decode_choices_are_one_list() -> None:
    assert model_dir.DECODES == vt.DECODES


def test_config_field_is_read_and_validated(tmp_path: Path) -> None:
    (tmp_path / model_dir.CONFIG_NAME).write_text(json.dumps({"decode": "viterbi"}))
    assert model_dir.read_config(tmp_path)[0].decode == "viterbi"
    (tmp_path / model_dir.CONFIG_NAME).write_text(json.dumps({"decode": "beam"}))
    with pytest.raises(ConfigError, match="argmax, viterbi"):
        model_dir.read_config(tmp_path)


def test_head_rejects_unknown_decode(lookup_ner: Path) -> None:
    ner = ernie_deploy.load(lookup_ner)
    assert isinstance(ner, TokenClassifier) and ner.decode == "argmax"
    with pytest.raises(ConfigError, match="'beam'.*argmax, viterbi"):
        TokenClassifier(ner.engine, ner.labels, decode="beam")


# --- through the head ---


def spans(result: ernie_deploy.TokenClsResult) -> list[tuple[str, str, int, int]]:
    return [(e.text, e.label, e.start, e.end) for e in result.entities]


_LOADED: dict[Path, TokenClassifier] = {}


def head(
    path: Path,
    decode: str = "viterbi",
    labels: tuple[str, ...] | None = None,
    max_seq_length: int = 512,
    batch_size: int = 16,
) -> TokenClassifier:
    """A head over the model at `path`, loaded once (a new Engine per window / batch size)."""
    if path not in _LOADED:
        loaded = ernie_deploy.load(path, device="cpu")
        assert isinstance(loaded, TokenClassifier)
        _LOADED[path] = loaded
    base = _LOADED[path]
    engine = Engine(base.engine.model, base.engine.tokenizer, max_seq_length, batch_size)
    return TokenClassifier(engine, labels or base.labels, decode=decode)


MIXED = "2008年 Michael Jordan 在 New  York 打NBA，后来去了北京和重庆。"
TEXTS = [
    MIXED,
    "北京的涮肉，重庆的火锅，成都的小吃都是极具特色的美食。",
    "乔丹、科比、詹姆斯和姚明都是篮球运动员",
    "乔丹",
    "今天天气很好" * 30 + "詹姆斯",
]


def test_lookup_viterbi_equals_argmax(lookup_ner: Path) -> None:
    argmax, viterbi_head = head(lookup_ner, "argmax"), head(lookup_ner)
    assert [spans(r) for r in viterbi_head(TEXTS)] == [spans(r) for r in argmax(TEXTS)]
    tokens = argmax.engine.tokenizer.tokenize(TEXTS)
    for t, logits in zip(tokens, argmax.token_logits(TEXTS)):
        rows = logits[word_starts(t.word_ids)]
        tags = argmax.tags(rows, np.arange(len(rows)))
        assert viterbi_head.decoder.constraints.valid(tags)  # so the repair has nothing to do
        assert np.array_equal(raw_viterbi(viterbi_head.decoder, rows), tags)


# The gazetteer's columns renamed so its argmax output breaks BIOES rules: entities of one
# token end on B-X, three-token ones repeat E-X.
MESSY_LABELS = ("O", "B-PER", "E-PER", "B-ORG", "E-ORG", "B-LOC", "E-LOC")

words = st.sampled_from(
    list(GUIDE_ENTITIES)
    + ["New York", "2008", "的", "，", " ", "hello", "1999年", "😀", "Michael Jordan", "NBA"]
)
docs = st.lists(words, min_size=1, max_size=40).map("".join).filter(lambda s: s.strip())


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(docs, min_size=1, max_size=5), st.integers(6, 40), st.integers(1, 4))
def test_viterbi_windowed_and_batched_equal_whole(
    lookup_ner: Path, texts: list[str], length: int, bs: int
) -> None:
    for labels in (None, MESSY_LABELS):
        whole = head(lookup_ner, labels=labels, max_seq_length=512, batch_size=16)
        windowed = head(lookup_ner, labels=labels, max_seq_length=length, batch_size=bs)
        expected = [spans(r) for r in whole(texts)]
        assert [spans(r) for r in windowed(texts)] == expected
        assert [spans(windowed(t)[0]) for t in texts] == expected
        assert [spans(whole(t)[0]) for t in texts] == expected


def test_messy_labels_are_repaired(lookup_ner: Path) -> None:
    argmax = head(lookup_ner, "argmax", MESSY_LABELS)
    repaired = head(lookup_ner, "viterbi", MESSY_LABELS)
    text = "詹姆斯在2008年去了北京"
    # argmax: 詹 B-PER, 姆 E-PER, 斯 E-PER (a second PER), 2008 B-ORG left open.
    assert spans(argmax(text)[0]) == [
        ("詹姆", "PER", 0, 2),
        ("斯", "PER", 2, 3),
        ("2008", "ORG", 4, 8),
        ("北京", "LOC", 11, 13),
    ]
    got = spans(repaired(text)[0])
    # The third character cannot be a second E-PER, nor 2008 a B-ORG left open (whether
    # 2008 becomes O O or B-ORG E-ORG with the next character is a tie).
    assert got[0] == ("詹姆", "PER", 0, 2) and got[-1] == ("北京", "LOC", 11, 13)
    assert ("斯", "PER", 2, 3) not in got and ("2008", "ORG", 4, 8) not in got
    assert_valid(repaired, text)


def assert_valid(ner: TokenClassifier, text: str) -> None:
    """Entities slice the text in order; the word-level tag path obeys the constraints."""
    result = ner(text)[0]
    prev = 0
    for e in result.entities:
        assert e.text == text[e.start : e.end] and prev <= e.start < e.end
        assert 0.0 <= e.score <= 1.0
        prev = e.end
    t = ner.engine.tokenizer.tokenize([text])[0]
    tags = ner.tags(ner.token_logits([text])[0], t.word_ids)
    assert valid_reference(names(ner.labels, tags[word_starts(t.word_ids)]), ner.labels)


def test_words_not_pieces_are_decoded(lookup_ner: Path) -> None:
    ner = head(lookup_ner)
    labels = list(ner.labels)
    # Three words; the middle one has three pieces whose later rows say I-LOC (invalid
    # after B-PER if they were decoded), which the word-level path never sees.
    word_ids = np.array([0, 1, 1, 1, 2])
    probs = np.full((5, 7), 0.01)
    for t, label in enumerate(["B-PER", "I-PER", "I-LOC", "I-LOC", "O"]):
        probs[t, labels.index(label)] = 0.94
    tags = ner.tags(np.log(probs).astype(np.float32), word_ids)
    assert names(labels, tags) == ["B-PER", "I-PER", "I-PER", "I-PER", "O"]


def test_paddle_ner_spans_are_valid(paddle_ner: RefModel) -> None:
    argmax = head(paddle_ner.path, "argmax", max_seq_length=64)
    ner = head(paddle_ner.path, max_seq_length=64)
    texts = TEXTS + ["a b c 1 2 3 ℃ ¥ 😀", "Hello world, this is a longer English text."]
    invalid = 0
    for text in texts:
        assert_valid(ner, text)
        t = ner.engine.tokenizer.tokenize([text])[0]
        tags = argmax.tags(argmax.token_logits([text])[0], t.word_ids)
        invalid += not valid_reference(names(ner.labels, tags[word_starts(t.word_ids)]), ner.labels)
    assert invalid, "the random-init model's argmax paths were all valid: nothing was repaired"
    batched = [spans(r) for r in ner(texts)]
    assert batched == [spans(ner(t)[0]) for t in texts]


def test_long_text_path_is_valid() -> None:
    labels = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
    decoder = ViterbiDecoder(TagSet.from_labels(labels))
    logits = np.random.default_rng(0).normal(size=(3000, 7)).astype(np.float32) * 3
    assert not decoder.constraints.valid(logits.argmax(axis=1))  # the full programme runs
    assert decoder.constraints.valid(decoder.decode(logits))
