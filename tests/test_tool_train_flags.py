"""tools/train_e5_heads.py: a bad number on a training flag is one sentence and exit 2, before
anything is written (PyTorch's AdamW used to raise on a negative rate with a traceback)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import train_e5_heads  # noqa: E402


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--crf-lr", "-1", "--crf-lr: '-1' is not a number above 0"),
        ("--lr", "0", "--lr: '0' is not a number above 0"),
        ("--lr", "inf", "--lr: 'inf' is not a number above 0"),
        ("--dropout", "1", "--dropout: '1' is not a number at least 0 and below 1"),
        ("--warmup", "nan", "--warmup: 'nan' is not a number at least 0 and below 1"),
        ("--epochs", "0", "--epochs: '0' is not an integer at least 1"),
        ("--batch-size", "x", "--batch-size: 'x' is not an integer at least 1"),
        ("--threads", "0", "--threads: '0' is not an integer at least 1"),
    ],
)
def test_a_bad_number_is_one_sentence_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, says: str
) -> None:
    work = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        train_e5_heads.main(["ner", "--workdir", str(work), "--crf", flag, value])
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert says in err and "fix it" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not work.exists()


def test_good_numbers_pass_through() -> None:
    a = train_e5_heads.parse_args(
        ["ner", "--workdir", "w", "--crf-lr", "5e-3", "--dropout", "0", "--layers", "0"]
    )
    assert (a.crf_lr, a.dropout, a.layers, a.epochs) == (5e-3, 0.0, 0, 3)


def test_a_device_torch_cannot_use_is_one_sentence_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch")
    work = tmp_path / "run"
    for device in ("cuda:99", "gpu"):
        code = train_e5_heads.main(["ner", "--workdir", str(work), "--device", device])
        err = capsys.readouterr().err
        assert code == 2 and f"--device {device} cannot be used" in err and "pass --device" in err
        assert err.count("\n") == 1 and "Traceback" not in err
    assert not work.exists()
