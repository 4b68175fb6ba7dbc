"""infer.py as users run it: the guide's command lines and its exact printed lines."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ernie_deploy
from ernie_deploy.cli.infer import GUIDE_LABELS

ROOT = Path(__file__).resolve().parents[2]

GUIDE_TOKEN_CLS = """\
>>> [InferBackend] Creating Engine ...
>>> [InferBackend] Use CPU to inference ...
>>> [InferBackend] Engine Created ...
input data: 北京的涮肉，重庆的火锅，成都的小吃都是极具特色的美食。
The model detects all entities:
entity: 北京   label: LOC   pos: [0, 1]
entity: 重庆   label: LOC   pos: [6, 7]
entity: 成都   label: LOC   pos: [12, 13]
-----------------------------
input data: 乔丹、科比、詹姆斯和姚明都是篮球界的标志性人物。
The model detects all entities:
entity: 乔丹   label: PER   pos: [0, 1]
entity: 科比   label: PER   pos: [3, 4]
entity: 詹姆斯   label: PER   pos: [6, 8]
entity: 姚明   label: PER   pos: [10, 11]
-----------------------------
"""


def infer(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "infer.py"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def bare_ner(lookup_ner: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The guide's layout: ner_model.onnx on its own, the tokenizer in another directory."""
    onnx_file = tmp_path / "ner_model.onnx"
    onnx_file.write_bytes((lookup_ner / "model.onnx").read_bytes())
    tok = tmp_path / "ernie-3.0-medium-zh"
    tok.mkdir()
    (tok / "vocab.txt").write_bytes((lookup_ner / "vocab.txt").read_bytes())
    return onnx_file, tok


def test_token_cls_prints_the_guide_lines(lookup_ner: Path, tmp_path: Path) -> None:
    onnx_file, tok = bare_ner(lookup_ner, tmp_path)
    run = infer(
        "--task_name", "token_cls", "--model_path", str(onnx_file), "--model_name_or_path", str(tok)
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == GUIDE_TOKEN_CLS.splitlines()


def test_use_fp16_on_cpu_prints_the_guide_notice(lookup_ner: Path) -> None:
    run = infer(
        "--task_name",
        "token_cls",
        "--model_path",
        str(lookup_ner / "model.onnx"),
        "--use_fp16",
        "--text",
        "我在北京",
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[:4] == [
        ">>> [InferBackend] Creating Engine ...",
        ">>> [InferBackend] Use CPU to inference ...",
        ">>> [InferBackend] use_fp16 only takes effect when deploying on gpu ...",
        ">>> [InferBackend] Engine Created ...",
    ]


def test_seq_cls_prints_every_input_with_guide_labels(bag_cls: Path) -> None:
    texts = ["未来自动驾驶真的会让酒驾和疲劳驾驶成历史吗？", "一", "黄磊接受华少快问快答"]
    args = ["--task_name", "seq_cls", "--model_path", str(bag_cls / "tnews_model.onnx")]
    run = infer(*args, *[a for t in texts for a in ("--text", t)])
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()[3:]
    assert len(lines) == 4 * len(texts)  # every input printed, a batch of one works too
    expected = ernie_deploy.load(bag_cls, "seq_cls", labels=GUIDE_LABELS["seq_cls"])(texts)
    for i, (text, result) in enumerate(zip(texts, expected)):
        block = lines[4 * i : 4 * i + 4]
        assert block[0] == f"input data: {text}"
        assert block[1] == "seq cls result:"
        assert re.fullmatch(r"label: news_\w+   confidence: [0-9.e-]+", block[2])
        assert block[2] == f"label: {result.label}   confidence: {result.score}"
        assert block[3] == "-----------------------------"


def test_demo_texts_and_output_file(bag_cls: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    run = infer(
        "--task_name",
        "seq_cls",
        "--model_path",
        str(bag_cls / "tnews_model.onnx"),
        "--output_file",
        str(out),
    )
    assert run.returncode == 0, run.stderr
    assert "input data: 黄磊接受华少快问快答，不光智商逆天，情商也不逊黄渤" in run.stdout
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["text"][:4] for r in records] == ["未来自动", "黄磊接受"]
    assert all(r["label"] in GUIDE_LABELS["seq_cls"] for r in records)


def test_input_file_txt_and_jsonl(lookup_ner: Path, tmp_path: Path) -> None:
    txt = tmp_path / "in.txt"
    txt.write_text("乔丹在北京\n\n2008年 New York\n", encoding="utf-8")
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"id": 7, "text": "姚明"}\n', encoding="utf-8")
    model = str(lookup_ner / "model.onnx")
    run = infer("--task_name", "token_cls", "--model_path", model, "--input_file", str(txt))
    assert run.returncode == 0, run.stderr
    assert "entity: New York   label: LOC   pos: [6, 13]" in run.stdout
    out = tmp_path / "o.jsonl"
    run = infer(
        "--task_name",
        "token_cls",
        "--model_path",
        model,
        "--input_file",
        str(jsonl),
        "--output_file",
        str(out),
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(out.read_text(encoding="utf-8"))["id"] == 7


def test_an_input_column_the_results_would_replace_is_refused(
    bag_cls: Path, tmp_path: Path
) -> None:
    gold = tmp_path / "gold.jsonl"
    gold.write_text('{"text": "这个太差了", "label": "positive"}\n', encoding="utf-8")
    out = tmp_path / "o.jsonl"
    model = str(bag_cls / "tnews_model.onnx")
    run = infer("--task_name", "seq_cls", "--model_path", model, "--input_file", str(gold),
                "--output_file", str(out))  # fmt: skip
    line = one_error_line(run)
    assert "already has a column 'label'" in line and "--result-prefix" in line
    assert not out.exists() or "positive" not in out.read_text(encoding="utf-8")
    assert gold.read_text(encoding="utf-8") == '{"text": "这个太差了", "label": "positive"}\n'


def one_error_line(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_bad_inputs_give_one_sentence_and_nonzero_exit(
    lookup_ner: Path, bag_cls: Path, tmp_path: Path, chinese_vocab: Path
) -> None:
    model = str(lookup_ner / "model.onnx")
    ner = ("--task_name", "token_cls", "--model_path")

    assert "does not exist" in one_error_line(infer(*ner, str(tmp_path / "missing.onnx")))

    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage")
    line = one_error_line(infer(*ner, str(corrupt), "--model_name_or_path", str(lookup_ner)))
    assert "cannot load" in line and "re-export" in line

    line = one_error_line(infer(*ner, model, "--model_name_or_path", str(tmp_path / "nope")))
    assert "Tokenizer directory" in line and "--model_name_or_path" in line
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "m.onnx").write_bytes((lookup_ner / "model.onnx").read_bytes())
    line = one_error_line(infer(*ner, str(alone / "m.onnx")))
    assert "No tokenizer.json or vocab.txt" in line and "--model_name_or_path" in line
    assert "does not download 'ernie-3.0-medium-zh'" in line

    five = tmp_path / "five"
    five.mkdir()
    (five / "vocab.txt").write_bytes(chinese_vocab.read_bytes())
    from tests._lookup import build_bag_classifier

    build_bag_classifier(five / "m.onnx", 21128, 5)
    line = one_error_line(infer("--task_name", "seq_cls", "--model_path", str(five / "m.onnx")))
    assert "outputs 5 classes but 15 labels" in line

    assert "use one of" in one_error_line(infer("--task_name", "ner", "--model_path", model))
    assert "is empty" in one_error_line(infer(*ner, model, "--text", "  "))

    bad = tmp_path / "gbk.txt"
    bad.write_bytes("北京\n".encode() * 300 + "上海\n".encode("gbk"))
    out = tmp_path / "partial.jsonl"
    run = infer(*ner, model, "--input_file", str(bad), "--output_file", str(out))
    assert "not valid UTF-8" in one_error_line(run) and "line 301" in one_error_line(run)
    assert len(out.read_text(encoding="utf-8").splitlines()) == 300  # nothing done is lost

    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    assert "holds no texts" in one_error_line(infer(*ner, model, "--input_file", str(empty)))

    odd = tmp_path / "odd"
    from tests._lookup import lookup_ner_dir

    lookup_ner_dir(odd, chinese_vocab, extra_inputs=("pixel_values",))
    assert "pixel_values" in one_error_line(infer(*ner, str(odd / "model.onnx")))


@pytest.mark.parametrize("entry", ["infer.py", "ernie-deploy infer"])
def test_both_entry_points_accept_guide_flags(lookup_ner: Path, entry: str) -> None:
    args = [
        "--task_name",
        "token_cls",
        "--model_path",
        str(lookup_ner / "model.onnx"),
        "--max_seq_length",
        "128",
        "--text",
        "科比",
    ]
    if entry == "infer.py":
        run = infer(*args)
    else:
        run = subprocess.run(
            [sys.executable, "-m", "ernie_deploy", "infer", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode == 0, run.stderr
    assert "entity: 科比   label: PER   pos: [0, 1]" in run.stdout.splitlines()


def test_seq_cls_truncation_is_reported_not_silent(bag_cls: Path) -> None:
    run = infer(
        "--task_name",
        "seq_cls",
        "--model_path",
        str(bag_cls / "tnews_model.onnx"),
        "--max_seq_length",
        "16",
        "--text",
        "很长的文本" * 3,
        "--text",
        "短",
    )
    assert run.returncode == 0, run.stderr
    warnings = run.stderr.strip().splitlines()
    assert len(warnings) == 1 and "15 tokens truncated to 14" in warnings[0]


def test_truncation_is_reported_for_sentencepiece_and_rerank() -> None:
    # SentencePiece puts a "▁" piece before the text: 126 characters are 127 tokens
    run = infer("--task_name", "seq_cls", "--model_path", "sentiment-zh-e5", "--text", "鬣" * 126)
    assert run.returncode == 0, run.stderr
    assert "input of 127 tokens truncated to 126" in run.stderr
    # rerank counts the query and the document together
    long_doc = "差" * 100 + "好" * 400
    run = infer("--task_name", "rerank", "--model_path", "sentiment-zh", "--query", "好",
                "--text", long_doc, "--text", "好")  # fmt: skip
    assert run.returncode == 0, run.stderr
    warnings = run.stderr.strip().splitlines()
    assert len(warnings) == 1 and "query + document of 501 tokens truncated to 125" in warnings[0]


def test_input_file_csv_names_its_text_column(lookup_ner: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text('id,body\n1,乔丹在北京\n2,"姚明,重庆"\n', encoding="utf-8")
    model = str(lookup_ner / "model.onnx")
    ner = ("--task_name", "token_cls", "--model_path", model, "--input_file", str(src))
    line = one_error_line(infer(*ner))
    assert "has no column 'text'" in line and "--text_field" in line
    run = infer(*ner, "--text_field", "body")
    assert run.returncode == 0, run.stderr
    assert "input data: 姚明,重庆" in run.stdout and "input data: body" not in run.stdout
