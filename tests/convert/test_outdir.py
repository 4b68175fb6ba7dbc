"""OUT of convert / optimize / quantize / tune: every path the command reads is an input that
OUT may not be, hold or sit in; OUT appears whole or not at all; weights are never copied."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ernie_deploy.convert import outdir
from ernie_deploy.errors import ErnieDeployError, InputError
from ernie_deploy.runtime import bundled
from tests._models import RefModel


def _checkpoint(tmp_path: Path, model: RefModel) -> tuple[Path, dict[str, bytes]]:
    """A folder holding the model's tokenizer files and a weights file the user would lose."""
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    for f in model.path.iterdir():
        if f.is_file() and f.suffix not in (".onnx", ".data"):
            shutil.copy2(f, ckpt / f.name)
    (ckpt / "model.safetensors").write_bytes(b"weights the user trained")
    return ckpt, {f.name: f.read_bytes() for f in ckpt.iterdir()}


def _unchanged(folder: Path, before: dict[str, bytes]) -> bool:
    return {f.name: f.read_bytes() for f in folder.iterdir()} == before


def test_a_named_tokenizer_folder_is_an_input_even_with_overwrite(
    bert_ner: RefModel, tmp_path: Path
) -> None:
    from ernie_deploy.convert.optimize import optimize_model
    from ernie_deploy.convert.paddle import convert_paddle
    from ernie_deploy.convert.quantize import quantize_model
    from ernie_deploy.convert.tune import tune

    ckpt, before = _checkpoint(tmp_path, bert_ner)
    onnx = bert_ner.path / "model.onnx"
    runs: list[Callable[..., Any]] = [
        lambda **kw: optimize_model(onnx, ckpt, "O1", tokenizer_dir=ckpt, **kw),
        lambda **kw: quantize_model(onnx, ckpt, tokenizer_dir=ckpt, **kw),
        lambda **kw: tune(onnx, ckpt, tokenizer_dir=ckpt, texts=["北京"], repeats=1, **kw),
        lambda **kw: convert_paddle(bert_ner.path, ckpt, tokenizer_dir=ckpt, **kw),
    ]
    for run in runs:
        for overwrite in (False, True):
            with pytest.raises(
                InputError, match="is .*, which this command reads|holds the source"
            ) as err:
                run(overwrite=overwrite)
            assert "--overwrite" not in str(err.value)
            assert _unchanged(ckpt, before)
    # OUT holding the tokenizer folder is refused; OUT inside it (a working folder) is not
    with pytest.raises(InputError, match="holds .*ckpt, which this command reads"):
        optimize_model(onnx, tmp_path, "O1", tokenizer_dir=ckpt, overwrite=True)
    assert _unchanged(ckpt, before)
    report = optimize_model(onnx, ckpt / "opt", "O1", tokenizer_dir=ckpt)
    assert report.parity.passed and (ckpt / "opt" / "model.onnx").is_file()
    assert {f.name: f.read_bytes() for f in ckpt.iterdir() if f.is_file()} == before


def test_tune_never_writes_inside_the_model_folder(bert_ner: RefModel, tmp_path: Path) -> None:
    from ernie_deploy.convert.tune import tune

    model = tmp_path / "model"
    shutil.copytree(bert_ner.path, model)
    with pytest.raises(InputError, match="inside the input folder"):
        tune(model, model / "tuned", texts=["北京"], repeats=1)
    assert not (model / "tuned").exists()


def test_a_bundled_model_is_an_input_by_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ernie_deploy.convert.optimize import optimize_model
    from ernie_deploy.convert.quantize import quantize_model

    root = tmp_path / "installed"
    shutil.copytree(bundled.bundled_root() / "sentiment-zh", root / "sentiment-zh")
    monkeypatch.setattr(bundled, "bundled_root", lambda: root)
    installed = root / "sentiment-zh"
    before = {f.name: f.read_bytes() for f in installed.iterdir()}
    for run in (optimize_model, quantize_model):
        with pytest.raises(InputError, match="is also the input"):
            run("sentiment-zh", installed, overwrite=True)
        assert _unchanged(installed, before)


def test_out_named_by_dots_or_a_link_is_refused(tmp_path: Path) -> None:
    for name in (".", "..", "./"):
        with pytest.raises(InputError, match="by its dots"):
            outdir.check_output(name, overwrite=True)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(InputError, match="symbolic link"):
        outdir.check_output(tmp_path / "dangling", overwrite=True)
    assert not (tmp_path / "nowhere").exists()


def test_a_failed_final_move_leaves_the_old_out_and_no_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("the previous model")
    real = Path.rename

    def failing(self: Path, target: Any) -> Any:
        if ".partial-" in self.name:
            raise OSError(28, "No space left on device")
        return real(self, target)

    monkeypatch.setattr(Path, "rename", failing)
    with (
        pytest.raises(ErnieDeployError, match="could not be moved to") as err,
        outdir.staged_dir(out, overwrite=True) as stage,
    ):
        (stage / "model.onnx").write_bytes(b"new")
    assert "No space left on device" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (out / "old.txt").read_text() == "the previous model"


def test_split_external_data_is_never_copied(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    for name in ("model.onnx", "model.onnx.data", "model.onnx.data1", "model.onnx.data12"):
        (src / name).write_bytes(b"w")
    (src / "tokenizer.json").write_text("{}")
    (src / "notes.data_v2").write_text("kept: not a weights part")
    assert outdir.copy_model_files(src, dst) == ["notes.data_v2", "tokenizer.json"]


def test_a_tolerance_that_cannot_compare_is_refused_first(
    bert_ner: RefModel, tmp_path: Path
) -> None:
    from ernie_deploy.convert.hf import convert_hf
    from ernie_deploy.convert.optimize import optimize_model
    from ernie_deploy.convert.paddle import convert_paddle
    from ernie_deploy.errors import ConfigError

    for bad in (float("nan"), float("inf"), -1e-4):
        for run in (convert_hf, convert_paddle, optimize_model):
            with pytest.raises(ConfigError, match="tolerance must be a finite number"):
                run(bert_ner.path, tmp_path / "out", tolerance=bad)
    assert not (tmp_path / "out").exists()


def test_a_file_as_out_is_refused_without_suggesting_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "model"
    out.write_text("a file the user keeps")
    for overwrite in (False, True):
        with pytest.raises(InputError, match="is a file") as err:
            outdir.check_output(out, overwrite=overwrite)
        assert "--overwrite" not in str(err.value)
    assert out.read_text() == "a file the user keeps"
