"""The models shipped in the package: they load by name, match the Paddle / PyTorch checkpoint
they were exported from, and serve infer.py when no --model_path is given."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import ernie_deploy
from ernie_deploy.cli import app
from ernie_deploy.cli.infer import GUIDE_LABELS
from ernie_deploy.runtime import RuntimeConfig, load_model
from ernie_deploy.runtime.bundled import DEFAULTS, bundled_models, bundled_path

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-4
# the models this version ships
SHIPPED = ("ner-zh", "sentiment-zh", "ner-zh-e5", "sentiment-zh-e5", "e5-small-zh-en")
PADDLE = ("ner-zh", "sentiment-zh")  # ERNIE, through paddle2onnx
E5_HEADS = ("ner-zh-e5", "sentiment-zh-e5")  # fine-tuned from e5-small, through convert hf


def test_shipped_models_are_installed() -> None:
    found = {m.name: m for m in bundled_models()}
    assert set(SHIPPED) <= set(found)
    assert found["sentiment-zh"].labels == ("negative", "positive")
    assert found["sentiment-zh"].task == "seq_cls"
    for name in ("ner-zh", "ner-zh-e5"):
        assert found[name].labels == GUIDE_LABELS["token_cls"]
        assert found[name].task == "token_cls"
    assert found["sentiment-zh-e5"].labels == ("negative", "positive")
    for m in found.values():
        assert (m.path / "README.md").is_file(), f"{m.name} has no model card"
        assert m.size_mb <= 40, f"{m.name} is {m.size_mb:.1f} MB"
        assert max(p.stat().st_size for p in m.path.iterdir() if p.is_file()) <= 20 * 2**20
        assert set(m.metrics) and m.summary
    assert sum(m.size_mb for m in found.values()) <= 150


def test_defaults_are_the_e5_heads() -> None:
    assert DEFAULTS == {"token_cls": "ner-zh-e5", "seq_cls": "sentiment-zh-e5"}


@pytest.mark.parametrize("name", PADDLE)
def test_parity_with_the_paddle_checkpoint_recorded_at_export(name: str) -> None:
    path = bundled_path(name)
    assert path is not None
    bundle = json.loads((path / "bundle.json").read_text(encoding="utf-8"))
    assert bundle["export"]["max_abs_diff"] <= TOL
    # Paddle's own logits on the export probe batch, recorded when the model was converted:
    # ONNX Runtime on the shipped graph must still give them.
    check = np.load(path / "export_check.npz")
    model = load_model(path / "model.onnx", RuntimeConfig(device="cpu"))
    out = model.run({"input_ids": check["input_ids"], "token_type_ids": check["token_type_ids"]})
    logits = next(iter(out.values()))
    assert np.abs(logits - check["paddle_logits"]).max() <= TOL


@pytest.mark.parametrize("name", E5_HEADS)
def test_e5_head_agrees_with_the_pytorch_checkpoint_as_recorded_at_export(name: str) -> None:
    path = bundled_path(name)
    assert path is not None
    export = json.loads((path / "bundle.json").read_text(encoding="utf-8"))["export"]
    assert export["max_abs_diff"] <= TOL  # the fp32 export vs PyTorch (convert hf parity)
    # PyTorch's fp32 logits on the probe batch, recorded at export: the shipped 8-bit graph must
    # still agree with them as well as it did when it was shipped (slack for other CPUs' kernels)
    check = np.load(path / "export_check.npz")
    model = load_model(path / "model.onnx", RuntimeConfig(device="cpu"))
    out = model.run({"input_ids": check["input_ids"], "attention_mask": check["attention_mask"]})
    logits, ref = next(iter(out.values())), check["pytorch_logits"]
    rows = check["attention_mask"].astype(bool) if ref.ndim == 3 else slice(None)
    agree = float((logits.argmax(-1) == ref.argmax(-1))[rows].mean())
    assert agree >= export["int8_argmax_agreement"] - 0.01
    assert np.abs(logits - ref)[rows].max() <= max(2 * export["int8_max_abs_diff"], 0.05)


@pytest.mark.parametrize("name", (*E5_HEADS, "e5-small-zh-en"))
def test_e5_models_give_a_text_the_same_answer_alone_and_batched(name: str) -> None:
    """The bundled e5 models' outputs do not depend on which texts share a batch (the
    sentiment head shipped until 2026-12-05, dynamic int8 with one activation scale per batch,
    moved its probe logits by 0.03 and scored 0.892 at batch 32 but 0.8835 at batch 1)."""
    from ernie_deploy.convert.verify import DEFAULT_TOLERANCE, batch_drift, probe_features
    from ernie_deploy.tasks.tokenization import Tokenizer

    path = bundled_path(name)
    assert path is not None
    features = probe_features(Tokenizer.from_dir(path))
    feeds = {k: features[k] for k in ("input_ids", "attention_mask")}
    assert batch_drift(path / "model.onnx", feeds) <= DEFAULT_TOLERANCE
    texts = [
        "北京的涮肉，重庆的火锅，成都的小吃都是极具特色的美食。",
        "乔丹、科比、詹姆斯和姚明都是篮球界的标志性人物。",
        "质量很好，物流也快。",
        "房间太小，服务一般，不会再来了。",
        "ok",
    ]
    alone, batched = (ernie_deploy.load(name, batch_size=b).predict(texts) for b in (1, 32))
    assert _same([r.to_dict() for r in alone], [r.to_dict() for r in batched])


def _same(a: object, b: object, tol: float = 1e-3) -> bool:
    """Equal answers: the same labels, spans and keys, floats within `tol`."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) <= tol
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k], tol) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y, tol) for x, y in zip(a, b))
    return a == b


def test_e5_heads_record_their_metrics_against_the_old_defaults() -> None:
    new = {n: json.loads((bundled_path(n) / "bundle.json").read_text("utf-8")) for n in E5_HEADS}  # type: ignore[operator]
    assert new["ner-zh-e5"]["metrics"]["msra_test_f1"] > 0.806  # ner-zh's
    assert new["sentiment-zh-e5"]["metrics"]["heldout_accuracy"] > 0.836  # sentiment-zh's
    guide = new["ner-zh-e5"]["guide"]
    assert guide["guide_lines_exact"] and guide["joined_found"] == 7


def test_ner_zh_e5_decodes_with_the_crf_tables_its_bundle_records() -> None:
    """The shipped head was trained with a CRF (tools/train_e5_heads.py --crf): its tables are
    the crf_*.npy files, which the loaded decoder must use, and the bundle says so."""
    from ernie_deploy.tasks.viterbi import Transitions

    path = bundled_path("ner-zh-e5")
    bundle = json.loads((path / "bundle.json").read_text("utf-8"))
    assert bundle["transitions"]["kind"] == "crf" and bundle["hparams"]["crf"] is True
    shipped = Transitions.from_dir(path)
    assert shipped is not None and shipped.start is not None and shipped.end is not None
    labels = bundle["labels"]
    allowed = [
        (i, j)
        for i, a in enumerate(labels)
        for j, b in enumerate(labels)
        if not b.startswith("I-") or a in (f"B-{b[2:]}", b)
    ]
    learned = np.array([shipped.matrix[i, j] for i, j in allowed])
    assert np.abs(learned).max() > 0.1  # trained, not the zeros the tables start from
    ner = ernie_deploy.load("ner-zh-e5")
    assert ner.decoder.transitions is not None  # type: ignore[attr-defined]
    assert ner.decode == "viterbi"  # type: ignore[attr-defined]


def test_ner_zh_e5_finds_all_seven_in_the_guides_sentences_joined() -> None:
    from tests.cli.test_infer import GUIDE_TOKEN_CLS

    texts = [
        line.split(": ", 1)[1]
        for line in GUIDE_TOKEN_CLS.splitlines()
        if line.startswith("input data:")
    ]
    joined = "".join(texts)
    found = ernie_deploy.load("ner-zh-e5")(joined)[0].entities
    assert [(joined[e.start : e.end], e.label) for e in found] == [
        ("北京", "LOC"), ("重庆", "LOC"), ("成都", "LOC"),
        ("乔丹", "PER"), ("科比", "PER"), ("詹姆斯", "PER"), ("姚明", "PER"),
    ]  # fmt: skip


@pytest.mark.parametrize("name", ["sentiment-zh", "sentiment-zh-e5"])
def test_load_by_name_and_by_task(name: str) -> None:
    cls = ernie_deploy.load(name)
    assert isinstance(cls, ernie_deploy.SequenceClassifier)
    by_task = ernie_deploy.load(task="seq_cls")
    assert by_task.model.path == bundled_path(DEFAULTS["seq_cls"]) / "model.onnx"  # type: ignore[operator]
    assert cls("这家店的菜太难吃了，服务也很差，再也不来了。")[0].label == "negative"
    assert cls("质量很好，物流也快，非常满意！")[0].label == "positive"


def test_infer_seq_cls_without_model_path_uses_the_bundled_model() -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "infer.py"), "--task_name", "seq_cls"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    labels = [line for line in run.stdout.splitlines() if line.startswith("label:")]
    assert len(labels) == 2 and all(line.split()[1] in ("negative", "positive") for line in labels)


def test_infer_token_cls_without_model_path_prints_the_guides_seven_entities() -> None:
    from tests.cli.test_infer import GUIDE_TOKEN_CLS

    run = subprocess.run(
        [sys.executable, str(ROOT / "infer.py"), "--task_name", "token_cls"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    want = [line for line in GUIDE_TOKEN_CLS.splitlines() if line.startswith("entity:")]
    assert len(want) == 7
    assert [line for line in run.stdout.splitlines() if line.startswith("entity:")] == want
    assert run.stdout.splitlines() == GUIDE_TOKEN_CLS.splitlines()


def test_ner_zh_decodes_with_viterbi_by_default() -> None:
    ner = ernie_deploy.load("ner-zh")
    assert isinstance(ner, ernie_deploy.TokenClassifier)
    assert ner.decode == "viterbi"
    text = "李华在上海的复旦大学读书。"
    entities = ner(text)[0].entities
    assert all(text[e.start : e.end] == e.text for e in entities)


def test_models_command_lists_them() -> None:
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0
    for name in SHIPPED:
        assert name in result.stdout


EMBEDDING = "e5-small-zh-en"


def test_e5_embedding_reproduces_the_decoded_fp32_vectors_recorded_at_export() -> None:
    path = bundled_path(EMBEDDING)
    assert path is not None
    found = {m.name: m for m in bundled_models()}[EMBEDDING]
    assert found.task == "embedding"
    bundle = json.loads((path / "bundle.json").read_text(encoding="utf-8"))
    assert bundle["export"]["cosine_min_vs_decoded_fp32"] >= 0.999
    assert max(p.stat().st_size for p in path.iterdir() if p.is_file()) <= 20 * 2**20
    # the fp32 transformers model's vectors on the probe batch, recorded when it was built
    check = np.load(path / "export_check.npz")
    model = load_model(path / "model.onnx", RuntimeConfig(device="cpu"))
    out = model.run({"input_ids": check["input_ids"], "attention_mask": check["attention_mask"]})
    hidden = next(iter(out.values()))
    mask = check["attention_mask"][..., None]
    vec = (hidden * mask).sum(1) / mask.sum(1)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    assert (vec * check["fp32_vectors"]).sum(1).min() >= 0.999


def test_e5_embedding_records_its_prompts() -> None:
    path = bundled_path(EMBEDDING)
    assert path is not None
    prompts = {"query": "query: ", "passage": "passage: "}
    st = json.loads((path / "config_sentence_transformers.json").read_text(encoding="utf-8"))
    assert st["prompts"] == prompts
    assert json.loads((path / "bundle.json").read_text(encoding="utf-8"))["prompts"] == prompts


def test_e5_embedding_by_name_finds_the_related_passage() -> None:
    emb = ernie_deploy.load(EMBEDDING)
    query = "query: 北京今天的天气怎么样？"
    passages = [
        "passage: 今天北京晴转多云，最高气温十五度。",
        "passage: The stock market fell sharply after the announcement.",
        "passage: 我最喜欢吃四川火锅。",
    ]
    vectors = np.stack([r.vector for r in emb([query, *passages])])
    assert int(np.argmax(vectors[1:] @ vectors[0])) == 0
