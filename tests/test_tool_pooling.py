"""tools/train_e5_heads.py --pooling mean: the sentiment classifier reads the masked mean of the
encoder's outputs in training, scoring and the saved config (which convert hf exports); a run from
a mean-pooled base keeps it, NER refuses it, and a soup never mixes the two poolings."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import export_e5_heads  # noqa: E402
import soup_e5_heads as soup  # noqa: E402
import train_e5_heads  # noqa: E402
from e5_trainer import E5Trainer  # noqa: E402

from tests.test_tool_soup import tiny_data, tiny_member  # noqa: E402
from tests.test_tool_train_rates import trainer as rates_trainer  # noqa: E402


def trainer(tmp_path: Path, *flags: str) -> E5Trainer:
    """A tiny sentiment trainer without dropout, so two forward passes agree."""
    return rates_trainer(tmp_path, "--dropout", "0", *flags)


def by_hand(t: E5Trainer, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean of the last hidden states, then dense, tanh and out_proj, written out."""
    hidden = t.model.roberta(input_ids=ids, attention_mask=mask)[0]
    m = mask[..., None].float()
    x = torch.tanh(t.model.classifier.dense((hidden * m).sum(1) / m.sum(1)))
    return t.model.classifier.out_proj(x)


def test_mean_pooling_is_what_the_head_reads_and_learns_from(tmp_path: Path) -> None:
    mean, first = trainer(tmp_path / "m", "--pooling", "mean"), trainer(tmp_path / "c")
    batch = mean.train_set[:4]
    ids, mask, lab = (mean.tensor(x) for x in mean.collate(batch))
    with torch.no_grad():
        want = by_hand(mean, ids, mask)
        assert torch.allclose(mean.forward(ids, mask), want, atol=1e-6)
        assert not torch.allclose(first.forward(ids, mask), want, atol=1e-3)
        scored = np.stack(mean.logits(batch))
    assert np.allclose(scored, want.numpy(), atol=1e-5)
    loss = torch.nn.functional.cross_entropy(want, lab)
    assert mean.step(batch) == pytest.approx(float(loss), rel=1e-5)
    assert mean.model.config.classifier_pooling == "mean"
    assert not hasattr(first.model.config, "classifier_pooling")  # older configs unchanged


def test_the_saved_head_says_mean_and_a_run_from_it_keeps_it(tmp_path: Path) -> None:
    base = tiny_member(tmp_path / "base", 1, layers=3)  # the depth trainer() builds
    for name in ("tokenizer_config.json", "special_tokens_map.json"):  # final/ copies them
        (base / name).write_text("{}", "utf-8")
    work = tmp_path / "w"
    work.mkdir()
    shutil.copy(tiny_data(tmp_path / "data.pkl"), work / "data.pkl")
    args = ["sentiment", "--workdir", str(work), "--base", str(base), "--layers", "0"]
    args += ["--epochs", "1", "--batch-size", "4", "--eval-minutes", "0", "--threads", "1"]
    assert train_e5_heads.main([*args, "--pooling", "mean"]) == 0
    final = work / "final"
    assert json.loads((final / "config.json").read_text())["classifier_pooling"] == "mean"
    info = json.loads((final / "training_info.json").read_text())
    assert info["hparams"]["pooling"] == "mean"
    assert (
        train_e5_heads.parse_args(["sentiment", "--workdir", "x", "--base", str(final)]).pooling
        == "mean"
    )
    assert (
        train_e5_heads.parse_args(["sentiment", "--workdir", "x", "--base", str(base)]).pooling
        == "cls"
    )
    features = {
        "input_ids": np.array([[0, 7, 9, 2, 1]]),
        "attention_mask": np.array([[1, 1, 1, 1, 0]]),
    }
    t = trainer(tmp_path / "t", "--pooling", "mean")
    from safetensors.torch import load_file

    t.model.load_state_dict(load_file(str(final / "model.safetensors")))
    with torch.no_grad():
        want = by_hand(t, *(torch.from_numpy(features[k]) for k in features)).numpy()
    assert np.allclose(export_e5_heads.torch_logits(final, features, "sentiment"), want, atol=1e-5)


def test_ner_refuses_mean_pooling_and_a_soup_refuses_to_mix_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, work = tiny_member(tmp_path / "base", 1), tmp_path / "ner"
    code = train_e5_heads.main(
        ["ner", "--workdir", str(work), "--base", str(base), "--pooling", "mean"]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "sentiment task only" in err
    assert not work.exists()
    other = tiny_member(tmp_path / "other", 2)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "classifier_pooling": "mean"}))
    assert "pooling (--pooling)" in soup.check_members([base, other])
