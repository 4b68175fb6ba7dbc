"""tools/ensemble_e5_heads.py: the ensemble ceiling quoted for sentiment, and its refusals."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import ensemble_e5_heads as ens  # noqa: E402

from tests.test_tool_soup import tiny_data, tiny_member  # noqa: E402


def test_report_averages_probabilities_and_finds_texts_all_miss() -> None:
    labels = np.array([0, 1, 1, 0])
    sure_wrong = np.array([[0.0, 9.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])  # right on 1
    unsure_right = np.array([[0.4, 0.0], [0.0, 0.4], [0.0, 0.4], [0.0, 1.0]])  # right on 0-2
    r = ens.report({"a": sure_wrong, "b": unsure_right}, labels)
    assert r["members"] == {"a": 0.25, "b": 0.75}
    # text 0: a's confident wrong vote outweighs b's weak right one; text 2: b's weak vote
    # loses to a's stronger one; text 1 both right; text 3 both wrong
    assert r["ensemble"] == 0.25
    assert r["wrong_by_all"] == [3]
    # probabilities, not logits, are averaged: two fairly sure votes beat one very sure one
    # (the mean of the logits, [1.33, 3.33], would say 1)
    votes = {"x": np.array([[0.0, 10.0]]), "y": np.array([[2.0, 0.0]]), "z": np.array([[2.0, 0.0]])}
    assert ens.report(votes, np.array([0]))["ensemble"] == 1.0


def test_cli_writes_the_texts_every_member_misses(tmp_path: Path, capsys) -> None:
    members = [str(tiny_member(tmp_path / f"m{i}", i)) for i in range(3)]
    data = tiny_data(tmp_path / "data.pkl")
    wrong = tmp_path / "wrong.jsonl"
    args = ["--members", *members, "--data", str(data), "--threads", "1"]
    assert ens.main([*args, "--wrong-out", str(wrong)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    held = next(x for x in lines if x.get("split") == "heldout")
    assert set(held["members"]) == set(members) and 0 <= held["ensemble"] <= 1
    rows = [json.loads(x) for x in wrong.read_text("utf-8").splitlines()]
    assert len(rows) == held["wrong_by_all"]
    for row in rows:
        assert row["text"] == f"heldout {row['index']}" and row["label"] in (0, 1)
    assert not wrong.with_name("wrong.jsonl.tmp").exists()
    # an existing --wrong-out is refused and kept
    wrong.write_text("mine", "utf-8")
    assert ens.main([*args, "--wrong-out", str(wrong)]) == 2
    err = capsys.readouterr().err
    assert "exists: pass a new --wrong-out" in err and err.count("\n") == 1
    assert wrong.read_text("utf-8") == "mine"


def test_cli_refuses_ner_heads_one_member_and_missing_data(tmp_path: Path, capsys) -> None:
    a, b = tiny_member(tmp_path / "a", 1), tiny_member(tmp_path / "b", 2)
    data = tiny_data(tmp_path / "data.pkl")
    assert ens.main(["--members", str(a), "--data", str(data)]) == 2
    assert "at least two" in capsys.readouterr().err
    assert ens.main(["--members", str(a), str(b), "--data", str(tmp_path / "no.pkl")]) == 2
    assert "is not a file" in capsys.readouterr().err
    for m in (a, b):
        np.save(m / "crf_transitions.npy", np.zeros((7, 7)))
    assert ens.main(["--members", str(a), str(b), "--data", str(data)]) == 2
    assert "NER heads" in capsys.readouterr().err


def test_doubtful_flags_labels_the_ensemble_calls_the_other_way() -> None:
    labels = np.array([0, 1, 1])
    a = np.array([[3.0, 0.0], [3.0, 0.0], [0.0, 3.0]])  # p(label): 0.95, 0.05, 0.95
    b = np.array([[3.0, 0.0], [0.0, 0.0], [3.0, 0.0]])  # p(label): 0.95, 0.50, 0.05
    assert ens.doubtful({"a": a}, labels, 0.1) == [1]
    assert ens.doubtful({"a": a, "b": b}, labels, 0.1) == []  # means 0.95, 0.27, 0.50
    assert ens.doubtful({"a": a, "b": b}, labels, 0.3) == [1]


def test_flag_train_writes_a_list_train_e5_heads_leaves_out(tmp_path: Path, capsys) -> None:
    import train_e5_heads
    from safetensors.torch import load_file, save_file

    members = []
    for i in range(2):  # heads that always say "positive": every negative label is doubtful
        m = tiny_member(tmp_path / f"m{i}", i)
        state = load_file(str(m / "model.safetensors"))
        state["classifier.out_proj.bias"] = torch.tensor([-9.0, 9.0])
        save_file(state, str(m / "model.safetensors"))
        members.append(str(m))
    data = tiny_data(tmp_path / "data.pkl")
    loaded = pickle.loads(data.read_bytes())
    flagged = tmp_path / "flagged.jsonl"
    args = ["--members", *members, "--data", str(data), "--threads", "1"]
    assert ens.main([*args, "--flag-train", str(flagged)]) == 0
    rows = [json.loads(x) for x in flagged.read_text("utf-8").splitlines()]
    negatives = [i for i, e in enumerate(loaded["train"]["examples"]) if e[1] == 0]
    assert negatives and [r["index"] for r in rows] == negatives
    assert [r["text"] for r in rows] == [f"train {i}" for i in negatives]
    kept, why = train_e5_heads.exclude_train(loaded, flagged)
    assert why is None and kept["facts"]["excluded_train_texts"] == len(rows)
    assert kept["train"]["texts"] == [
        t for t in loaded["train"]["texts"] if t not in {r["text"] for r in rows}
    ]
    assert kept["dev"] is loaded["dev"] and kept["heldout"] is loaded["heldout"]
    assert ens.main([*args, "--flag-train", str(flagged)]) == 2  # never replaced
    assert "exists: pass a new --flag-train" in capsys.readouterr().err
    assert ens.main([*args, "--flag-train", str(tmp_path / "x.jsonl"), "--flag-below", "0.7"]) == 2


def test_exclude_train_refuses_lists_from_another_split_and_bad_files(tmp_path: Path) -> None:
    import train_e5_heads

    data = pickle.loads(tiny_data(tmp_path / "data.pkl").read_bytes())
    other = tmp_path / "other.jsonl"
    other.write_text('{"text": "heldout 3"}\n{"text": "train 1"}\n', "utf-8")
    same, why = train_e5_heads.exclude_train(data, other)
    assert same is data and "1 of its 2 texts are not in this run's training split" in why
    bad = tmp_path / "bad.jsonl"
    bad.write_text("train 1\n", "utf-8")
    assert "not a JSONL file" in train_e5_heads.exclude_train(data, bad)[1]
    assert (
        train_e5_heads.main(
            ["ner", "--workdir", str(tmp_path / "w"), "--exclude-train", str(other)]
        )
        == 2
    )
    assert not (tmp_path / "w").exists()


def test_folds_partition_the_training_split_and_are_seeded() -> None:
    import e5_heads_data as hd

    parts = [hd.fold_indices(11, k, 3, 42) for k in (1, 2, 3)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(11))
    assert sorted(len(p) for p in parts) == [3, 4, 4]
    assert np.array_equal(parts[0], hd.fold_indices(11, 1, 3, 42))
    assert not np.array_equal(parts[0], hd.fold_indices(11, 1, 3, 43))
    assert hd.parse_fold("2/2") == (2, 2)
    for bad in ("3/2", "0/2", "1/1", "x", "1/"):
        with pytest.raises(ValueError):
            hd.parse_fold(bad)


def test_hold_out_fold_is_drawn_over_the_whole_split(tmp_path: Path) -> None:
    import e5_heads_data as hd
    import train_e5_heads

    data = pickle.loads(tiny_data(tmp_path / "data.pkl").read_bytes())
    texts = data["train"]["texts"]
    fold2 = {texts[i] for i in hd.fold_indices(len(texts), 2, 2, 42)}
    listed = tmp_path / "x.jsonl"
    listed.write_text(json.dumps({"text": texts[0]}) + "\n", "utf-8")
    less, why = train_e5_heads.exclude_train(data, listed)
    assert why is None
    kept = train_e5_heads.hold_out_fold(less, "2/2", 42, texts)
    assert set(kept["train"]["texts"]) == set(texts) - fold2 - {texts[0]}
    assert kept["facts"]["held_out_fold_texts"] == len(fold2 - {texts[0]})
    assert (
        train_e5_heads.main(["ner", "--workdir", str(tmp_path / "w"), "--hold-out-fold", "1/2"])
        == 2
    )
    with pytest.raises(SystemExit) as stop:
        train_e5_heads.parse_args(["sentiment", "--workdir", "w", "--hold-out-fold", "3/2"])
    assert stop.value.code == 2 and not (tmp_path / "w").exists()


def test_flag_fold_flags_only_the_fold_the_members_never_saw(tmp_path: Path, capsys) -> None:
    import e5_heads_data as hd
    from safetensors.torch import load_file, save_file

    m = tiny_member(tmp_path / "m", 0)
    state = load_file(str(m / "model.safetensors"))
    state["classifier.out_proj.bias"] = torch.tensor([-9.0, 9.0])  # always "positive"
    save_file(state, str(m / "model.safetensors"))
    data = tiny_data(tmp_path / "data.pkl")
    train = pickle.loads(data.read_bytes())["train"]["examples"]
    flagged = tmp_path / "flagged.jsonl"
    args = ["--members", str(m), "--data", str(data), "--threads", "1"]  # one member is enough
    assert ens.main([*args, "--flag-train", str(flagged), "--flag-fold", "1/2"]) == 0
    fold = hd.fold_indices(len(train), 1, 2, 42).tolist()
    want = [i for i in fold if train[i][1] == 0]
    assert (
        want and [json.loads(x)["index"] for x in flagged.read_text("utf-8").splitlines()] == want
    )
    assert ens.main([*args, "--flag-fold", "1/2"]) == 2  # a fold needs --flag-train
    assert "needs --flag-train" in capsys.readouterr().err
    assert ens.main([*args, "--flag-train", str(tmp_path / "y"), "--flag-fold", "3/2"]) == 2
    assert "--flag-fold" in capsys.readouterr().err and not (tmp_path / "y").exists()


@pytest.mark.parametrize("tool", ["ensemble", "soup"])
def test_a_bad_thread_count_is_one_sentence(tmp_path: Path, capsys, tool: str) -> None:
    import soup_e5_heads

    a, b = tiny_member(tmp_path / "a", 1), tiny_member(tmp_path / "b", 2)
    args = ["--members", str(a), str(b), "--data", str(tiny_data(tmp_path / "d.pkl"))]
    main = ens.main if tool == "ensemble" else soup_e5_heads.main
    if tool == "soup":
        args = ["sentiment", *args, "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as stop:
        main([*args, "--threads", "0"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1
    assert "--threads: '0' is not an integer at least 1" in err
    assert not (tmp_path / "o").exists()
