"""The Python API end to end on a deterministic NER graph: offsets, windowing, batching, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ernie_deploy
from ernie_deploy import errors
from tests._lookup import GUIDE_ENTITIES

MIXED = "2008年 Michael Jordan 在 New  York 打NBA，后来去了北京和重庆。"


def spans(result: ernie_deploy.TokenClsResult) -> list[tuple[str, str, int, int]]:
    return [(e.text, e.label, e.start, e.end) for e in result.entities]


def test_mixed_text_offsets_are_exact(lookup_ner: Path) -> None:
    ner = ernie_deploy.load(lookup_ner)
    result = ner(MIXED)[0]
    for e in result.entities:
        assert e.text == MIXED[e.start : e.end]
    assert spans(result) == [
        ("2008", "ORG", 0, 4),
        ("Michael Jordan", "PER", 6, 20),
        ("New  York", "LOC", 23, 32),
        ("NBA", "ORG", 34, 37),
        ("北京", "LOC", 42, 44),
        ("重庆", "LOC", 45, 47),
    ]
    # The guide's token-index - 1 positions are wrong here: its "2008" would be [0, 0].


def test_long_text_is_windowed_not_truncated(lookup_ner: Path) -> None:
    filler = "今天天气很好，我们去公园散步。"
    text = "北京" + filler * 140 + "乔丹"
    assert len(text) > 2000
    ner = ernie_deploy.load(lookup_ner, max_seq_length=128)
    result = ner(text)[0]
    assert spans(result) == [("北京", "LOC", 0, 2), ("乔丹", "PER", len(text) - 2, len(text))]


def test_entities_cross_window_boundaries(lookup_ner: Path) -> None:
    ner = ernie_deploy.load(lookup_ner, max_seq_length=8)  # 6 content tokens per window
    text = "。" * 5 + "詹姆斯" + "。" * 5 + "北京"
    assert spans(ner(text)[0]) == [("詹姆斯", "PER", 5, 8), ("北京", "LOC", 13, 15)]


words = st.sampled_from(
    list(GUIDE_ENTITIES)
    + ["New York", "2008", "的", "，", " ", "hello", "1999年", "😀", "Michael Jordan"]
)
docs = st.lists(words, min_size=1, max_size=60).map("".join).filter(lambda s: s.strip())


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(docs, min_size=1, max_size=6), st.integers(6, 40), st.integers(1, 4))
def test_windowed_and_batched_equal_whole(
    lookup_ner: Path, texts: list[str], length: int, bs: int
) -> None:
    whole = ernie_deploy.load(lookup_ner, max_seq_length=512, batch_size=16)
    windowed = ernie_deploy.load(lookup_ner, max_seq_length=length, batch_size=bs)
    expected = [spans(r) for r in whole(texts)]
    assert [spans(r) for r in windowed(texts)] == expected
    assert [spans(windowed(t)[0]) for t in texts] == expected
    for text, result in zip(texts, whole(texts)):
        for e in result.entities:
            assert e.text == text[e.start : e.end]


def test_stream_equals_predict(lookup_ner: Path) -> None:
    ner = ernie_deploy.load(lookup_ner)
    texts = [f"{i}北京{'，' * (i % 7)}乔丹" for i in range(50)]
    assert [r.to_dict() for r in ner.stream(texts, chunk_size=7)] == [
        r.to_dict() for r in ner(texts)
    ]


def test_stream_takes_any_iterable_and_checks_chunk_size(lookup_ner: Path) -> None:
    ner = ernie_deploy.load(lookup_ner)
    texts = [f"{i}北京乔丹" for i in range(10)]
    expected = [r.to_dict() for r in ner(texts)]
    for source in (
        (t for t in texts),
        np.array(texts),
        iter(texts),
        tuple(texts),
    ):
        assert [r.to_dict() for r in ner.stream(source, chunk_size=3)] == expected
    pd = pytest.importorskip("pandas")
    assert [r.to_dict() for r in ner.stream(pd.Series(texts), chunk_size=4)] == expected
    for bad in (0, -1, 1.5, True):
        with pytest.raises(errors.ConfigError, match="chunk_size must be a positive integer"):
            list(ner.stream(texts, chunk_size=bad))  # type: ignore[arg-type]
    with pytest.raises(errors.EmptyInputError, match="No texts were given"):
        list(ner.stream(iter([])))
    for bad_texts in (5, {"北京": 1}):  # a mapping's keys are no list of texts
        with pytest.raises(errors.InputError, match="iterable of strings"):
            list(ner.stream(bad_texts))  # type: ignore[arg-type]
    assert [r.to_dict() for r in ner.stream(texts, chunk_size=np.int64(4))] == expected
    # a bad text raises when its chunk is reached, after the chunks before it
    got = []
    with pytest.raises(errors.EmptyInputError, match="Text 4 is empty"):
        for r in ner.stream(iter(["北京", "乔丹", "重庆", "成都", " "]), chunk_size=2):
            got.append(r)
    assert len(got) == 4


def test_to_dict_is_json_ready(lookup_ner: Path) -> None:
    import json

    result = ernie_deploy.load(lookup_ner)("我在北京")[0]
    assert json.loads(json.dumps(result.to_dict())) == {
        "text": "我在北京",
        "entities": [
            {
                "text": "北京",
                "label": "LOC",
                "start": 2,
                "end": 4,
                "score": result.entities[0].score,
            }
        ],
    }
    with pytest.raises(AttributeError):
        result.entities[0].label = "PER"  # type: ignore[misc]


def test_bad_input_errors(lookup_ner: Path, tmp_path: Path) -> None:
    ner = ernie_deploy.load(lookup_ner)
    with pytest.raises(errors.EmptyInputError, match="empty"):
        ner(["ok", "  "])
    with pytest.raises(errors.EmptyInputError):
        ner([])
    with pytest.raises(errors.InputError, match="not a string"):
        ner([b"bytes"])  # type: ignore[list-item]
    with pytest.raises(errors.ModelNotFoundError, match="does not exist"):
        ernie_deploy.load(tmp_path / "nowhere")
    with pytest.raises(errors.LabelMismatchError, match="outputs 7 classes but 3 labels"):
        ernie_deploy.load(lookup_ner, labels=["O", "B-X", "I-X"])
    with pytest.raises(errors.UnknownTaskError, match="use one of"):
        ernie_deploy.load(lookup_ner, task="ner")
    with pytest.raises(errors.ConfigError, match="Unknown device"):
        ernie_deploy.load(lookup_ner, device="tpu")

    broken = tmp_path / "broken"
    shutil.copytree(lookup_ner, broken)
    (broken / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(errors.ModelLoadError, match="cannot load"):
        ernie_deploy.load(broken)
    (broken / "model.onnx").write_bytes((lookup_ner / "model.onnx").read_bytes())
    (broken / "vocab.txt").unlink()
    with pytest.raises(errors.TokenizerNotFoundError, match="No tokenizer"):
        ernie_deploy.load(broken)


def test_bare_onnx_plus_tokenizer_dir(lookup_ner: Path, tmp_path: Path) -> None:
    onnx_file = tmp_path / "ner_model.onnx"
    onnx_file.write_bytes((lookup_ner / "model.onnx").read_bytes())
    ner = ernie_deploy.load(
        onnx_file,
        task="token_cls",
        tokenizer_dir=lookup_ner,
        labels=["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"],
    )
    assert spans(ner("乔丹")[0]) == [("乔丹", "PER", 0, 2)]
    with pytest.raises(errors.TokenizerNotFoundError, match="does not exist"):
        ernie_deploy.load(onnx_file, task="token_cls", tokenizer_dir=tmp_path / "missing")


def test_scores_are_probabilities(lookup_ner: Path) -> None:
    result = ernie_deploy.load(lookup_ner)("北京")[0]
    score = result.entities[0].score
    b_loc = np.exp(2) / np.exp([1.0, 0, 0, 0, 0, 2.0, 0]).sum()  # 北: B-LOC
    i_loc = np.exp(3) / np.exp([1.0, 0, 0, 0, 0, 0, 3.0]).sum()  # 京: I-LOC
    assert score == pytest.approx((b_loc + i_loc) / 2, rel=1e-5)  # mean over the entity


def test_decode_mode_from_argument_config_and_crf_file(lookup_ner: Path, tmp_path: Path) -> None:
    from ernie_deploy.errors import ConfigError

    assert ernie_deploy.load(lookup_ner).decode == "argmax"  # type: ignore[union-attr]
    assert ernie_deploy.load(lookup_ner, decode="viterbi").decode == "viterbi"  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="argmax, viterbi"):
        ernie_deploy.load(lookup_ner, decode="beam")
    copy = tmp_path / "ner"
    shutil.copytree(lookup_ner, copy)
    config = json.loads((copy / "ernie_deploy.json").read_text("utf-8"))
    (copy / "ernie_deploy.json").write_text(json.dumps({**config, "decode": "viterbi"}), "utf-8")
    assert ernie_deploy.load(copy).decode == "viterbi"  # type: ignore[union-attr]
    (copy / "ernie_deploy.json").write_text(json.dumps(config), "utf-8")
    n = len(ernie_deploy.load(copy).labels)  # type: ignore[union-attr]
    np.save(copy / "crf_transitions.npy", np.zeros((n, n), dtype=np.float32))
    assert ernie_deploy.load(copy).decode == "viterbi"  # type: ignore[union-attr]


def test_an_empty_query_is_named_in_plain_english() -> None:
    from ernie_deploy.tasks.batching import check_texts

    with pytest.raises(errors.EmptyInputError, match="remove empty queries"):
        check_texts([" "], what="query")
    with pytest.raises(errors.EmptyInputError, match="No queries were given"):
        check_texts([], what="query")
