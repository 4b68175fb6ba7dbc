"""`ernie-deploy batch` with the local engine: formats, columns, resuming after a crash, bad input."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import ernie_deploy
from ernie_deploy.batch import BatchModel, BatchOptions, run_batch
from ernie_deploy.batch import job as job_module
from ernie_deploy.batch.job import chunks
from ernie_deploy.batch.source import open_source
from ernie_deploy.cli import app
from tests.batch.conftest import make_texts, read_jsonl, write_jsonl

runner = CliRunner()


def batch(*args: str) -> Any:
    return runner.invoke(app, ["batch", *args])


def test_jsonl_rows_keep_their_columns_and_match_predict(
    lookup_ner: Path, corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    result = batch(str(lookup_ner), str(corpus), str(out), "--text-column", "doc")
    assert result.exit_code == 0, result.output
    assert "wrote 300 rows" in result.stderr
    rows = read_jsonl(out)
    source = read_jsonl(corpus)
    assert [r["id"] for r in rows] == list(range(300))  # no id column: row numbers added
    assert [list(r) for r in rows[:1]] == [["id", "doc", "source", "entities"]]
    assert [{"doc": r["doc"], "source": r["source"]} for r in rows] == source
    # the same rows `ernie-deploy predict` writes (one serialization for both commands)
    pred_out = tmp_path / "pred.jsonl"
    pred = runner.invoke(
        app,
        ["predict", str(lookup_ner), "-i", str(corpus), "-o", str(pred_out), "--text-field", "doc"],
    )
    assert pred.exit_code == 0, pred.output
    predicted = read_jsonl(pred_out)
    assert [r["entities"] for r in rows] == [p["entities"] for p in predicted]
    assert sum(len(r["entities"]) for r in rows) > 100  # the corpus does have entities
    direct = ernie_deploy.load(lookup_ner).predict([r["doc"] for r in source])
    assert [r["entities"] for r in rows] == [d.to_dict()["entities"] for d in direct]


def test_csv_parquet_and_folder_inputs_give_the_same_rows(
    cls_model: list[str], tmp_path: Path
) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    texts = make_texts(90, seed=3)
    ids = [f"doc-{i}" for i in range(90)]
    with (tmp_path / "in.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["key", "body"])
        writer.writerows(zip(ids, texts))
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(pa.table({"key": ids[:40], "body": texts[:40]}), folder / "a.parquet")
    pq.write_table(pa.table({"key": ids[40:], "body": texts[40:]}), folder / "b.parquet")
    outputs = {}
    for name, src in (("csv", tmp_path / "in.csv"), ("folder", folder)):
        out = tmp_path / f"{name}.jsonl"
        args = [*cls_model[1:], "--text-column", "body", "--id-column", "key", "--batch-size", "16"]
        result = batch(cls_model[0], str(src), str(out), *args)
        assert result.exit_code == 0, result.output
        outputs[name] = read_jsonl(out)
    assert outputs["csv"] == outputs["folder"]
    assert [r["key"] for r in outputs["csv"]] == ids and "id" not in outputs["csv"][0]
    assert {"label", "score", "top_k", "labels"} <= set(outputs["csv"][0])
    # parquet output: a folder of part files, merged at the end, read back as one table
    out = tmp_path / "out.parquet"
    result = batch(cls_model[0], str(folder), str(out), *cls_model[1:], "--text-column", "body")
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == list(range(90))
    assert table.column("label").to_pylist() == [r["label"] for r in outputs["csv"]]
    assert len([p for p in out.iterdir() if p.suffix == ".parquet"]) == 1


class Crash(Exception):
    """Stands for the process dying mid-job."""


def crash_after(monkeypatch: pytest.MonkeyPatch, calls: int) -> None:
    real = job_module.predict_rows
    seen = [0]

    def flaky(*args: Any, **kwargs: Any) -> Any:
        seen[0] += 1
        if seen[0] > calls:
            raise Crash
        return real(*args, **kwargs)

    monkeypatch.setattr(job_module, "predict_rows", flaky)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_resumed_job_writes_every_row_once(
    lookup_ner: Path, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    model = BatchModel(str(lookup_ner))
    options = BatchOptions(text_column="doc", batch_size=64)
    fresh = tmp_path / f"fresh{suffix}"
    run_batch(model, corpus, fresh, options)
    out = tmp_path / f"out{suffix}"
    with monkeypatch.context() as m:
        crash_after(m, 2)
        with pytest.raises(Crash):
            run_batch(model, corpus, out, options)
    if suffix == ".jsonl":
        assert len(read_jsonl(out)) == 128
        with out.open("a", encoding="utf-8") as fh:
            fh.write('{"id": 128, "doc": "北')  # the crash cut the next line short
    else:
        (out / "part-000000000128-000000000192.parquet.tmp").write_bytes(b"PAR1 half")
    report = run_batch(model, corpus, out, options)
    assert (report.resumed_from, report.written) == (128, 172)
    assert _rows(out) == _rows(fresh)
    assert [r["id"] for r in _rows(out)] == list(range(300))
    again = run_batch(model, corpus, out, options)  # complete: nothing to do
    assert again.written == 0 and _rows(out) == _rows(fresh)


def _rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    import pyarrow.parquet as pq

    return list(pq.read_table(path).to_pylist())


def test_output_made_with_other_settings_is_refused(
    lookup_ner: Path, corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    assert batch(str(lookup_ner), str(corpus), str(out), "--text-column", "doc").exit_code == 0
    again = batch(str(lookup_ner), str(corpus), str(out), "--text-column", "doc")
    assert again.exit_code == 0 and "complete (300 rows): nothing to do" in again.stderr
    other = batch(str(lookup_ner), str(corpus), str(out), "--text-column", "doc", "--strict")
    assert other.exit_code == 2
    assert "written with other settings (options)" in other.stderr and "--overwrite" in other.stderr
    over = batch(str(lookup_ner), str(corpus), str(out), "--text-column", "doc", "--overwrite")
    assert over.exit_code == 0 and "wrote 300 rows" in over.stderr
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text('{"x": 1}\n', encoding="utf-8")
    refused = batch(str(lookup_ner), str(corpus), str(foreign), "--text-column", "doc")
    assert refused.exit_code == 2 and "was not written by `ernie-deploy batch`" in refused.stderr
    assert foreign.read_text(encoding="utf-8") == '{"x": 1}\n'


def test_a_resumed_job_keeps_its_tokenizer(lookup_ner: Path, corpus: Path, tmp_path: Path) -> None:
    other = tmp_path / "tok"
    other.mkdir()
    for f in lookup_ner.iterdir():
        if f.suffix != ".onnx":
            (other / f.name).write_bytes(f.read_bytes())
    out = tmp_path / "out.jsonl"
    args = [str(lookup_ner), str(corpus), str(out), "--text-column", "doc"]
    assert batch(*args).exit_code == 0
    named = batch(*args, "--tokenizer", str(other))
    assert named.exit_code == 2 and "other settings (tokenizer)" in named.stderr
    assert batch(*args, "--tokenizer", str(other), "--overwrite").exit_code == 0
    back = batch(*args)  # leaving --tokenizer out is another tokenizer too
    assert back.exit_code == 2 and "other settings (tokenizer)" in back.stderr
    again = batch(*args, "--tokenizer", str(other))
    assert again.exit_code == 0 and "nothing to do" in again.stderr
    # a model whose .onnx is a link elsewhere (the Hugging Face cache's layout) names no
    # tokenizer in its settings unless one is given, as before this setting existed
    cache = tmp_path / "snapshot"
    blobs = tmp_path / "blobs"
    cache.mkdir()
    blobs.mkdir()
    for f in lookup_ner.iterdir():
        if f.suffix == ".onnx":
            (blobs / f.name).write_bytes(f.read_bytes())
            (cache / f.name).symlink_to(blobs / f.name)
        else:
            (cache / f.name).write_bytes(f.read_bytes())
    linked = tmp_path / "linked.jsonl"
    assert batch(str(cache), str(corpus), str(linked), "--text-column", "doc").exit_code == 0
    manifest = json.loads(Path(f"{linked}.batch.json").read_text(encoding="utf-8"))
    assert "tokenizer" not in manifest["settings"]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_overwrite_keeps_the_old_output_until_the_new_job_has_rows(
    lookup_ner: Path, corpus: Path, tmp_path: Path, suffix: str
) -> None:
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    out = tmp_path / f"out{suffix}"
    assert batch(str(lookup_ner), str(corpus), str(out), "--text-column", "doc").exit_code == 0
    manifest = out / "_batch.json" if suffix == ".parquet" else Path(f"{out}.batch.json")
    before = (_rows(out), manifest.read_bytes())
    # a job that fails before its first row (here the model refuses the labels) removes nothing
    failed = batch(
        str(lookup_ner), str(corpus), str(out), "--text-column", "doc", "--overwrite",
        "--labels", "O,B-PER",
    )  # fmt: skip
    assert failed.exit_code != 0 and "Traceback" not in failed.output
    assert (_rows(out), manifest.read_bytes()) == before
    resumed = batch(str(lookup_ner), str(corpus), str(out), "--text-column", "doc")
    assert resumed.exit_code == 0 and "nothing to do" in resumed.stderr
    # one that runs replaces the rows and the manifest
    over = batch(str(lookup_ner), str(corpus), str(out), "--text-column", "doc", "--overwrite",
                 "--strict")  # fmt: skip
    assert over.exit_code == 0 and "wrote 300 rows" in over.stderr
    assert len(_rows(out)) == 300 and manifest.read_bytes() != before[1]
    assert json.loads(manifest.read_text(encoding="utf-8"))["complete_rows"] == 300


def test_a_column_the_results_would_replace_is_refused(
    cls_model: list[str], tmp_path: Path
) -> None:
    src = write_jsonl(
        tmp_path / "gold.jsonl", [{"text": t, "label": "gold"} for t in make_texts(5)]
    )
    out = tmp_path / "out.jsonl"
    refused = batch(cls_model[0], str(src), str(out), *cls_model[1:])
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert "already has a column 'label'" in refused.stderr and "--result-prefix" in refused.stderr
    done = batch(cls_model[0], str(src), str(out), *cls_model[1:], "--result-prefix", "pred_")
    assert done.exit_code == 0, done.output
    assert [r["label"] for r in read_jsonl(out)] == ["gold"] * 5


def test_a_long_csv_cell_is_read_and_a_broken_parquet_file_named(
    lookup_ner: Path, tmp_path: Path
) -> None:
    # csv's own cell limit is 131,072 characters; a long document is still one valid text
    src = tmp_path / "long.csv"
    long_text = "乔丹在北京打球。" * 20_000
    with src.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows([["text"], ["姚明"], [long_text]])
    out = tmp_path / "out.jsonl"
    result = batch(str(lookup_ner), str(src), str(out))
    assert result.exit_code == 0, result.output
    assert len(read_jsonl(out)[1]["entities"]) == 40_000
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    folder = tmp_path / "pq"
    folder.mkdir()
    pq.write_table(pa.table({"text": ["乔丹在北京"]}), folder / "a.parquet")
    (folder / "b.parquet").write_bytes(b"PAR1" + b"\0" * 16 + b"PAR1")
    broken = batch(str(lookup_ner), str(folder), str(tmp_path / "o2.jsonl"))
    assert broken.exit_code == 2 and "Traceback" not in broken.output
    assert "b.parquet is not a readable parquet file" in broken.stderr


def test_bad_input_is_one_sentence_and_keeps_written_rows(
    lookup_ner: Path, corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    no_column = batch(str(lookup_ner), str(corpus), str(out))
    assert no_column.exit_code == 2
    assert "has no column 'text' (it has 'doc', 'source'): name the column" in no_column.stderr
    assert "--text-column" in no_column.stderr and not out.exists()
    txt = tmp_path / "in.txt"
    txt.write_text("北京\n", encoding="utf-8")
    assert (
        "is not a .jsonl, .ndjson, .json, .csv, .parquet file"
        in batch(str(lookup_ner), str(txt), str(out)).stderr
    )
    wrong_out = batch(str(lookup_ner), str(corpus), str(tmp_path / "o.csv"), "--text-column", "doc")
    assert wrong_out.exit_code == 2 and "neither .jsonl nor .parquet" in wrong_out.stderr
    no_id = batch(
        str(lookup_ner), str(corpus), str(out), "--text-column", "doc", "--id-column", "k"
    )
    assert no_id.exit_code == 2 and "has no id column 'k'" in no_id.stderr
    local_address = batch(str(lookup_ner), str(corpus), str(out), "--address", "auto")
    assert local_address.exit_code == 1 and "need --engine ray" in local_address.stderr
    src = write_jsonl(
        tmp_path / "bad.jsonl", [{"text": t} for t in ["北京", "重庆", "成都", "乔丹"]]
    )
    with src.open("a", encoding="utf-8") as fh:
        fh.write('{"text": " "}\n{"text": "科比"}\n')
    bad = batch(str(lookup_ner), str(src), str(out), "--batch-size", "2")
    assert bad.exit_code == 2
    assert "bad.jsonl line 5 has an empty 'text': remove that row." in bad.stderr
    assert [r["text"] for r in read_jsonl(out)] == ["北京", "重庆", "成都", "乔丹"]


def test_ray_engine_without_ray_names_the_extra(
    lookup_ner: Path, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    out = tmp_path / "out.jsonl"
    result = batch(
        str(lookup_ner), str(corpus), str(out), "--text-column", "doc", "--engine", "ray"
    )
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: --engine ray needs Ray, which is not installed: pip install 'ernie-deploy[ray]'."
    )
    assert not out.exists()


def test_manifest_records_the_settings(lookup_ner: Path, corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    run_batch(BatchModel(str(lookup_ner)), corpus, out, BatchOptions(text_column="doc"))
    manifest = json.loads((tmp_path / "out.jsonl.batch.json").read_text(encoding="utf-8"))
    assert manifest["complete_rows"] == 300
    assert manifest["settings"]["text_column"] == "doc"
    assert manifest["settings"]["id_generated"] is True


def test_chunks_end_on_batch_boundaries(corpus: Path) -> None:
    source = open_source(corpus, "doc")
    sizes = [len(c) for c in chunks(source, 70, 64)]
    assert sizes == [58, 64, 64, 44]


def test_embedding_rows_take_the_prompt_the_caller_names(tmp_path: Path) -> None:
    """The bundled E5 model wants `passage: ` before the documents of a corpus."""
    texts = ["北京的涮肉很好吃", "New York in 2008", "乔丹是篮球运动员"]
    src = write_jsonl(tmp_path / "docs.jsonl", [{"text": t} for t in texts])
    out = tmp_path / "out.jsonl"
    done = batch("e5-small-zh-en", str(src), str(out), "--prompt-name", "passage")
    assert done.exit_code == 0, done.output
    got = np.array([row["embedding"] for row in read_jsonl(out)])
    model = ernie_deploy.load("e5-small-zh-en", device="cpu")
    want = np.stack([r.vector for r in model.predict(texts, prompt_name="passage")])
    plain = np.stack([r.vector for r in model.predict(texts)])
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert not np.allclose(got, plain, atol=1e-3)  # without the flag the rows would differ
    # the prompt is one of the settings a resumed job must keep
    other = batch("e5-small-zh-en", str(src), str(out), "--prompt-name", "query")
    assert other.exit_code != 0 and "was written with other settings (options)" in other.stderr
    # a prompt the model lacks: one sentence, and no output or manifest left behind
    bad_out = tmp_path / "bad.jsonl"
    bad = batch("e5-small-zh-en", str(src), str(bad_out), "--prompt-name", "doc")
    assert bad.exit_code == 2 and bad.stderr.count("\n") == 1
    assert "Unknown prompt_name 'doc': this model's prompts are 'query', 'passage'" in bad.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "docs.jsonl",
        "out.jsonl",
        "out.jsonl.batch.json",
    ]
