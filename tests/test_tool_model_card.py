"""tools/e5_bundle.py and the e5 model card (tools/card_training.py, model_card_e5.py): a
head trained in several stages names every stage on its card, first first, with the flags each
stage ran with (a card that called the second stage "stage 1" shipped before this was fixed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import card_training  # noqa: E402
import e5_bundle  # noqa: E402
import model_card_e5  # noqa: E402


def stage(path: Path, base: Path, **hp: object) -> Path:
    path.mkdir(parents=True)
    info = {
        "step": 10,
        "epoch": 1.0,
        "train_minutes": 2.5,
        "hparams": {"task": "ner", "base": str(base), "layers": 0, "lr": 1e-5, "seed": 1, **hp},
    }
    (path / "training_info.json").write_text(json.dumps(info), "utf-8")
    return path


def test_every_earlier_stage_is_recorded_first_first(tmp_path: Path) -> None:
    imported = tmp_path / "zh-en"
    imported.mkdir()  # the import: no training_info.json
    s1 = stage(tmp_path / "s1", imported, device="cuda", seed=42)
    s2 = stage(tmp_path / "s2", s1, freeze_embeddings=True, seed=45)
    record = e5_bundle.base_record(s2)
    assert record["base_training"]["dir"] == "s2"
    assert [s["dir"] for s in record["earlier_stages"]] == ["s1", "s2"]
    assert "earlier_stages" not in e5_bundle.base_record(s1)  # one stage: as before
    assert e5_bundle.base_record(imported) == {}
    lines = card_training.base_lines(
        record["base_training"], "ner", record["earlier_stages"], soup_below=True
    )
    assert lines[0].startswith("- Three stages")
    assert lines[1].startswith("- Stage 1 (`s1`)") and "every weight trained, on a GPU" in lines[1]
    assert "--workdir .cache/train/s1 --device cuda" in lines[1]
    assert lines[2].startswith("- Stage 2 (`s2`)") and "but the word-embedding table" in lines[2]
    assert "--freeze-embeddings" in lines[2] and "--seed 45" in lines[2]
    assert lines[3] == (
        "- Stage 3 is the weight average below: its members trained from stage 2 or are stage 2 "
        "itself."
    )
    assert card_training.table_stages(record) == [1]
    older = card_training.base_lines(record["base_training"], "ner")  # a bundle from before
    assert older[0].startswith("- Two stages") and older[-1].endswith("stage 1's best checkpoint.")


def test_a_soup_member_is_named_by_the_directory_it_was_read_from() -> None:
    gpu = {"dir": ".cache/train/gpu-ner-c1", "workdir": "c1", "checkpoint": "gpu-ner-c1"}
    assert card_training.ingredient_workdir(gpu) == ("gpu-ner-c1", "gpu-ner-c1")
    run = {"dir": ".cache/train/cpu-ner-c3/best", "workdir": "cpu-ner-c3", "checkpoint": "best"}
    assert card_training.ingredient_workdir(run) == ("cpu-ner-c3", "cpu-ner-c3/best")
    assert card_training.ingredient_workdir({"workdir": "w", "checkpoint": "final"}) == (
        "w",
        "w/final",
    )


def test_the_command_names_every_flag_that_changed_the_run() -> None:
    hp = {"base": "/x/zh-en", "layers": 11, "epochs": 3, "lr": 1e-4, "seed": 42, "max_len": 128}
    assert card_training.train_flags(hp) == "--layers 11 --epochs 3"
    hp.update(llrd=0.9, label_smoothing=0.1, max_len=256, dropout=0.1, rdrop=1.0)
    assert card_training.train_flags(hp) == (
        "--layers 11 --epochs 3 --max-len 256 --llrd 0.9 --label-smoothing 0.1 --rdrop 1"
    )
    assert card_training.train_flags({**hp, "train_on_dev": True}).endswith(" --train-on-dev")


def soup_record(**extra: object) -> dict:
    hp = {"layers": 0, "epochs": 1, "lr": 1e-5, "seed": 45, "split_seed": 42}
    ingredients = [
        {"dir": f".cache/train/{wd}", "seed": 45, "epoch": 1.0, "hparams": hp, "dev": 0.93}
        for wd in ("gpu-ner-c1", "cpu-ner-c3/best")
    ]
    return {
        "rule": "greedy soup on dev",
        "dev": 0.935,
        "uniform_dev": 0.934,
        "ingredients": ingredients,
        "members_dev": {i["dir"]: 0.93 for i in ingredients},
        "command": "python tools/soup_e5_heads.py ner --members ... --out .cache/train/soup",
        **extra,
    }


def test_a_soup_does_not_repeat_the_command_of_a_stage_above() -> None:
    commands = [
        line
        for line in card_training.soup_lines(
            soup_record(), "ner", stage_dirs=frozenset({"gpu-ner-c1"})
        )
        if line.startswith("- Commands:")
    ]
    assert len(commands) == 1
    assert "--workdir .cache/train/cpu-ner-c3 " in commands[0]
    assert "--workdir .cache/train/gpu-ner-c1 " not in commands[0]
    everything = "\n".join(card_training.soup_lines(soup_record(), "ner"))
    assert "--workdir .cache/train/gpu-ner-c1 " in everything


def test_a_soup_of_runs_trained_on_dev_does_not_claim_dev_chose_it() -> None:
    text = "\n".join(card_training.soup_lines(soup_record(dev_trained_on=True), "sentiment"))
    assert "trained on the dev split too" in text and "no split chose among them" in text
    assert "took no part in the choice" not in text
    assert "- Candidates and their dev scores (trained on): " in text
    plain = "\n".join(card_training.soup_lines(soup_record(), "sentiment"))
    assert "took no part in the choice" in plain and "trained on the dev split" not in plain


def test_a_mean_pooled_head_is_named_with_its_flag() -> None:
    hp = {"base": "/x/zh-en", "layers": 11, "epochs": 3, "pooling": "mean"}
    assert card_training.train_flags(hp) == "--layers 11 --epochs 3 --pooling mean"
    assert card_training.train_flags({**hp, "pooling": "cls"}) == "--layers 11 --epochs 3"
    mean = model_card_e5.head_words("sentiment", "mean")
    assert "attention-masked mean" in mean and "`classifier_pooling` mean" in mean
    assert model_card_e5.head_words("sentiment", None) == (
        ", a linear sequence-classification head (transformers "
        "`XLMRobertaForSequenceClassification`)."
    )
    assert "`XLMRobertaForTokenClassification`" in model_card_e5.head_words("ner", None)


def test_a_head_trained_with_a_prompt_is_not_exported_without_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import export_e5_heads

    head = stage(tmp_path / "q", tmp_path, prompt="query: ")
    (head / "model.safetensors").write_bytes(b"")
    assert e5_bundle.trained_prompt(head) == "query: "
    assert export_e5_heads.main(["sentiment", "--checkpoint", str(head), "--no-ship"]) == 2
    err = capsys.readouterr().err
    assert "was trained with --prompt 'query: '" in err and err.count("\n") == 1
    soup = tmp_path / "soup"
    soup.mkdir()
    info = {
        "hparams": {},
        "soup": {"ingredients": [{"hparams": {}}, {"hparams": {"prompt": "q: "}}]},
    }
    (soup / "training_info.json").write_text(json.dumps(info), "utf-8")
    assert e5_bundle.trained_prompt(soup) == "q: "
    assert e5_bundle.trained_prompt(stage(tmp_path / "bare", tmp_path)) == ""
