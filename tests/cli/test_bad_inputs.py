"""Issue 12: bad inputs to predict / infer.py / batch never harm the user's files or show a traceback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ernie_deploy.cli import app
from ernie_deploy.cli.infer import main as infer_main

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
NER_LABELS = "O,B-PER,I-PER,B-ORG,I-ORG,B-LOC,I-LOC"


def one_error(code: int, stderr: str) -> str:
    """The run failed with exactly one `error:` line and no traceback; that line."""
    assert code != 0
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


def predict(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["predict", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stderr


def batch(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["batch", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stderr


def infer(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = infer_main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def corpus(path: Path, n: int) -> bytes:
    body = "".join(
        json.dumps({"text": f"乔丹在北京{i}"}, ensure_ascii=False) + "\n" for i in range(n)
    )
    path.write_text(body, encoding="utf-8")
    return path.read_bytes()


@pytest.fixture()
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder no file can be created in, even by root (chmod alone does not stop root)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = False
    if os.geteuid() == 0:
        immutable = (
            subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
        )
        if not immutable:
            folder.chmod(0o755)
            pytest.skip("running as root and chattr +i is not available: no read-only folder")
    yield folder
    if immutable:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    folder.chmod(0o755)


# -- 1, 2: an output that is the input is refused, the input byte-identical -------------------


def test_predict_and_infer_refuse_the_input_as_output(
    lookup_ner: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "texts.jsonl"
    before = corpus(src, 2000)
    link = tmp_path / "link.jsonl"
    link.symlink_to(src)
    hard = tmp_path / "hard.jsonl"
    os.link(src, hard)
    for out in (src, link, hard):
        code, err = predict(str(lookup_ner), "-i", str(src), "-o", str(out))
        assert "is also the input" in one_error(code, err)
        assert code == 2 and src.read_bytes() == before
        code, out_text, err = infer(
            capsys, "--task_name", "token_cls", "--model_path", str(lookup_ner),
            "--input_file", str(src), "--output_file", str(out), "--overwrite",
        )  # fmt: skip
        assert "is also the input" in one_error(code, err)
        assert "Creating Engine" not in out_text  # refused before any work
        assert src.read_bytes() == before


def test_batch_refuses_the_input_as_output_even_with_overwrite(
    lookup_ner: Path, tmp_path: Path
) -> None:
    src = tmp_path / "texts.jsonl"
    before = corpus(src, 50)
    code, err = batch(str(lookup_ner), str(src), str(src), "--overwrite")
    assert "is also the input" in one_error(code, err)
    assert src.read_bytes() == before
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(src, folder / "a.jsonl")
    code, err = batch(str(lookup_ner), str(folder), str(folder / "out.jsonl"))
    assert "inside the input folder" in one_error(code, err)
    assert sorted(p.name for p in folder.iterdir()) == ["a.jsonl"]


# -- 3: an existing output is replaced only with --overwrite, and only whole -------------------


def test_existing_output_needs_overwrite(
    lookup_ner: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results.jsonl"
    out.write_text("precious\n", encoding="utf-8")
    code, err = predict(str(lookup_ner), "乔丹", "-o", str(out))
    assert "--overwrite" in one_error(code, err)
    code, _, err = infer(capsys, "--task_name", "token_cls", "--output_file", str(out))
    assert "--overwrite" in one_error(code, err)
    assert out.read_text(encoding="utf-8") == "precious\n"
    code, _ = predict(str(lookup_ner), "乔丹", "-o", str(out), "--overwrite")
    assert code == 0 and json.loads(out.read_text(encoding="utf-8"))["entities"]
    assert [p.name for p in tmp_path.iterdir()] == ["results.jsonl"]  # no temporary file left
    code, _, _ = infer(
        capsys, "--task_name", "token_cls", "--model_path", str(lookup_ner),
        "--output_file", str(out), "--overwrite",
    )  # fmt: skip
    assert code == 0 and len(out.read_text(encoding="utf-8").splitlines()) == 2


# -- 4: a resumed batch job notices an edited input of the same size --------------------------


def test_batch_resume_fingerprints_content(lookup_ner: Path, tmp_path: Path) -> None:
    src = tmp_path / "texts.jsonl"
    corpus(src, 20)
    out = tmp_path / "out.jsonl"
    assert batch(str(lookup_ner), str(src), str(out))[0] == 0
    done = out.read_bytes()
    edited = src.read_text(encoding="utf-8").replace('北京1"', '上海1"', 1)
    src.write_text(edited, encoding="utf-8")  # same number of bytes, other text
    code, err = batch(str(lookup_ner), str(src), str(out))
    assert "other settings (input_files)" in one_error(code, err)
    assert out.read_bytes() == done


# -- 13: an output path that cannot be written is refused before any work ---------------------


@pytest.mark.parametrize("case", ["missing", "read_only", "directory"])
def test_unwritable_output_is_refused_before_work(
    case: str,
    lookup_ner: Path,
    tmp_path: Path,
    read_only_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = {
        "missing": tmp_path / "no" / "such" / "out.jsonl",
        "read_only": read_only_dir / "out.jsonl",
        "directory": tmp_path,
    }[case]
    expected = {
        "missing": "does not exist: create it first",
        "read_only": "Cannot write into",
        "directory": "is a directory",
    }[case]
    src = tmp_path / "texts.jsonl"
    corpus(src, 5)
    code, err = predict(str(lookup_ner), "-i", str(src), "-o", str(target))
    assert expected in one_error(code, err)
    code, out_text, err = infer(
        capsys, "--task_name", "token_cls", "--model_path", str(lookup_ner),
        "--output_file", str(target),
    )  # fmt: skip
    assert expected in one_error(code, err) and "Creating Engine" not in out_text
    code, err = batch(str(lookup_ner), str(src), str(target))
    assert expected in one_error(code, err) or "is neither .jsonl" in one_error(code, err)


# -- 16: a lone surrogate in an input file is one sentence; earlier results are kept ----------


def test_lone_surrogate_in_jsonl(
    lookup_ner: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "texts.jsonl"
    src.write_text(
        '{"text": "乔丹在北京", "note": "\\udfff kept"}\n{"text": "ab\\udfffcd"}\n',
        encoding="utf-8",
    )
    runs: list[Callable[[Path], tuple[int, str]]] = [
        lambda out: predict(str(lookup_ner), "-i", str(src), "-o", str(out), "--batch-size", "1"),
        lambda out: infer(
            capsys,
            "--task_name",
            "token_cls",
            "--model_path",
            str(lookup_ner),
            "--input_file",
            str(src),
            "--output_file",
            str(out),
        )[::2],  # fmt: skip
        lambda out: batch(str(lookup_ner), str(src), str(out), "--batch-size", "1"),
    ]
    for i, run in enumerate(runs):
        out = tmp_path / f"out{i}.jsonl"
        code, err = run(out)
        assert "lone surrogate" in one_error(code, err) and code == 2
        rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        assert len(rows) == 1 and rows[0]["text"] == "乔丹在北京"
        assert rows[0].get("note", "\udfff kept") == "\udfff kept"  # carried over exactly


# -- 17: Ctrl-C during infer.py ----------------------------------------------------------------


def test_ctrl_c_during_infer_exits_130_keeping_results(lookup_ner: Path, tmp_path: Path) -> None:
    src = tmp_path / "texts.txt"
    src.write_text("".join(f"乔丹在北京打球{i}\n" for i in range(200_000)), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "infer.py"), "--task_name", "token_cls", "--model_path",
         str(lookup_ner), "--input_file", str(src), "--output_file", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, encoding="utf-8", errors="replace",
        # a shell's background job (`make test &`) inherits SIGINT ignored, and Python then
        # keeps ignoring it: give the child the default disposition a terminal's Ctrl-C meets
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert proc.stdout is not None
    printed = 0
    for line in proc.stdout:  # each result is printed, then written: wait for a few hundred
        printed += line.startswith("input data:")
        if printed == 300:
            break
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted" in one_error(proc.returncode, stderr)
    lines = out.read_text(encoding="utf-8").splitlines()
    assert 299 <= len(lines) < 200_000 and all(
        json.loads(line)["text"].startswith("乔丹") for line in lines
    )


# -- 20: --labels on predict / batch for a bare .onnx that names none -------------------------


def test_labels_option_for_a_bare_onnx(lookup_ner: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(lookup_ner, bare)
    (bare / "ernie_deploy.json").unlink()
    code, err = predict(str(bare), "乔丹在北京", "--task", "token_cls")
    assert "names no token labels" in one_error(code, err)
    result = runner.invoke(
        app, ["predict", str(bare), "乔丹在北京", "--task", "token_cls", "--labels", NER_LABELS]
    )
    assert result.exit_code == 0, result.stderr
    labels = {e["label"] for e in json.loads(result.stdout)["entities"]}
    assert labels == {"PER", "LOC"}
    src = tmp_path / "in.jsonl"
    corpus(src, 3)
    code, err = batch(
        str(bare),
        str(src),
        str(tmp_path / "o.jsonl"),
        "--task",
        "token_cls",
        "--labels",
        NER_LABELS,
    )
    assert code == 0, err
    code, err = predict(str(bare), "乔丹", "--task", "token_cls", "--labels", "O,B-PER,O")
    assert "repeats a label" in one_error(code, err)


# -- 13 for the model-building commands: OUT checked before any work ---------------------------


@pytest.mark.parametrize("command", ["optimize", "quantize"])
def test_model_commands_refuse_bad_out(
    command: str, lookup_ner: Path, tmp_path: Path, read_only_dir: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(lookup_ner, model)
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine\n", encoding="utf-8")
    cases = [
        (model, "--overwrite", "is also the input"),
        (a_file, "--overwrite", "is a file"),
        (tmp_path, "--overwrite", "holds the input"),
        (model / "sub", "--overwrite", "inside the input folder"),
        (tmp_path / "no" / "such" / "out", "--overwrite", "does not exist: create it first"),
        (read_only_dir / "out", "--overwrite", "Cannot write into"),
    ]
    for out, flag, expected in cases:
        result = runner.invoke(app, [command, str(model), str(out), flag])
        assert isinstance(result.exception, SystemExit) or result.exception is None
        assert expected in one_error(result.exit_code, result.stderr), out
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before
    assert a_file.read_text(encoding="utf-8") == "mine\n"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_a_full_disk_on_stdout_is_one_sentence(lookup_ner: Path) -> None:
    # writing the results fails (ENOSPC): no traceback, not even at interpreter exit
    commands = [
        [sys.executable, "-m", "ernie_deploy", "predict", str(lookup_ner), "北京"],
        [sys.executable, str(ROOT / "infer.py"), "--task_name", "token_cls",
         "--model_path", str(lookup_ner / "model.onnx")],
    ]  # fmt: skip
    for command in commands:
        with open("/dev/full", "w") as full:
            run = subprocess.run(
                command, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120, cwd=ROOT
            )
        line = one_error(run.returncode, run.stderr)
        assert "No space left on device" in line and "free some space" in line
