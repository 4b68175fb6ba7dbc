"""The model-building commands as users type them: optimize and quantize (convert: tests/convert)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ernie_deploy
from ernie_deploy.cli import app
from tests._cli import one_error as _one_error
from tests._models import RefModel

runner = CliRunner()
TEXTS = ["北京的涮肉，重庆的火锅", "乔丹、科比、詹姆斯和姚明"]


def spans(results: list) -> list:
    return [[(e.text, e.label, e.start, e.end) for e in r.entities] for r in results]


def test_optimize_then_quantize_chain(paddle_ner: RefModel, tmp_path: Path) -> None:
    opt, int8 = tmp_path / "opt", tmp_path / "int8"
    result = runner.invoke(app, ["optimize", str(paddle_ner.path), str(opt), "--level", "O2"])
    assert result.exit_code == 0, result.output
    assert "Attention 2" in result.stdout
    assert "passed (tolerance 0.0001)" in result.stdout
    assert spans(ernie_deploy.load(opt)(TEXTS)) == spans(ernie_deploy.load(paddle_ner.path)(TEXTS))

    gold = tmp_path / "gold.jsonl"  # the fp32 model's own entities: its F1 is 1.0
    with gold.open("w", encoding="utf-8") as f:
        for r in ernie_deploy.load(opt)(TEXTS):
            ents = [{"start": e.start, "end": e.end, "label": e.label} for e in r.entities]
            f.write(json.dumps({"text": r.text, "entities": ents}, ensure_ascii=False) + "\n")
    result = runner.invoke(
        app, ["quantize", str(opt), str(int8), "--per-channel", "--eval-file", str(gold)]
    )
    assert result.exit_code == 0, result.output
    assert "size " in result.stdout and "argmax agreement" in result.stdout
    assert (int8 / "model.onnx").stat().st_size < (opt / "model.onnx").stat().st_size
    assert len(ernie_deploy.load(int8)(TEXTS)) == 2


def test_bad_arguments_exit_non_zero_with_one_line(paddle_cls: RefModel, tmp_path: Path) -> None:
    cases = [
        (["optimize", str(paddle_cls.path), str(tmp_path / "a"), "--level", "O9"], 1, "O1, O2"),
        (["quantize", str(paddle_cls.path), str(tmp_path / "b"), "--preset", "x"], 1, "avx2"),
        (["quantize", str(tmp_path / "missing"), str(tmp_path / "c")], 1, "does not exist"),
        (["optimize", str(paddle_cls.path), str(tmp_path)], 2, "--overwrite"),
        (
            ["convert", "hf", str(tmp_path), str(tmp_path.with_name(tmp_path.name + "-d"))],
            1,
            "save_pretrained",
        ),  # fmt: skip
        (["convert", "hf", str(tmp_path), str(tmp_path / "d")], 2, "inside the input folder"),
    ]
    for args, code, hint in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == code, (args, result.output)
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and hint in lines[-1], (args, lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


CORRUPT = {
    "binary": lambda good: good[: len(good) // 3] + b"\xff\xfe\x00garbage" * 50,
    "text": lambda good: "这不是模型 / not a model\n".encode() * 40,
}


@pytest.mark.parametrize("command", ["optimize", "quantize"])
@pytest.mark.parametrize("kind", sorted(CORRUPT))
def test_corrupt_model_onnx_gets_one_sentence(
    command: str, kind: str, lookup_ner: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(lookup_ner, model)
    onnx_file = model / "model.onnx"
    onnx_file.write_bytes(CORRUPT[kind](onnx_file.read_bytes()))
    result = runner.invoke(app, [command, str(model), str(tmp_path / "out")])
    assert "re-export the model" in _one_error(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_optimize_refuses_to_write_what_load_refuses(paddle_ner: RefModel, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(paddle_ner.path, model)
    (model / "ernie_deploy.json").write_text(  # 3 labels for the graph's 7 outputs
        json.dumps({"task": "token_cls", "labels": ["O", "B-PER", "I-PER"]}), "utf-8"
    )
    result = runner.invoke(app, ["optimize", str(model), str(tmp_path / "out")])
    error = _one_error(result)
    assert "would not load" in error and "7 classes but 3 labels" in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
