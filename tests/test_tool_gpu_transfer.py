"""tools/gpu_e5_heads.py: the base goes to a GPU machine as its 4-bit blocks and comes back
bit for bit; a fine-tuned checkpoint comes back as fp16 differences within their rounding."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("safetensors")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import gpu_e5_heads as g  # noqa: E402


def _base(path: Path) -> dict[str, np.ndarray]:
    """A tiny 'import': matrices that are q4_0 blocks (fp16 scales), a table that is not."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    q = rng.integers(0, 16, (40, 64)).astype(np.float32)
    q[:, ::32] = 0  # each block holds its -8 (the q4_0 rule: scale = signed max / -8)
    scale = rng.uniform(0.01, 0.05, (40, 2)) * rng.choice([-1, 1], (40, 2))  # q = 8 with a
    scale = scale.astype(np.float16).astype(np.float32)  # negative scale decodes to -0.0
    weights = {
        "embeddings.word_embeddings.weight": ((q - 8).reshape(40, 2, 32) * scale[..., None])
        .reshape(40, 64)
        .astype(np.float32),
        "embeddings.position_embeddings.weight": rng.normal(0, 0.02, (10, 64)).astype(np.float32),
        "encoder.layer.0.output.LayerNorm.bias": rng.normal(0, 0.1, 64).astype(np.float32),
    }
    assert np.signbit(weights["embeddings.word_embeddings.weight"][q == 8]).any()
    path.mkdir()
    save_file(weights, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps({"model_type": "xlm-roberta"}))
    (path / "tokenizer.json").write_text("{}")
    return weights


def test_base_travels_as_blocks_and_comes_back_bit_for_bit(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    weights = _base(tmp_path / "base")
    info = g.pack_base(tmp_path / "base", tmp_path / "packed")
    assert info["blocked"] == 1  # the table; the position table stays fp32
    assert g.unpack_base(tmp_path / "packed", tmp_path / "again")["bit_exact"]
    back = load_file(str(tmp_path / "again" / "model.safetensors"))
    for key, w in weights.items():
        assert back[key].tobytes() == w.tobytes(), key
    assert (tmp_path / "again" / "tokenizer.json").is_file()
    with pytest.raises(g.Refused, match="exists"):
        g.pack_base(tmp_path / "base", tmp_path / "packed")


def test_checkpoint_travels_as_fp16_differences(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.numpy import load_file, save_file

    weights = _base(tmp_path / "base")
    rng = np.random.default_rng(1)
    tuned = {
        f"roberta.{k}": w + rng.normal(0, 1e-3, w.shape).astype(np.float32)
        for k, w in weights.items()
    }
    tuned["classifier.weight"] = rng.normal(0, 0.1, (7, 64)).astype(np.float32)
    (tmp_path / "best").mkdir()
    save_file(tuned, str(tmp_path / "best" / "model.safetensors"))
    np.save(tmp_path / "best" / "crf_transitions.npy", np.eye(7, dtype=np.float32))
    info = {"hparams": {"base": "/tmp/w/base", "lr": 1e-4}, "step": 3}
    (tmp_path / "best" / "training_info.json").write_text(json.dumps(info))
    monkeypatch.setattr(g, "SHARD", 4096)  # the table's difference goes as row blocks
    info = g.deltas(tmp_path / "best", tmp_path / "base", tmp_path / "d")
    assert (info["delta16"], info["fp32"]) == (3, 1)
    assert 0 < info["max_abs_rebuild_error"] < 1e-6
    assert all(f.stat().st_size <= 4096 + 1024 for f in (tmp_path / "d").glob("delta-*"))
    record = g.apply(tmp_path / "d", tmp_path / "base", tmp_path / "out")
    back = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert set(back) == set(tuned) and record["tensors"] == 4
    for key, w in tuned.items():
        assert np.abs(back[key] - w).max() <= info["max_abs_rebuild_error"], key
    assert back["classifier.weight"].tobytes() == tuned["classifier.weight"].tobytes()
    assert (tmp_path / "out" / "crf_transitions.npy").is_file()
    hp = json.loads((tmp_path / "out" / "training_info.json").read_text())["hparams"]
    assert hp == {
        "base": str((tmp_path / "base").resolve()),
        "base_on_gpu_machine": "/tmp/w/base",
        "lr": 1e-4,
    }
    # another base, or a missing shard, is refused in one sentence
    other = tmp_path / "other"
    other.mkdir()
    save_file({k: v + 1 for k, v in weights.items()}, str(other / "model.safetensors"))
    with pytest.raises(g.Refused, match="not the base"):
        g.apply(tmp_path / "d", other, tmp_path / "out2")
    next((tmp_path / "d").glob("delta-*")).unlink()
    with pytest.raises(g.Refused, match="every tensor"):
        g.apply(tmp_path / "d", tmp_path / "base", tmp_path / "out3")
    assert not (tmp_path / "out3").exists() and not (tmp_path / "out3.partial").exists()


def test_a_missing_or_foreign_input_is_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.numpy import save_file

    (tmp_path / "foreign").mkdir()
    save_file({"x": np.zeros(2, np.float32)}, str(tmp_path / "foreign" / "a.safetensors"))
    (tmp_path / "foreign" / "packed_base.json").write_text("{}")  # no sha256 list
    for args in (
        ["unpack-base", str(tmp_path / "nowhere")],
        ["unpack-base", str(tmp_path / "foreign")],
    ):
        assert g.main([*args, str(tmp_path / "out")]) == 1
        err = capsys.readouterr().err
        assert "pass the whole directory" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
