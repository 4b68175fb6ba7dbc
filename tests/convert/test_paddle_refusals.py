"""`convert paddle` on hostile or broken input: no code run from a pickle, one sentence, nothing left."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ernie_deploy.cli import app
from ernie_deploy.convert.paddle import convert_paddle
from ernie_deploy.errors import ModelLoadError, UntrustedPickleError
from tests import _models
from tests._cli import one_error as _one_error
from tests._models import RefModel

runner = CliRunner()


class _Payload:
    """A pickle that, when loaded, writes a marker file (what a crafted checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def _nothing_written(parent: Path, out: Path) -> None:
    assert not out.exists()
    assert [p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name] == []


@pytest.fixture(scope="module")
def static_ner(paddle_ner: RefModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _models.save_static(paddle_ner.path, "token_cls", tmp_path_factory.mktemp("s") / "ner")


def _evil_checkpoint(paddle_ner: RefModel, root: Path) -> tuple[Path, Path]:
    src, marker = root / "evil", root / "MARKER"
    src.mkdir()
    for name in ("config.json", "vocab.txt", "tokenizer_config.json"):
        shutil.copy(paddle_ner.path / name, src / name)
    with (src / "model_state.pdparams").open("wb") as f:
        pickle.dump({"ernie.embeddings.word_embeddings.weight": _Payload(marker)}, f)
    return src, marker


def test_pickle_payload_does_not_run_without_trust_flag(
    paddle_ner: RefModel, tmp_path: Path
) -> None:
    src, marker = _evil_checkpoint(paddle_ner, tmp_path)
    cmd = [sys.executable, "-m", "ernie_deploy", "convert", "paddle", str(src)]
    run = subprocess.run([*cmd, str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and not marker.exists()
    assert "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "builtins.exec" in errors[0] and "--trust-pickle" in errors[0]
    _nothing_written(tmp_path, tmp_path / "out")
    # The flag is what gates it: with it, Paddle unpickles the file and the payload runs.
    trusted = subprocess.run(
        [*cmd, str(tmp_path / "out2"), "--trust-pickle"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert trusted.returncode != 0 and marker.read_text() == "ran"
    _nothing_written(tmp_path, tmp_path / "out2")


def test_other_callables_are_refused_too(paddle_ner: RefModel, tmp_path: Path) -> None:
    src, marker = _evil_checkpoint(paddle_ner, tmp_path)
    with (src / "model_state.pdparams").open("wb") as f:  # os.system, pickled by reference
        f.write(b"cposix\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    with pytest.raises(UntrustedPickleError, match="posix.system"):
        convert_paddle(src, tmp_path / "out")
    assert not marker.exists()
    _nothing_written(tmp_path, tmp_path / "out")


@pytest.mark.parametrize("cut", ["truncated", "empty", "not_a_dict"])
def test_damaged_pdparams_gets_one_sentence(cut: str, paddle_ner: RefModel, tmp_path: Path) -> None:
    src = tmp_path / "ckpt"
    shutil.copytree(paddle_ner.path, src)
    weights = src / "model_state.pdparams"
    data = weights.read_bytes()
    cuts = {"truncated": data[: len(data) // 2], "empty": b"", "not_a_dict": pickle.dumps([1, 2])}
    weights.write_bytes(cuts[cut])
    result = runner.invoke(app, ["convert", "paddle", str(src), str(tmp_path / "out")])
    assert "model_state.pdparams" in _one_error(result)
    _nothing_written(tmp_path, tmp_path / "out")


def test_real_checkpoint_converts_without_unpickling(
    paddle_ner: RefModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import paddle

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("paddle.load unpickled the checkpoint")

    monkeypatch.setattr(paddle, "load", refuse)
    report = convert_paddle(paddle_ner.path, tmp_path / "out", opset=11)
    assert report.parity.passed and report.labels == paddle_ner.labels
    assert report.opset == 11  # read from the written graph


BROKEN = {
    "params_truncated": lambda prog, params: (prog, params[: len(params) // 2]),
    "params_empty": lambda prog, params: (prog, b""),
    "params_overlong": lambda prog, params: (prog, params + b"\0" * 4096),
    "program_truncated": lambda prog, params: (prog[: len(prog) // 2], params),
    "program_empty": lambda prog, params: (b"", params),
    "program_not_a_program": lambda prog, params: (b'{"not": "a program"}', params),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_static_files_get_one_sentence(
    case: str, static_ner: Path, paddle_ner: RefModel, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    prog, params = BROKEN[case](
        (static_ner / "inference.json").read_bytes(),
        (static_ner / "inference.pdiparams").read_bytes(),
    )
    (src / "inference.json").write_bytes(prog)
    (src / "inference.pdiparams").write_bytes(params)
    result = runner.invoke(
        app,
        ["convert", "paddle", str(src), str(tmp_path / "out"), "--tokenizer", str(paddle_ner.path),
         "--task", "token_cls", "--labels", ",".join(paddle_ner.labels)],
    )  # fmt: skip
    assert "export them again with paddle.jit.save" in _one_error(result)
    _nothing_written(tmp_path, tmp_path / "out")


@pytest.mark.parametrize("opset", [5, 10, 22, 99])
def test_opset_outside_paddle2onnx_range_is_refused_before_it_runs(
    opset: int, static_ner: Path, paddle_ner: RefModel, tmp_path: Path
) -> None:
    # 99 made paddle2onnx abort the process (SIGABRT) and leave .partial behind; 5 and 10
    # were written as 11 while the report said 5.
    result = runner.invoke(
        app,
        ["convert", "paddle", str(static_ner), str(tmp_path / "out"), "--opset", str(opset),
         "--tokenizer", str(paddle_ner.path), "--task", "token_cls"],
    )  # fmt: skip
    assert "use 11 to 21" in _one_error(result)
    _nothing_written(tmp_path, tmp_path / "out")


def test_a_paddle2onnx_crash_is_one_sentence_and_leaves_nothing(
    static_ner: Path, paddle_ner: RefModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ernie_deploy.convert import paddle as paddle_convert

    monkeypatch.setattr(paddle_convert, "MAX_OPSET", 99)  # let 99 through to paddle2onnx
    with pytest.raises(ModelLoadError, match="SIGABRT"):  # it aborts: a child process dies
        convert_paddle(static_ner, tmp_path / "out", opset=99, tokenizer_dir=paddle_ner.path,
                       task="token_cls", labels=",".join(paddle_ner.labels))  # fmt: skip
    _nothing_written(tmp_path, tmp_path / "out")


def test_what_load_refuses_is_never_written(
    static_ner: Path, paddle_ner: RefModel, tmp_path: Path
) -> None:
    base = ["convert", "paddle", str(static_ner), "--tokenizer", str(paddle_ner.path),
            "--labels", ",".join(paddle_ner.labels)]  # fmt: skip
    as_seq_cls = runner.invoke(app, [*base, str(tmp_path / "a"), "--task", "seq_cls"])
    assert "would not load" in _one_error(as_seq_cls)
    assert "no rank-2 output" in _one_error(as_seq_cls)
    _nothing_written(tmp_path, tmp_path / "a")
    no_room = runner.invoke(
        app, [*base, str(tmp_path / "b"), "--task", "token_cls", "--max-seq-length", "0"]
    )
    assert "max_seq_length" in _one_error(no_room)
    _nothing_written(tmp_path, tmp_path / "b")
