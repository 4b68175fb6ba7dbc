"""Head options on deterministic graphs: multi-label, top-k, truncation, label sources."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import ernie_deploy
from ernie_deploy import errors
from ernie_deploy.tasks.engine import sigmoid, softmax

LABELS = [f"c{i}" for i in range(15)]


def test_softmax_top_k_and_order(bag_cls: Path) -> None:
    cls = ernie_deploy.load(bag_cls, "seq_cls", labels=LABELS, top_k=4, batch_size=3)
    texts = ["北京", "上海的天气", "乔丹" * 10, "北京"]
    logits = cls.logits(texts)
    results = cls(texts)
    for r, row in zip(results, softmax(logits)):
        assert [x.label for x in r.top_k] == [LABELS[j] for j in np.argsort(-row)[:4]]
        assert r.score == pytest.approx(float(row.max()))
        assert r.labels == (r.label,)
    assert results[0].to_dict() == results[3].to_dict()  # batch position does not matter


def test_multi_label_uses_sigmoid(bag_cls: Path) -> None:
    cls = ernie_deploy.load(bag_cls, "seq_cls", labels=LABELS, multi_label=True)
    text = "黄磊接受华少快问快答"
    probs = sigmoid(cls.logits([text]))[0]
    result = cls(text)[0]
    expected = {LABELS[j] for j in np.flatnonzero(probs >= 0.5)} or {LABELS[int(probs.argmax())]}
    assert set(result.labels) == expected
    assert result.label == LABELS[int(probs.argmax())]
    assert result.score == pytest.approx(float(probs.max()))
    assert result.score == pytest.approx(float(probs.max()))


def test_too_long_needs_truncate(bag_cls: Path) -> None:
    cls = ernie_deploy.load(bag_cls, "seq_cls", labels=LABELS, max_seq_length=16)
    with pytest.raises(errors.InputTooLongError, match="truncate"):
        cls(["短", "很长的文本" * 10])
    cut = ernie_deploy.load(bag_cls, "seq_cls", labels=LABELS, max_seq_length=16, truncate=True)
    assert cut("很长的文本" * 10)[0].label == cut("很长的文本" * 3)[0].label  # same first 14 tokens


def test_labels_from_label_file_and_own_config(bag_cls: Path, tmp_path: Path) -> None:
    d = tmp_path / "m"
    shutil.copytree(bag_cls, d)
    (d / "label.txt").write_text("\n".join(LABELS[::-1]) + "\n", encoding="utf-8")
    (d / "ernie_deploy.json").write_text(json.dumps({"task": "seq_cls"}), encoding="utf-8")
    assert ernie_deploy.load(d).labels == tuple(LABELS[::-1])
    (d / "ernie_deploy.json").write_text(json.dumps({"task": "seq_cls", "colour": 1}), "utf-8")
    with pytest.raises(errors.ConfigError, match="unknown keys colour"):
        ernie_deploy.load(d)
    (d / "ernie_deploy.json").write_text("{not json", "utf-8")
    with pytest.raises(errors.ConfigError, match="Cannot read"):
        ernie_deploy.load(d)


@pytest.mark.parametrize(
    "values, match",
    [
        ({"max_seq_length": "128"}, "max_seq_length .* must be a whole number, got '128'"),
        ({"multi_label": "false"}, "multi_label .* must be true or false, got 'false'"),
        ({"normalize": 1}, "normalize .* must be true or false"),
        ({"task": 5}, "task .* must be a string, got 5"),
        ({"pooling": ["cls"]}, "pooling .* must be a string"),
    ],
)
def test_own_config_values_of_the_wrong_type_are_one_sentence(
    bag_cls: Path, tmp_path: Path, values: dict[str, object], match: str
) -> None:
    # a JSON string "false" is refused, never read as true
    d = tmp_path / "m"
    shutil.copytree(bag_cls, d)
    (d / "ernie_deploy.json").write_text(json.dumps({"task": "seq_cls", **values}), "utf-8")
    with pytest.raises(errors.ConfigError, match=match):
        ernie_deploy.load(d)


def test_labels_of_the_wrong_type_are_one_sentence(bag_cls: Path) -> None:
    for bad in (5, {"O": 0}):
        with pytest.raises(errors.ConfigError, match="labels must be comma-separated names"):
            ernie_deploy.load(bag_cls, "seq_cls", labels=bad)  # type: ignore[arg-type]
    # any other iterable of names is a list of labels, as a list is
    names = [f"L{i}" for i in range(15)]
    for given in ({n: i for i, n in enumerate(names)}.keys(), np.array(names), iter(names)):
        assert ernie_deploy.load(bag_cls, "seq_cls", labels=given).labels == tuple(names)
    # a label file that is not there is no single label named "labels.txt"
    for missing in ("labels.txt", "conf/labels"):
        with pytest.raises(errors.ConfigError, match=f"The label file {missing} does not exist"):
            ernie_deploy.load(bag_cls, "seq_cls", labels=missing)


def test_unlabelled_classifier_gets_generic_labels(bag_cls: Path) -> None:
    assert ernie_deploy.load(bag_cls, "seq_cls").labels[:2] == ("LABEL_0", "LABEL_1")


def test_token_cls_without_labels_is_an_error(lookup_ner: Path, tmp_path: Path) -> None:
    d = tmp_path / "m"
    shutil.copytree(lookup_ner, d)
    (d / "ernie_deploy.json").unlink()
    with pytest.raises(errors.ConfigError, match="names no token labels"):
        ernie_deploy.load(d, "token_cls")


def test_wrong_task_for_graph_names_the_fix(lookup_ner: Path) -> None:
    with pytest.raises(errors.UnsupportedGraphError, match="no rank-2 output"):
        ernie_deploy.load(lookup_ner, "seq_cls", labels=[f"l{i}" for i in range(7)])


def test_embedding_graph_with_pooled_output_is_used_as_is(
    tmp_path: Path, chinese_vocab: Path
) -> None:
    from tests._lookup import build_bag_classifier

    d = tmp_path / "st"
    d.mkdir()
    (d / "vocab.txt").write_bytes(chinese_vocab.read_bytes())
    build_bag_classifier(d / "model.onnx", 21128, 16, output_name="sentence_embedding")
    raw = ernie_deploy.load(d, "embedding", normalize=False)
    unit = ernie_deploy.load(d, "embedding")
    assert raw.output == "sentence_embedding" and not raw.token_level
    texts = ["北京", "今天天气很好"]
    vectors = np.stack([r.vector for r in raw(texts)])
    assert vectors.shape == (2, 16)
    assert np.allclose(
        np.stack([r.vector for r in unit(texts)]),
        vectors / np.linalg.norm(vectors, axis=1, keepdims=True),
        atol=1e-6,
    )
