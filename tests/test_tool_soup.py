"""tools/soup_e5_heads.py: the weight average a shipped head may come from, and its refusals.

A soup that averaged the wrong tensors, or averaged members of different shapes or tokenizers,
would ship a model no run trained; the greedy choice must also never pick a soup worse on dev
than its best member.
"""

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

import soup_e5_heads as soup  # noqa: E402


def tiny_member(path: Path, seed: int, layers: int = 2) -> Path:
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    torch.manual_seed(seed)
    cfg = XLMRobertaConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=40,
        num_labels=2,
    )
    XLMRobertaForSequenceClassification(cfg).save_pretrained(str(path))
    (path / "tokenizer.json").write_text('{"tiny": true}', "utf-8")
    return path


def tiny_data(path: Path) -> Path:
    """A pickled train / dev / held-out split of 8 random sentiment examples each."""
    rng = np.random.default_rng(0)
    examples = [
        (np.concatenate(([0], rng.integers(5, 40, size=n), [2])).astype(np.int32), int(n % 2))
        for n in rng.integers(3, 12, size=24)
    ]
    data = {
        name: {"examples": examples[k : k + 8], "texts": [f"{name} {i}" for i in range(8)]}
        for name, k in (("train", 0), ("dev", 8), ("heldout", 16))
    }
    path.write_bytes(pickle.dumps(data))
    return path


def test_average_is_the_mean_of_every_float_tensor(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    a = load_file(str(tiny_member(tmp_path / "a", 1) / "model.safetensors"))
    b = load_file(str(tiny_member(tmp_path / "b", 2) / "model.safetensors"))
    avg = soup.average([a, b])
    assert set(avg) == set(a)
    for k in a:
        if a[k].is_floating_point():
            assert not torch.equal(a[k], b[k]) or k.endswith("bias") or "LayerNorm" in k
            torch.testing.assert_close(avg[k], (a[k] + b[k]) / 2)


def test_members_of_other_shapes_or_tokenizers_are_refused(tmp_path: Path) -> None:
    a, b = tiny_member(tmp_path / "a", 1), tiny_member(tmp_path / "b", 2)
    assert soup.check_members([a, b]) is None
    deeper = tiny_member(tmp_path / "c", 3, layers=3)
    assert "one shape" in soup.check_members([a, deeper])
    (b / "tokenizer.json").write_text('{"other": true}', "utf-8")
    assert "one shape" in soup.check_members([a, b])
    assert "holds no config.json" in soup.check_members([a, tmp_path])
    crf = tiny_member(tmp_path / "d", 4)
    np.save(crf / "crf_transitions.npy", np.zeros((7, 7)))
    assert "CRF tables" in soup.check_members([a, crf])
    np.save(b / "crf_transitions.npy", np.ones((7, 7)))
    (b / "tokenizer.json").write_bytes((a / "tokenizer.json").read_bytes())
    assert soup.check_members([b, crf]) is None
    prompted = tiny_member(tmp_path / "e", 5)
    info = {"hparams": {"prompt": "query: "}}
    (prompted / "training_info.json").write_text(json.dumps(info), "utf-8")
    assert "prompt (--prompt)" in soup.check_members([a, prompted])


def test_cli_refuses_an_existing_out_and_a_single_member(tmp_path: Path, capsys) -> None:
    a, b = tiny_member(tmp_path / "a", 1), tiny_member(tmp_path / "b", 2)
    assert soup.main(["sentiment", "--members", str(a), str(b), "--out", str(a)]) == 2
    err = capsys.readouterr().err
    assert "exists: pass a new --out" in err and err.count("\n") == 1
    assert soup.main(["sentiment", "--members", str(a), "--out", str(tmp_path / "o")]) == 2
    assert "at least two" in capsys.readouterr().err
    missing = tmp_path / "no.pkl"
    args = ["sentiment", "--members", str(a), str(b), "--out", str(tmp_path / "o")]
    assert soup.main([*args, "--data", str(missing)]) == 2
    assert "is not a file" in capsys.readouterr().err and not (tmp_path / "o").exists()
    assert json.loads((a / "config.json").read_text("utf-8"))["num_hidden_layers"] == 2
    (tmp_path / "o.tmp").mkdir()  # someone's directory next to --out is neither used nor removed
    (tmp_path / "o.tmp" / "keep.txt").write_text("mine", "utf-8")
    assert soup.main(args) == 2
    assert "o.tmp exists" in capsys.readouterr().err
    assert (tmp_path / "o.tmp" / "keep.txt").read_text("utf-8") == "mine"


def test_greedy_soup_is_never_worse_on_dev_than_its_best_member(tmp_path: Path) -> None:
    """Tiny members on a tiny dev / held-out split: the written soup scores its recorded dev."""
    pkl = tiny_data(tmp_path / "data.pkl")
    members = [str(tiny_member(tmp_path / f"m{i}", i)) for i in range(3)]
    out = tmp_path / "soup"
    args = ["sentiment", "--members", *members, "--out", str(out), "--data", str(pkl)]
    assert soup.main([*args, "--threads", "1", "--report"]) == 0
    info = json.loads((out / "soup_info.json").read_text("utf-8"))
    assert info["written"]["dev"] >= max(m["dev"] for m in info["members"])
    assert (
        info["written"]["ingredients"][0] == max(info["members"], key=lambda m: m["dev"])["member"]
    )
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert not (tmp_path / "soup.tmp").exists()
    record = json.loads((out / "training_info.json").read_text("utf-8"))["soup"]
    assert [i["dir"] for i in record["ingredients"]] == info["written"]["ingredients"]
    assert record["dev"] == info["written"]["dev"] and str(out) in record["command"]


def test_crf_tables_are_averaged_with_the_weights(tmp_path: Path) -> None:
    a, b = tiny_member(tmp_path / "a", 1), tiny_member(tmp_path / "b", 2)
    for member, value in ((a, 0.0), (b, 2.0)):
        for name in ("crf_transitions.npy", "crf_start_transitions.npy", "crf_end_transitions.npy"):
            shape = (7, 7) if name == "crf_transitions.npy" else (7,)
            np.save(member / name, np.full(shape, value, dtype=np.float32))
    mean = soup.average([soup.load_member(a), soup.load_member(b)])
    assert mean["crf::transitions"].shape == (7, 7)
    for key in ("crf::transitions", "crf::start", "crf::end"):
        assert torch.allclose(mean[key], torch.ones_like(mean[key]))
    assert not any("crf" in k for k in soup.load_member(tiny_member(tmp_path / "c", 3)))


def test_members_trained_on_dev_need_the_uniform_average(tmp_path: Path, capsys) -> None:
    """A --train-on-dev member has learnt dev: the greedy rule is refused, --uniform writes the
    mean of every member, whatever their dev scores."""
    from safetensors.torch import load_file

    pkl = tiny_data(tmp_path / "data.pkl")
    members = [tiny_member(tmp_path / f"m{i}", i) for i in range(3)]
    hp = {"workdir": str(tmp_path / "run"), "seed": 1, "train_on_dev": True}
    (members[1] / "training_info.json").write_text(json.dumps({"hparams": hp}), "utf-8")
    out = tmp_path / "soup"
    args = ["sentiment", "--members", *map(str, members), "--out", str(out), "--data", str(pkl)]
    assert soup.main([*args, "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert "trained on the dev split" in err and "--uniform" in err and err.count("\n") == 1
    assert not out.exists()
    assert soup.main([*args, "--threads", "1", "--uniform"]) == 0
    info = json.loads((out / "soup_info.json").read_text("utf-8"))
    assert info["written"]["soup"] == "uniform" and info["rule"].startswith("uniform average")
    assert info["written"]["ingredients"] == [str(m) for m in members]
    written = load_file(str(out / "model.safetensors"))
    mean = soup.average([soup.load_member(m) for m in members])
    for key, value in written.items():
        torch.testing.assert_close(value, mean[key])
    record = json.loads((out / "training_info.json").read_text("utf-8"))["soup"]
    assert record["dev_trained_on"] is True and record["command"].endswith("--uniform")
