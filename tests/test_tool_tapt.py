"""tools/tapt_e5.py: BERT's masking rule on a collated batch, a head-only start that leaves the
encoder untouched, and a final/ that train_e5_heads.py takes as its --base."""

from __future__ import annotations

import json
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import tapt_e5  # noqa: E402
import train_e5_heads  # noqa: E402

from tests.test_tool_soup import tiny_data, tiny_member  # noqa: E402

MASK = 39  # tiny_member's vocabulary has 40 pieces; XLM-R's <mask> is the last


def batch(rng: np.random.Generator, rows: int = 64, width: int = 50) -> tuple[np.ndarray, ...]:
    lengths = rng.integers(3, width + 1, size=rows)
    ids = np.ones((rows, width), dtype=np.int64)  # <pad>
    attention = np.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = np.concatenate(([0], rng.integers(3, MASK + 1, size=n - 2), [2]))
        attention[i, :n] = 1
    return ids, attention


def test_masks_follow_bert_rule_and_never_touch_special_pieces() -> None:
    ids, attention = batch(np.random.default_rng(0), rows=400)
    inputs, labels = tapt_e5.choose_masks(ids, attention, np.random.default_rng(1), 0.15, 4, MASK)
    chosen = labels != -100
    can = (attention == 1) & (ids >= 4) & (ids != MASK)
    assert not (chosen & ~can).any()  # no <s>, </s>, <unk>, padding or <mask> is chosen
    assert (labels[chosen] == ids[chosen]).all()
    assert (inputs[~chosen] == ids[~chosen]).all()  # the rest of the batch is as it came
    assert chosen.sum() / can.sum() == pytest.approx(0.15, abs=0.01)
    masked = (inputs == MASK) & chosen
    assert masked.sum() / chosen.sum() == pytest.approx(0.8, abs=0.03)
    swapped = chosen & ~masked & (inputs != ids)
    assert ((inputs[swapped] >= 4) & (inputs[swapped] < MASK)).all()  # an ordinary piece
    kept = chosen & (inputs == ids)
    assert (swapped.sum() + kept.sum()) / chosen.sum() == pytest.approx(0.2, abs=0.03)
    again = tapt_e5.choose_masks(ids, attention, np.random.default_rng(1), 0.15, 4, MASK)
    assert all((a == b).all() for a, b in zip(again, (inputs, labels)))  # seeded: resumable


def test_a_batch_too_short_to_draw_still_masks_one_piece() -> None:
    ids = np.array([[0, 7, 2]])
    inputs, labels = tapt_e5.choose_masks(
        ids, np.ones_like(ids), np.random.default_rng(0), 1e-9, 4, MASK
    )
    assert labels.tolist() == [[-100, 7, -100]]


def tiny_base(path: Path) -> Path:
    from tokenizers import Tokenizer, models

    base = tiny_member(path, 1, layers=2)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3} | {f"w{i}": i for i in range(4, MASK)}
    Tokenizer(models.WordLevel(vocab | {"<mask>": MASK}, unk_token="<unk>")).save(
        str(base / "tokenizer.json")
    )
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        (base / name).write_text("{}", "utf-8")
    return base


def tapt_run(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny base and a run directory holding the tiny data split: (base, workdir)."""
    base = tiny_base(tmp_path / "base")
    work = tmp_path / "tapt"
    work.mkdir()
    shutil.copy(tiny_data(tmp_path / "data.pkl"), work / "data.pkl")
    return base, work


def test_head_steps_train_the_head_alone_then_final_is_a_base_for_fine_tuning(
    tmp_path: Path,
) -> None:
    from safetensors.torch import load_file

    base, work = tapt_run(tmp_path)
    flags = ["--workdir", str(work), "--base", str(base), "--layers", "0", "--threads", "1"]
    flags += ["--batch-size", "4", "--epochs", "2", "--lr", "1e-2", "--warmup", "0"]
    assert tapt_e5.main(flags + ["--head-steps", "2", "--max-steps", "2"]) == 0
    data = pickle.loads((work / "data.pkl").read_bytes())
    t = tapt_e5.MlmTrainer(tapt_e5.parse_args(flags + ["--head-steps", "2"]), data)
    head = t.model.lm_head.dense.weight.detach().clone()  # as the run started (same seed)
    before = load_file(str(base / "model.safetensors"))
    assert t.load_checkpoint()
    after = t.model.state_dict()
    encoder = [k for k in before if k.startswith("roberta.encoder.")]
    assert encoder and all(torch.equal(before[k], after[k]) for k in encoder)  # frozen
    assert not torch.equal(after["lm_head.dense.weight"], head)  # the head trained
    # the same command resumes and finishes; the encoder now trains
    assert tapt_e5.main(flags + ["--head-steps", "2"]) == 0
    final = load_file(str(work / "final" / "model.safetensors"))
    assert not any(k.startswith("lm_head") or k.startswith("classifier") for k in final)
    still = [k for k in encoder if torch.equal(before[k], final[k.removeprefix("roberta.")])]
    assert all(k.endswith("key.bias") for k in still)  # softmax gives a key bias no gradient
    log = [json.loads(line) for line in (work / "history.jsonl").read_text().splitlines()]
    evals = [r["dev"] for r in log if r.get("kind") == "eval"]
    assert len(evals) == 2 and all(e["masked"] > 0 and e["mlm_loss"] > 0 for e in evals)
    # a fine-tuning run starts from it
    fine = tmp_path / "fine"
    fine.mkdir()
    shutil.copy(tmp_path / "data.pkl", fine / "data.pkl")
    args = ["sentiment", "--workdir", str(fine), "--base", str(work / "final"), "--layers", "0"]
    args += ["--epochs", "1", "--batch-size", "4", "--eval-minutes", "0", "--threads", "1"]
    assert train_e5_heads.main(args) == 0
    assert (fine / "final" / "model.safetensors").exists()


def test_a_changed_flag_on_a_started_run_is_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, work = tapt_run(tmp_path)
    flags = ["--workdir", str(work), "--base", str(base), "--threads", "1", "--batch-size", "4"]
    assert tapt_e5.main(flags + ["--max-steps", "1"]) == 0
    capsys.readouterr()
    assert tapt_e5.main(flags + ["--mask-prob", "0.3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mask_prob" in err and "new --workdir" in err
    with pytest.raises(SystemExit) as e:
        tapt_e5.main(flags + ["--mask-prob", "1"])
    assert e.value.code == 2
