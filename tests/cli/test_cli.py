"""The typer CLI: predict (jsonl, streamed) and inspect."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ernie_deploy.cli import app
from tests._cli import one_error

runner = CliRunner()


def test_predict_texts_to_stdout(lookup_ner: Path) -> None:
    result = runner.invoke(app, ["predict", str(lookup_ner), "乔丹在北京", "New York"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [[e["text"] for e in r["entities"]] for r in records] == [["乔丹", "北京"], ["New York"]]


def test_predict_file_to_file_keeps_columns(lookup_ner: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(
        "".join(json.dumps({"id": i, "body": f"{i}姚明"}) + "\n" for i in range(600)),
        encoding="utf-8",
    )
    out = tmp_path / "out.jsonl"
    result = runner.invoke(
        app, ["predict", str(lookup_ner), "-i", str(src), "-o", str(out), "--text-field", "body"]
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in records] == list(range(600))
    assert all(r["entities"][0]["text"] == "姚明" for r in records)


def test_predict_never_replaces_an_input_column(bag_cls: Path, tmp_path: Path) -> None:
    src = tmp_path / "gold.jsonl"
    src.write_text(
        '{"body": "北京", "text": "mine", "label": "gold-a"}\n{"body": "重庆", "label": "gold-b"}\n',
        encoding="utf-8",
    )
    out = tmp_path / "out.jsonl"
    args = ["predict", str(bag_cls), "--task", "seq_cls", "-i", str(src), "-o", str(out)]
    refused = runner.invoke(app, [*args, "--text-field", "body"])
    line = one_error(refused)
    assert "already has a column 'label'" in line and "--result-prefix" in line
    assert not out.exists()
    done = runner.invoke(app, [*args, "--text-field", "body", "--result-prefix", "pred_"])
    assert done.exit_code == 0, done.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    # the input's own columns, "text" included, come out as they went in
    assert [{k: r[k] for k in ("body", "label")} for r in rows] == [
        {"body": "北京", "label": "gold-a"},
        {"body": "重庆", "label": "gold-b"},
    ]
    assert rows[0]["text"] == "mine" and "text" not in rows[1]
    assert all(r["pred_label"] and r["pred_score"] > 0 for r in rows)


def test_predict_reads_csv_and_parquet_as_batch_does(lookup_ner: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text('id,body,note\n1,乔丹在北京,a\n2,"姚明,重庆",b\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    args = ["predict", str(lookup_ner), "-i", str(src), "-o", str(out)]
    done = runner.invoke(app, [*args, "--text-field", "body"])
    assert done.exit_code == 0, done.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [{k: r[k] for k in ("id", "body", "note")} for r in rows] == [
        {"id": "1", "body": "乔丹在北京", "note": "a"},
        {"id": "2", "body": "姚明,重庆", "note": "b"},
    ]  # the header is no text, the cells are not joined, no column is added
    assert [[e["text"] for e in r["entities"]] for r in rows] == [
        ["乔丹", "北京"],
        ["姚明", "重庆"],
    ]
    missing = one_error(runner.invoke(app, ["predict", str(lookup_ner), "-i", str(src)]))
    assert "has no column 'text'" in missing and "--text-field" in missing
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = tmp_path / "in.parquet"
    pq.write_table(pa.table({"body": ["乔丹在北京", "姚明,重庆"]}), table)
    parquet = runner.invoke(
        app, ["predict", str(lookup_ner), "-i", str(table), "--text-field", "body"]
    )
    assert parquet.exit_code == 0, parquet.output
    got = [json.loads(line) for line in parquet.stdout.splitlines()]
    assert [r["entities"] for r in got] == [r["entities"] for r in rows]


def test_a_txt_file_is_text_whatever_its_first_line(lookup_ner: Path, tmp_path: Path) -> None:
    src = tmp_path / "brace.txt"
    src.write_text("{乔丹}在北京\n姚明\n", encoding="utf-8")
    result = runner.invoke(app, ["predict", str(lookup_ner), "-i", str(src)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["{乔丹}在北京", "姚明"]


def test_predict_stops_at_bad_line_keeping_earlier_results(
    lookup_ner: Path, tmp_path: Path
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(
        '{"text": "北京"}\n{"text": "重庆"}\n{"text": ""}\n{"text": "成都"}\n', encoding="utf-8"
    )
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["predict", str(lookup_ner), "-i", str(src), "-o", str(out)])
    assert result.exit_code == 2
    assert "line 3 has an empty 'text'" in result.stderr
    assert len(out.read_text(encoding="utf-8").splitlines()) == 2


def test_predict_bad_invocations(lookup_ner: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["predict", str(lookup_ner)])
    assert result.exit_code == 2 and "No texts given" in result.stderr
    result = runner.invoke(app, ["predict", str(tmp_path / "none"), "x"])
    assert result.exit_code == 1 and "does not exist" in result.stderr
    result = runner.invoke(app, ["predict", str(lookup_ner), "--task", "magic", "x"])
    assert result.exit_code == 1 and "Unknown task" in result.stderr


def test_inspect(lookup_ner: Path) -> None:
    result = runner.invoke(app, ["inspect", str(lookup_ner)])
    assert result.exit_code == 0, result.output
    assert "task:       token_cls" in result.stdout
    assert "input_ids" in result.stdout and "tensor(int64)" in result.stdout
    assert "ai.onnx 13" in result.stdout
    assert "O, B-PER, I-PER" in result.stdout


def test_console_script_runs() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "ernie_deploy", "--help"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0
    for command in ("infer", "predict", "inspect"):
        assert command in run.stdout


def test_predict_strict_flag(lookup_ner: Path) -> None:
    # "姆斯" is tagged O I-PER by the gazetteer ("斯" follows "姆" of 詹姆斯): an orphan I-PER.
    lenient = runner.invoke(app, ["predict", str(lookup_ner), "姆斯"])
    strict = runner.invoke(app, ["predict", str(lookup_ner), "--strict", "姆斯"])
    assert lenient.exit_code == strict.exit_code == 0
    assert [e["text"] for e in json.loads(lenient.stdout)["entities"]] == ["斯"]
    assert json.loads(strict.stdout)["entities"] == []
