"""Evaluation metrics and labelled files: hand-computed cases plus hypothesis properties."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ernie_deploy.errors import EmptyInputError, InputEncodingError, InputError
from ernie_deploy.tasks.labelled import LabelledText, check_labels, read_labelled
from ernie_deploy.tasks.metrics import (
    PRF,
    accuracy,
    classification_scores,
    compare_results,
    entity_prf,
    label_prf,
    macro_f1,
    score_results,
    tags_to_spans,
)
from ernie_deploy.tasks.results import Entity, LabelScore, SeqClsResult, TokenClsResult


def test_entity_prf_perfect_and_none() -> None:
    gold = [[(0, 2, "PER"), (3, 5, "LOC")], [(1, 4, "ORG")]]
    perfect = entity_prf(gold, gold)
    assert (perfect.precision, perfect.recall, perfect.f1) == (1.0, 1.0, 1.0)
    assert (perfect.tp, perfect.fp, perfect.fn, perfect.support) == (3, 0, 0, 3)
    nothing = entity_prf(gold, [[], []])
    assert (nothing.precision, nothing.recall, nothing.f1) == (0.0, 0.0, 0.0)
    assert (nothing.tp, nothing.fp, nothing.fn) == (0, 0, 3)
    spurious = entity_prf([[], []], gold)
    assert (spurious.precision, spurious.recall, spurious.f1) == (0.0, 0.0, 0.0)
    # nothing to find and nothing found: perfect, not 0 / 0
    empty = entity_prf([[], []], [[], []])
    assert (empty.precision, empty.recall, empty.f1) == (1.0, 1.0, 1.0)
    assert entity_prf([], []).f1 == 1.0


def test_partial_overlap_and_wrong_type_are_errors() -> None:
    gold = [[(0, 3, "PER"), (5, 7, "LOC")]]
    pred = [[(0, 2, "PER"), (5, 7, "ORG")]]  # short span, wrong type
    s = entity_prf(gold, pred)
    assert (s.tp, s.fp, s.fn) == (0, 2, 2)
    assert s.f1 == 0.0


def test_micro_and_per_label_counts() -> None:
    gold = [[(0, 2, "PER"), (3, 5, "LOC"), (6, 8, "LOC")], [(0, 1, "ORG")]]
    pred = [[(0, 2, "PER"), (3, 5, "LOC"), (9, 10, "PER")], [(0, 1, "LOC")]]
    s = entity_prf(gold, pred)
    assert (s.tp, s.fp, s.fn) == (2, 2, 2)
    assert s.precision == pytest.approx(0.5)
    assert s.recall == pytest.approx(0.5)
    assert s.f1 == pytest.approx(0.5)
    assert [name for name, _ in s.per_label] == ["LOC", "ORG", "PER"]
    per = dict(s.per_label)
    assert (per["PER"].tp, per["PER"].fp, per["PER"].fn) == (1, 1, 0)
    assert per["PER"].precision == pytest.approx(0.5)
    assert per["PER"].recall == 1.0
    assert per["PER"].f1 == pytest.approx(2 / 3)
    assert (per["LOC"].tp, per["LOC"].fp, per["LOC"].fn) == (1, 1, 1)
    assert (per["ORG"].tp, per["ORG"].fp, per["ORG"].fn) == (0, 0, 1)
    assert s.label("MISC") == PRF(0, 0, 0)
    data = s.to_dict()
    assert data["f1"] == pytest.approx(0.5)
    assert data["per_label"]["PER"]["support"] == 1
    json.dumps(data)


def test_duplicate_spans_count_once_and_lists_are_accepted() -> None:
    s = entity_prf([[(0, 2, "PER"), (0, 2, "PER")]], [[[0, 2, "PER"]]])
    assert (s.tp, s.fp, s.fn) == (1, 0, 0)


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="texts"):
        entity_prf([[]], [])
    with pytest.raises(ValueError, match="labels"):
        accuracy(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        accuracy([], [])


def test_accuracy_and_macro_f1() -> None:
    gold = ["a", "a", "b", "c"]
    pred = ["a", "b", "b", "c"]
    assert accuracy(gold, pred) == 0.75
    # a: P 1, R 1/2 -> 2/3; b: P 1/2, R 1 -> 2/3; c: 1
    assert macro_f1(gold, pred) == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    # a label asked for that neither side uses: nothing to find, nothing predicted = 1.0
    assert macro_f1(gold, pred, labels=["a", "b", "c", "d"]) == pytest.approx(
        (2 / 3 + 2 / 3 + 1 + 1) / 4
    )
    assert macro_f1(gold, pred, labels=["a", "b"]) == pytest.approx(2 / 3)
    per = label_prf(gold, pred)
    assert per.precision == per.recall == per.f1 == 0.75  # micro = accuracy
    scores = classification_scores(gold, pred)
    assert (scores.examples, scores.accuracy) == (4, 0.75)
    assert dict(scores.summary()) == {"accuracy": 0.75, "macro_f1": scores.macro_f1}
    json.dumps(scores.to_dict())


def test_tags_to_spans() -> None:
    assert tags_to_spans(["B-PER", "I-PER", "O", "B-LOC"]) == [(0, 2, "PER"), (3, 4, "LOC")]
    assert tags_to_spans(["O", "I-LOC", "I-LOC"]) == [(1, 3, "LOC")]
    assert tags_to_spans(["O", "I-LOC", "I-LOC"], strict=True) == []
    # BMES (MSRA) and BIOES
    assert tags_to_spans(["B-ORG", "M-ORG", "E-ORG", "S-PER", "O"]) == [
        (0, 3, "ORG"),
        (3, 4, "PER"),
    ]
    assert tags_to_spans(["S-LOC", "S-LOC"]) == [(0, 1, "LOC"), (1, 2, "LOC")]
    assert tags_to_spans([]) == []
    assert tags_to_spans(["O", "O"]) == []


_spans = st.lists(
    st.tuples(st.integers(0, 30), st.integers(1, 5), st.sampled_from(["PER", "LOC", "ORG"])).map(
        lambda t: (t[0], t[0] + t[1], t[2])
    ),
    max_size=6,
)


@given(st.lists(_spans, max_size=8))
def test_gold_against_itself_is_perfect(gold: list[list[tuple[int, int, str]]]) -> None:
    s = entity_prf(gold, gold)
    assert s.f1 == s.precision == s.recall == 1.0
    assert all(p.f1 == 1.0 for _, p in s.per_label)


@given(st.lists(st.tuples(_spans, _spans), max_size=8))
def test_swapping_gold_and_pred_swaps_precision_and_recall(
    pairs: list[tuple[list[tuple[int, int, str]], list[tuple[int, int, str]]]],
) -> None:
    gold = [g for g, _ in pairs]
    pred = [p for _, p in pairs]
    a, b = entity_prf(gold, pred), entity_prf(pred, gold)
    assert a.precision == b.recall
    assert a.recall == b.precision
    assert a.f1 == b.f1
    assert 0.0 <= a.f1 <= 1.0
    assert min(a.precision, a.recall) <= a.f1 <= max(a.precision, a.recall) + 1e-12


@given(st.lists(st.sampled_from("abc"), min_size=1, max_size=20))
def test_labels_against_themselves_are_perfect(labels: list[str]) -> None:
    assert accuracy(labels, labels) == 1.0
    assert macro_f1(labels, labels) == 1.0


# -- labelled files ---------------------------------------------------------------------------


def write(path: Path, lines: list[str] | bytes) -> Path:
    if isinstance(lines, bytes):
        path.write_bytes(lines)
    else:
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_read_token_cls_jsonl(tmp_path: Path) -> None:
    f = write(
        tmp_path / "ner.jsonl",
        [
            json.dumps(
                {
                    "text": "乔丹在北京",
                    "entities": [
                        {"start": 0, "end": 2, "label": "PER", "text": "乔丹"},
                        {"start": 3, "end": 5, "label": "LOC"},
                    ],
                },
                ensure_ascii=False,
            ),
            "",
            json.dumps({"text": "没有实体", "entities": [], "id": 7}, ensure_ascii=False),
        ],
    )
    examples = read_labelled(f, "token_cls")
    assert examples == [
        LabelledText("乔丹在北京", entities=((0, 2, "PER"), (3, 5, "LOC")), line=1),
        LabelledText("没有实体", entities=(), line=3),
    ]


def test_read_seq_cls_jsonl_and_tsv(tmp_path: Path) -> None:
    f = write(tmp_path / "cls.jsonl", ['{"text": "好看", "label": "pos"}'])
    assert read_labelled(f, "seq_cls") == [LabelledText("好看", label="pos", line=1)]
    tsv = write(tmp_path / "cls.tsv", ["text\tlabel", "a\tb c\tneg", "好看\tpos"])
    assert read_labelled(tsv, "seq_cls") == [
        LabelledText("a\tb c", label="neg", line=2),
        LabelledText("好看", label="pos", line=3),
    ]


@pytest.mark.parametrize(
    ("name", "content", "task", "match"),
    [
        ("a.jsonl", ['{"text": "x", "label": "a"}', '{"text": "y"}'], "seq_cls", "line 2.*label"),
        ("a.jsonl", ['{"text": "xy", "label": "a"}'], "token_cls", 'line 1 has no "entities"'),
        ("a.jsonl", ["{not json"], "seq_cls", "line 1 is not valid JSON"),
        ("a.jsonl", ['{"label": "a"}'], "seq_cls", 'no non-empty string "text"'),
        ("a.jsonl", ['["x", "a"]'], "seq_cls", 'no non-empty string "text"'),
        (
            "a.jsonl",
            ['{"text": "xy", "entities": [{"start": 0, "end": 3, "label": "PER"}]}'],
            "token_cls",
            "outside its text of 2 characters",
        ),
        (
            "a.jsonl",
            ['{"text": "xy", "entities": [{"start": 0, "label": "PER"}]}'],
            "token_cls",
            'without "start", "end" and "label"',
        ),
        (
            "a.jsonl",
            ['{"text": "xyz", "entities": [{"start": 0, "end": 1, "label": "P", "text": "xy"}]}'],
            "token_cls",
            r"is not text\[0:1\]",
        ),
        ("a.tsv", ["x\ta", "no tab here"], "seq_cls", "line 2 is not text<TAB>label"),
        ("a.tsv", ["x\tPER"], "token_cls", "write .jsonl"),
        ("a.csv", ["x,a"], "seq_cls", "neither .jsonl nor .tsv"),
        ("a.jsonl", ['{"text": "x", "label": "a"}'], "embedding", "not embedding"),
    ],
)
def test_bad_labelled_files_name_the_fix(
    tmp_path: Path, name: str, content: list[str], task: str, match: str
) -> None:
    with pytest.raises(InputError, match=match):
        read_labelled(write(tmp_path / name, content), task)


def test_missing_empty_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_labelled(tmp_path / "nope.jsonl", "seq_cls")
    with pytest.raises(EmptyInputError):
        read_labelled(write(tmp_path / "e.jsonl", ["", "  "]), "seq_cls")
    with pytest.raises(EmptyInputError):
        read_labelled(write(tmp_path / "h.tsv", ["text\tlabel"]), "seq_cls")
    gbk = '{"text": "北京", "label": "a"}\n'.encode("gbk")
    with pytest.raises(InputEncodingError, match="line 1"):
        read_labelled(write(tmp_path / "g.jsonl", gbk), "seq_cls")


# -- scoring predictor results ----------------------------------------------------------------


def ner_result(text: str, spans: list[tuple[int, int, str]]) -> TokenClsResult:
    return TokenClsResult(text, tuple(Entity(text[s:e], lab, s, e, 0.9) for s, e, lab in spans))


def cls_result(text: str, label: str) -> SeqClsResult:
    return SeqClsResult(text, label, 0.9, (LabelScore(label, 0.9),), (label,))


def test_score_and_compare_results(tmp_path: Path) -> None:
    examples = [
        LabelledText("乔丹在北京", entities=((0, 2, "PER"), (3, 5, "LOC"))),
        LabelledText("姚明", entities=((0, 2, "PER"),)),
    ]
    fp32 = [ner_result("乔丹在北京", [(0, 2, "PER"), (3, 5, "LOC")]), ner_result("姚明", [])]
    int8 = [ner_result("乔丹在北京", [(0, 2, "PER"), (3, 4, "LOC")]), ner_result("姚明", [])]
    scores = score_results(examples, fp32)
    assert isinstance(scores, PRF)
    assert (scores.tp, scores.fp, scores.fn) == (2, 0, 1)
    cmp = compare_results(examples, fp32, int8, tmp_path / "f.jsonl", "token_cls")
    assert dict(cmp.reference)["f1"] == pytest.approx(0.8)
    assert dict(cmp.candidate)["f1"] == pytest.approx(2 / 5)  # tp 1, fp 1, fn 2
    assert cmp.delta("f1") == pytest.approx(2 / 5 - 0.8)
    assert cmp.agreement == 0.5
    assert any("f1" in line and "delta" in line for line in cmp.lines())
    json.dumps(cmp.to_dict())

    cls_examples = [LabelledText("a", label="x"), LabelledText("b", label="y")]
    same = [cls_result("a", "x"), cls_result("b", "x")]
    cmp = compare_results(cls_examples, same, same, tmp_path / "f.tsv", "seq_cls")
    assert dict(cmp.reference) == dict(cmp.candidate)
    assert dict(cmp.reference)["accuracy"] == 0.5
    assert cmp.agreement == 1.0 and cmp.delta("accuracy") == 0.0


def test_check_labels(tmp_path: Path) -> None:
    examples = [LabelledText("a", label="1"), LabelledText("b", label="0")]
    with pytest.raises(InputError, match="relabel"):
        check_labels(examples, {"negative", "positive"}, tmp_path / "f.tsv")
    check_labels(examples, {"1", "2"}, tmp_path / "f.tsv")  # some overlap: scored as it is
    check_labels([LabelledText("a", entities=())], {"PER"}, tmp_path / "f.jsonl")
