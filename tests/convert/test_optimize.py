"""`optimize`: ORT fusions (O1/O2/O3) in a new model dir, Attention fusion on paddle2onnx ERNIE."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import ernie_deploy
from ernie_deploy.convert import optimize
from ernie_deploy.convert.fusion import RewriteReport, rewrite_attention
from ernie_deploy.convert.optimize import DEFAULT_TOLERANCES, OptimizeReport, optimize_model
from ernie_deploy.errors import ConfigError, OutputExistsError, VerificationError
from ernie_deploy.tasks.rerank import Reranker
from tests import _models
from tests._models import RefModel

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.transformers.optimizer")

TEXTS = [
    "北京的涮肉，重庆的火锅，成都的小吃都是极具特色的美食。",
    "乔丹、科比、詹姆斯和姚明都是篮球界的标志性人物。",
    "Michael Jordan 2008年在 New York 打NBA",
    "好",
]


def _ops(path: Path) -> Counter[str]:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def _inputs(path: Path) -> list[str]:
    return [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name)


@pytest.fixture(scope="module")
def paddle_o2(paddle_ner: RefModel, tmp_path_factory: pytest.TempPathFactory) -> OptimizeReport:
    return optimize_model(paddle_ner.path, tmp_path_factory.mktemp("opt") / "ner_o2")


def test_paddle_ner_o2_fuses_attention(paddle_o2: OptimizeReport, paddle_ner: RefModel) -> None:
    assert paddle_o2.fused["Attention"] == _models.LAYERS
    assert paddle_o2.fused["EmbedLayerNormalization"] == 1
    assert paddle_o2.fused["SkipLayerNormalization"] == 2 * _models.LAYERS
    assert paddle_o2.fused["BiasGelu"] == _models.LAYERS
    assert paddle_o2.rewrite is not None
    assert paddle_o2.rewrite.scales_moved == paddle_o2.rewrite.masks_rebuilt == _models.LAYERS
    assert paddle_o2.rewrite.pad_id == 0
    assert paddle_o2.parity.passed and paddle_o2.parity.max_abs_diff <= 1e-4
    assert paddle_o2.parity.argmax_agreement == 1.0
    assert paddle_o2.nodes_after < paddle_o2.nodes_before
    ops = _ops(paddle_o2.onnx_path)
    assert ops["Attention"] == _models.LAYERS and "Softmax" not in ops
    # the user's interface is kept: no attention_mask input was added
    assert _inputs(paddle_o2.onnx_path) == _inputs(paddle_ner.onnx)
    assert not _leftovers(paddle_o2.out.parent)
    text = "\n".join(paddle_o2.lines())
    assert "Attention 2" in text and "passed" in text and "pad id 0" in text


def test_paddle_ner_o2_predicts_like_the_source(
    paddle_o2: OptimizeReport, paddle_ner: RefModel
) -> None:
    source = ernie_deploy.load(paddle_ner.path, device="cpu")
    fused = ernie_deploy.load(paddle_o2.out, device="cpu")
    assert sorted(p.name for p in paddle_o2.out.iterdir()) == [
        "config.json",
        "model.onnx",
        "special_tokens_map.json",
        "tokenizer_config.json",
        "vocab.txt",
    ]
    for a, b in zip(source(TEXTS), fused(TEXTS), strict=True):
        assert [(e.text, e.label, e.start, e.end) for e in a.entities] == [
            (e.text, e.label, e.start, e.end) for e in b.entities
        ]
        assert np.allclose([e.score for e in a.entities], [e.score for e in b.entities], atol=1e-5)
    np.testing.assert_allclose(
        np.concatenate(source.token_logits(TEXTS)),
        np.concatenate(fused.token_logits(TEXTS)),
        atol=1e-4,
    )


def test_stock_optimizer_does_not_fuse_paddle_attention(
    paddle_ner: RefModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the rewrite the same pipeline fuses everything but Attention."""
    monkeypatch.setattr(optimize, "rewrite_attention", lambda graph, head_size: RewriteReport())
    report = optimize_model(paddle_ner.path, tmp_path / "stock")
    assert "Attention" not in report.fused
    assert report.fused["SkipLayerNormalization"] == 2 * _models.LAYERS
    assert report.parity.passed
    assert "Attention did not fuse" in "\n".join(report.lines())


def test_paddle_cls_o2_keeps_labels(paddle_cls: RefModel, tmp_path: Path) -> None:
    report = optimize_model(paddle_cls.path, tmp_path / "cls", "o2")  # level is case-insensitive
    assert report.fused["Attention"] == _models.LAYERS
    assert report.parity.passed and report.parity.max_abs_diff <= 1e-4
    source = ernie_deploy.load(paddle_cls.path, device="cpu", top_k=3)
    fused = ernie_deploy.load(tmp_path / "cls", device="cpu", top_k=3)
    for a, b in zip(source(TEXTS), fused(TEXTS), strict=True):
        assert a.label == b.label
        assert [x.label for x in a.top_k] == [x.label for x in b.top_k]
        assert a.score == pytest.approx(b.score, abs=1e-5)


def test_rewrite_on_the_raw_paddle_graph(paddle_ner: RefModel) -> None:
    """The rewrite works on the graph as paddle2onnx writes it and keeps its outputs."""
    ort = pytest.importorskip("onnxruntime")
    graph = onnx.load(str(paddle_ner.onnx))
    report = rewrite_attention(graph)
    assert (report.attention_blocks, report.scales_moved, report.masks_rebuilt) == (2, 2, 2)
    onnx.checker.check_model(graph)
    again = rewrite_attention(graph)
    assert not again.changed and again.attention_blocks == 0
    ids = np.array([[1, 7, 8, 9, 2, 0, 0], [1, 10, 11, 12, 13, 14, 2]], dtype=np.int64)
    feeds = {"input_ids": ids, "token_type_ids": np.zeros_like(ids)}
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    before = ort.InferenceSession(str(paddle_ner.onnx), opts, providers=["CPUExecutionProvider"])
    after = ort.InferenceSession(
        graph.SerializeToString(), opts, providers=["CPUExecutionProvider"]
    )
    real = ids != 0
    diff = np.abs(before.run(None, feeds)[0] - after.run(None, feeds)[0])[real]
    assert diff.max() <= 1e-6


def test_rewrite_keeps_a_scale_attention_would_change(paddle_ner: RefModel) -> None:
    graph = onnx.load(str(paddle_ner.onnx))
    report = rewrite_attention(graph, head_size=4)  # 1/sqrt(4) != the graph's 1/sqrt(16)
    assert report.scales_moved == 0 and report.masks_rebuilt == 2
    assert len(report.notes) == 2 and "not 1/sqrt(head size 4)" in report.notes[0]


def test_paddle_opset17_fuses_attention(paddle_ner: RefModel, tmp_path: Path) -> None:
    """paddle2onnx at opset 17 writes LayerNormalization ops; Attention still fuses."""
    from ernie_deploy.convert.outdir import copy_model_files
    from ernie_deploy.convert.paddle import run_paddle2onnx

    static = _models.save_static(paddle_ner.path, "token_cls", tmp_path / "static")
    src = tmp_path / "ner17"
    src.mkdir()
    copy_model_files(paddle_ner.path, src)
    run_paddle2onnx(static / "inference.json", static / "inference.pdiparams", src / "m.onnx", 17)
    report = optimize_model(src, tmp_path / "out")
    assert report.fused["Attention"] == _models.LAYERS
    assert report.parity.passed and report.parity.max_abs_diff <= 1e-4


def test_bert_ner_levels(bert_ner: RefModel, tmp_path: Path) -> None:
    o1 = optimize_model(bert_ner.path, tmp_path / "o1", "O1")
    assert o1.fused == {} and o1.rewrite is None
    assert o1.nodes_after < o1.nodes_before and o1.parity.max_abs_diff <= 1e-4
    assert "com.microsoft" not in {n.domain for n in onnx.load(str(o1.onnx_path)).graph.node}

    o2 = optimize_model(bert_ner.path, tmp_path / "o2", "O2")
    assert o2.fused["Attention"] == _models.LAYERS and o2.fused["EmbedLayerNormalization"] == 1
    assert o2.rewrite is not None and not o2.rewrite.changed  # torch's graph fuses as it is
    assert o2.parity.max_abs_diff <= 1e-4
    assert _inputs(o2.onnx_path) == _inputs(bert_ner.onnx)

    o3 = optimize_model(bert_ner.path, tmp_path / "o3", "O3")
    assert o3.fused["FastGelu"] == _models.LAYERS and "BiasGelu" not in o3.fused
    assert o3.parity.tolerance == DEFAULT_TOLERANCES["O3"] and o3.parity.passed
    ner = ernie_deploy.load(tmp_path / "o3", device="cpu")
    assert len(ner(TEXTS)) == len(TEXTS)


def test_xlmr_rerank_o2(xlmr_rerank: RefModel, tmp_path: Path) -> None:
    report = optimize_model(xlmr_rerank.onnx, tmp_path / "rerank")  # an .onnx inside its dir
    assert report.fused["Attention"] == _models.LAYERS
    assert report.parity.passed and report.parity.max_abs_diff <= 1e-4
    source = ernie_deploy.load(xlmr_rerank.path, device="cpu")
    fused = ernie_deploy.load(tmp_path / "rerank", device="cpu")
    query, docs = "自动驾驶", ["自动驾驶会让酒驾成为历史吗", "the weather is nice", "好"]
    assert isinstance(source, Reranker) and isinstance(fused, Reranker)
    np.testing.assert_allclose(
        source.raw_scores(query, docs), fused.raw_scores(query, docs), atol=1e-4
    )


def test_failed_verification_leaves_nothing(
    paddle_ner: RefModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fuse = optimize._fuse

    def corrupt(graph: object, level: str, heads: int, hidden: int) -> object:
        fused = real_fuse(graph, level, heads, hidden)
        weights = next(t for t in fused.graph.initializer if t.name.endswith("qkv_weight"))
        # scaled, not shifted: a shift cancels, as LayerNorm outputs sum to 0 over the hidden axis
        value = onnx.numpy_helper.to_array(weights) * 3.0
        weights.CopyFrom(onnx.numpy_helper.from_array(value.astype(np.float32), weights.name))
        return fused

    monkeypatch.setattr(optimize, "_fuse", corrupt)
    out = tmp_path / "bad"
    with pytest.raises(VerificationError, match="--level O1"):
        optimize_model(paddle_ner.path, out)
    assert not out.exists() and not _leftovers(tmp_path)


def test_zero_tolerance_names_a_lower_level(paddle_ner: RefModel, tmp_path: Path) -> None:
    with pytest.raises(VerificationError, match="--level O2"):
        optimize_model(paddle_ner.path, tmp_path / "o3", "O3", tolerance=0.0)
    assert not _leftovers(tmp_path) and not (tmp_path / "o3").exists()


def test_existing_output_needs_overwrite(paddle_ner: RefModel, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        optimize_model(paddle_ner.path, out, "O1")
    assert (out / "keep.txt").exists()
    report = optimize_model(paddle_ner.path, out, "O1", overwrite=True)
    assert report.parity.passed and not (out / "keep.txt").exists()
    assert not _leftovers(tmp_path)


def test_bad_level_and_tolerance(paddle_ner: RefModel, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="O1, O2, O3"):
        optimize_model(paddle_ner.path, tmp_path / "x", "O4")
    with pytest.raises(ConfigError, match="tolerance"):
        optimize_model(paddle_ner.path, tmp_path / "x", tolerance=-1)
    assert not (tmp_path / "x").exists()


def test_external_data_source_stays_external(bert_ner: RefModel, tmp_path: Path) -> None:
    """optimum writes big models as model.onnx + model.onnx_data: the output keeps that layout."""
    from ernie_deploy.convert.outdir import copy_model_files

    src = tmp_path / "src"
    src.mkdir()
    copy_model_files(bert_ner.path, src)
    graph = onnx.load(str(bert_ner.onnx))
    onnx.save(graph, str(src / "model.onnx"), save_as_external_data=True, size_threshold=0)
    report = optimize_model(src, tmp_path / "out")
    assert report.fused["Attention"] == _models.LAYERS and report.parity.passed
    assert (tmp_path / "out" / "model.onnx_data").is_file()
    assert (tmp_path / "out" / "model.onnx").stat().st_size < 100_000


def test_bare_onnx_with_a_tokenizer_dir(paddle_ner: RefModel, tmp_path: Path) -> None:
    """infer.py's layout: an .onnx on its own plus --model_name_or_path for the tokenizer."""
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "ner.onnx").write_bytes(paddle_ner.onnx.read_bytes())
    report = optimize_model(bare / "ner.onnx", tmp_path / "out", tokenizer_dir=paddle_ner.path)
    assert report.fused["Attention"] == _models.LAYERS
    assert {"model.onnx", "vocab.txt", "config.json"} <= {
        p.name for p in (tmp_path / "out").iterdir()
    }
    ner = ernie_deploy.load(tmp_path / "out", device="cpu")
    assert len(ner(TEXTS)) == len(TEXTS)
