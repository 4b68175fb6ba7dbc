"""`quantize_model`: int8 model directories that load as they are, and the agreement report."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ernie_deploy
from ernie_deploy.convert import quantize
from ernie_deploy.convert import quantize_report as qr
from ernie_deploy.convert.quantize import PRESETS, quantize_model
from ernie_deploy.convert.quantize_report import QuantizeReport
from ernie_deploy.errors import ConfigError, InputError, OutputExistsError
from ernie_deploy.tasks.results import SeqClsResult, TokenClsResult
from tests._models import RefModel

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.quantization")

TEXTS = [
    "北京的涮肉，重庆的火锅，成都的小吃都是极具特色的美食。",
    "乔丹、科比、詹姆斯和姚明。",
    "好",
]


def check_report(report: QuantizeReport, ratio: float, labelled: bool = True) -> None:
    assert report.size_after < report.size_before * ratio
    assert 0.0 < report.ratio < ratio
    assert dict(report.quantized).get("MatMul", 0) > 0
    assert dict(report.quantized).get("Gather", 0) > 0
    assert math.isfinite(report.parity.max_abs_diff)
    assert report.batch_drift is not None and math.isfinite(report.batch_drift)
    agreement = report.parity.argmax_agreement
    if labelled:  # int8 keeps most decisions even on random tiny weights (chance: 1/labels)
        assert agreement is not None and 0.5 < agreement <= 1.0
    else:
        assert agreement is None
    lines = report.lines()
    assert lines and all(isinstance(line, str) for line in lines)
    assert any("MB" in line for line in lines)
    json.dumps(report.to_dict())


def weight_inits(path: Path) -> list[np.ndarray]:
    """The quantised weight (B) initializers of the MatMulInteger nodes."""
    from onnx import numpy_helper

    graph = onnx.load(str(path))
    inits = {t.name: t for t in graph.graph.initializer}
    return [
        numpy_helper.to_array(inits[n.input[1]])
        for n in graph.graph.node
        if n.op_type == "MatMulInteger" and n.input[1] in inits
    ]


def test_paddle_ner(paddle_ner: RefModel, tmp_path: Path) -> None:
    before = sorted(p.name for p in paddle_ner.path.iterdir())
    report = quantize_model(paddle_ner.path, tmp_path / "int8")
    check_report(report, 0.35)  # measured 0.26: the embedding tables dominate
    assert report.task == "token_cls" and report.parity.argmax_agreement is not None
    assert report.preset.name == "avx512_vnni" and not report.per_channel
    out = tmp_path / "int8"
    assert (out / "model.onnx").is_file() and (out / "vocab.txt").is_file()
    assert not list(out.glob("*.pdparams"))
    predictor = ernie_deploy.load(out)
    results = predictor.predict(TEXTS)
    assert all(isinstance(r, TokenClsResult) for r in results)
    # the source directory gained nothing (no shape-inferred copy left beside it)
    assert sorted(p.name for p in paddle_ner.path.iterdir()) == before


def test_batch_drift_is_measured_and_explained(paddle_cls: RefModel, tmp_path: Path) -> None:
    """Dynamic int8 scales activations over the whole batch, so a row's logits move when it runs
    with the others; the fp32 graph's do not (float rounding aside). The report says so."""
    from ernie_deploy.convert.verify import DEFAULT_TOLERANCE, batch_drift
    from ernie_deploy.runtime.model_dir import find_model

    report = quantize_model(paddle_cls.path, tmp_path / "int8")
    features = qr.probe_batch(find_model(paddle_cls.path), "seq_cls")
    fp32 = batch_drift(paddle_cls.path / "model.onnx", features)
    int8 = batch_drift(tmp_path / "int8" / "model.onnx", features)
    assert fp32 <= 1e-5 < DEFAULT_TOLERANCE < int8
    assert report.batch_drift == pytest.approx(int8)
    line = next(x for x in report.lines() if "batch drift" in x)
    assert "depend on which texts share its batch" in line
    assert "batch mates" not in qr.drift_line(fp32) and "share" not in qr.drift_line(fp32)
    assert report.to_dict()["batch_drift"] == report.batch_drift
    assert report.to_dict()["activation_scales"] == "per-batch"


def test_row_scales_make_each_text_independent_of_its_batch(
    paddle_cls: RefModel, tmp_path: Path
) -> None:
    """row_scales: one activation scale per token row. The rows' outputs stop moving with the
    batch, and they match a numpy reference of the per-row rule on the first quantised MatMul."""
    from ernie_deploy.convert.row_scales import PREFIX
    from ernie_deploy.convert.verify import DEFAULT_TOLERANCE, run_onnx
    from ernie_deploy.runtime.model_dir import find_model

    # 7-bit weights: u8 x s8 kernels without VNNI (AVX2, this CI) add pairs of products in
    # 16 bits, which full-range weights can saturate; then no reference would match exactly
    per_batch = quantize_model(paddle_cls.path, tmp_path / "batch", reduce_range=True)
    rows = quantize_model(paddle_cls.path, tmp_path / "rows", row_scales=True, reduce_range=True)
    assert rows.row_scales is not None and rows.row_scales.rewritten > 0
    assert rows.row_scales.left == 0 and rows.quantized == per_batch.quantized
    assert rows.batch_drift is not None and per_batch.batch_drift is not None
    assert rows.batch_drift <= DEFAULT_TOLERANCE < per_batch.batch_drift
    assert "one scale per row" in rows.lines()[1] and "one scale per batch" in per_batch.lines()[1]
    assert rows.to_dict()["activation_scales"] == "per-row"
    graph = onnx.load(str(tmp_path / "rows" / "model.onnx"))
    kinds = {n.op_type for n in graph.graph.node}
    assert "DynamicQuantizeLinear" not in kinds and "MatMulInteger" in kinds
    added = [n.op_type for n in graph.graph.node if PREFIX in n.name + "".join(n.output)]
    # six nodes per quantiser (+ the two Identity outputs ORT drops), no shape arithmetic
    assert sorted(set(added)) == [
        "Abs",
        "Div",
        "Identity",
        "Max",
        "Mul",
        "QuantizeLinear",
        "ReduceMax",
    ]
    assert added.count("QuantizeLinear") == rows.row_scales.rewritten
    # the per-row rule, by hand, on one MatMul: expose its float output and its input
    mmi = next(n for n in graph.graph.node if n.op_type == "MatMulInteger")
    users = {i: n for n in graph.graph.node for i in n.input}
    cast = users[mmi.output[0]]
    scaled = users[users[cast.output[0]].output[0]]  # the row-scale Mul after the scale Mul
    source = next(n for n in graph.graph.node if mmi.input[0] in n.output)  # the uint8 Cast
    x_name = _row_input(graph, source)
    inits = {t.name: t for t in graph.graph.initializer}
    from onnx import helper, numpy_helper

    w = numpy_helper.to_array(inits[mmi.input[1]]).astype(np.float64)
    w_zp = numpy_helper.to_array(inits[mmi.input[3]]).astype(np.float64)
    scale_mul = users[cast.output[0]]
    w_scale = next(
        numpy_helper.to_array(inits[i]) for i in _scale_inputs(graph, scale_mul) if i in inits
    )
    graph.graph.output.extend(
        [
            helper.make_empty_tensor_value_info(scaled.output[0]),
            helper.make_empty_tensor_value_info(x_name),
        ]
    )
    probe = tmp_path / "probe.onnx"
    onnx.save(graph, str(probe))
    features = qr.probe_batch(find_model(paddle_cls.path), "seq_cls")
    _, out = run_onnx(probe, features)
    x = out[x_name]  # float32, as the graph rounds it (half steps must fall the same way)
    step = np.maximum(np.abs(x).max(-1, keepdims=True) / np.float32(127), np.float32(1e-12))
    q = np.clip(np.rint(x / step), -127, 127).astype(np.float64)
    want = (q @ (w - w_zp)) * step.astype(np.float64) * float(w_scale)
    assert np.abs(out[scaled.output[0]] - want).max() <= 1e-4 * max(1.0, np.abs(want).max())


def _row_input(graph: Any, cast: Any) -> str:
    """The float tensor a row quantiser reads (the Abs node's input in its chain)."""
    prefix = cast.output[0] + "/"
    return next(
        n.input[0]
        for n in graph.graph.node
        if n.op_type == "Abs" and n.output[0].startswith(prefix)
    )


def _scale_inputs(graph: Any, mul: Any) -> list[str]:
    """Initializer names behind a scale Mul's scale input (the weight scale)."""
    producers = {o: n for n in graph.graph.node for o in n.output}
    names = []
    for i in mul.input:
        node = producers.get(i)
        names += list(node.input) if node is not None else [i]
    return names


def test_paddle_cls_and_bert_embed(
    paddle_cls: RefModel, bert_embed: RefModel, tmp_path: Path
) -> None:
    report = quantize_model(paddle_cls.path, tmp_path / "cls")
    check_report(report, 0.35)
    results = ernie_deploy.load(tmp_path / "cls").predict(TEXTS)
    assert all(isinstance(r, SeqClsResult) and r.label in paddle_cls.labels for r in results)

    report = quantize_model(bert_embed.path, tmp_path / "embed")
    check_report(report, 0.7, labelled=False)  # a small vocab: the tables weigh less
    assert report.parity.argmax_agreement is None
    assert report.cosine is not None and 0.9 < report.cosine <= 1.0 + 1e-6
    assert any("cosine" in line for line in report.lines())
    vectors = ernie_deploy.load(tmp_path / "embed").predict(TEXTS)
    assert len(vectors) == len(TEXTS)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_each_preset_loads(paddle_cls: RefModel, tmp_path: Path, preset: str) -> None:
    report = quantize_model(paddle_cls.path, tmp_path / preset, preset=preset)
    assert report.preset.name == preset
    weights = weight_inits(tmp_path / preset / "model.onnx")
    expected = np.uint8 if PRESETS[preset].weights == "uint8" else np.int8
    assert weights and all(w.dtype == expected for w in weights)
    results = ernie_deploy.load(tmp_path / preset).predict(TEXTS)
    assert len(results) == len(TEXTS)


def test_per_channel_reduce_range_and_op_types(paddle_cls: RefModel, tmp_path: Path) -> None:
    report = quantize_model(paddle_cls.path, tmp_path / "pc", per_channel=True)
    assert report.per_channel
    graph = onnx.load(str(tmp_path / "pc" / "model.onnx"))
    inits = {t.name: t for t in graph.graph.initializer}
    zero_points = [
        inits[n.input[3]] for n in graph.graph.node if n.op_type == "MatMulInteger"
    ]  # per-channel: one weight zero point per output column
    assert zero_points and all(len(z.dims) == 1 and z.dims[0] > 1 for z in zero_points)
    ernie_deploy.load(tmp_path / "pc").predict(TEXTS)

    report = quantize_model(paddle_cls.path, tmp_path / "rr", reduce_range=True)
    assert report.reduce_range
    assert (
        max(int(np.abs(w.astype(np.int32)).max()) for w in weight_inits(report.out / "model.onnx"))
        <= 64
    )

    report = quantize_model(paddle_cls.path, tmp_path / "mm", op_types=["MatMul"])
    assert dict(report.quantized) == {"MatMul": 14}
    assert report.ratio > 0.9  # the embedding tables stay fp32

    with pytest.raises(ConfigError, match="choose from .*Gather"):
        quantize_model(paddle_cls.path, tmp_path / "x", op_types=["Softmax"])
    with pytest.raises(ConfigError, match="Unknown preset .* avx512_vnni"):
        quantize_model(paddle_cls.path, tmp_path / "x", preset="avx9000")
    with pytest.raises(ConfigError, match="nothing was quantised"):
        quantize_model(paddle_cls.path, tmp_path / "x", op_types=["Conv"])
    assert not (tmp_path / "x").exists()


def test_keep_fp32_leaves_the_named_nodes_as_they_were(
    paddle_cls: RefModel, tmp_path: Path
) -> None:
    source = onnx.load(str(paddle_cls.path / "model.onnx"))
    consts = {t.name for t in source.graph.initializer}
    matmuls = [n for n in source.graph.node if n.op_type == "MatMul" and n.input[1] in consts]
    kept = [matmuls[0].name, matmuls[-1].name]
    report = quantize_model(paddle_cls.path, tmp_path / "kept", op_types=["MatMul"], keep_fp32=kept)
    assert dict(report.quantized) == {"MatMul": len(matmuls) - 2}
    graph = onnx.load(str(tmp_path / "kept" / "model.onnx")).graph
    left = {n.name: n for n in graph.node if n.op_type == "MatMul"}
    weights = {t.name: t for t in graph.initializer}
    for name in kept:  # still a float MatMul on the same fp32 weight
        assert left[name].input[1] == next(n for n in matmuls if n.name == name).input[1]
        assert weights[left[name].input[1]].data_type == onnx.TensorProto.FLOAT
    assert ernie_deploy.load(tmp_path / "kept").predict(TEXTS)

    with pytest.raises(ConfigError, match=r"No node named 'nope' .*\(and 1 more\): name nodes"):
        quantize_model(paddle_cls.path, tmp_path / "x", keep_fp32=["nope", "nada", kept[0]])
    assert not (tmp_path / "x").exists()


def test_output_rules(paddle_cls: RefModel, tmp_path: Path) -> None:
    out = tmp_path / "int8"
    out.mkdir()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        quantize_model(paddle_cls.path, out)
    report = quantize_model(paddle_cls.path, out, overwrite=True)
    assert (out / "model.onnx").is_file() and report.out == out
    with pytest.raises(InputError, match="already quantised"):
        quantize_model(out, tmp_path / "twice")
    copy = tmp_path / "src"
    shutil.copytree(paddle_cls.path, copy)
    with pytest.raises(InputError, match="is also the input"):
        quantize_model(copy, copy, overwrite=True)
    assert (copy / "model.onnx").is_file()


def test_bare_onnx_with_tokenizer_dir(paddle_cls: RefModel, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(paddle_cls.onnx, bare / "tnews.onnx")
    report = quantize_model(
        bare / "tnews.onnx", tmp_path / "int8", tokenizer_dir=paddle_cls.path, task="seq_cls"
    )
    assert report.task == "seq_cls"
    assert (tmp_path / "int8" / "vocab.txt").is_file()
    results = ernie_deploy.load(tmp_path / "int8", task="seq_cls").predict(TEXTS)
    assert len(results) == len(TEXTS)


def test_external_data(
    paddle_cls: RefModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(quantize, "EXTERNAL_DATA_THRESHOLD", 0)
    report = quantize_model(paddle_cls.path, tmp_path / "ext")
    files = sorted(p.name for p in (tmp_path / "ext").iterdir())
    data = [name for name in files if name.startswith("model.onnx") and name != "model.onnx"]
    assert data, files
    assert report.size_after > (tmp_path / "ext" / "model.onnx").stat().st_size
    assert len(ernie_deploy.load(tmp_path / "ext").predict(TEXTS)) == len(TEXTS)


# -- labelled files ---------------------------------------------------------------------------


def test_eval_file_token_cls(lookup_ner: Path, tmp_path: Path) -> None:
    """The gazetteer model's entities are exact: its own predictions are the gold."""
    texts = TEXTS + ["纽约的 Michael Jordan 在 2008 年加入 NBA。"]
    gold = ernie_deploy.load(lookup_ner).predict(texts)
    assert sum(len(r.entities) for r in gold) >= 7
    f = tmp_path / "gold.jsonl"
    lines = [
        json.dumps(
            {
                "text": r.text,
                "entities": [
                    {"start": e.start, "end": e.end, "label": e.label, "text": e.text}
                    for e in r.entities
                ],
            },
            ensure_ascii=False,
        )
        for r in gold
    ]
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = quantize_model(lookup_ner, tmp_path / "int8", eval_file=f)
    ev = report.evaluation
    assert ev is not None and ev.task == "token_cls" and ev.examples == len(texts)
    assert dict(ev.reference) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert set(dict(ev.candidate)) == {"precision", "recall", "f1"}
    assert ev.delta("f1") == dict(ev.candidate)["f1"] - 1.0
    assert 0.0 <= ev.agreement <= 1.0
    assert any("f1" in line for line in report.lines())
    assert report.to_dict()["evaluation"]["delta"]["f1"] == ev.delta("f1")


def test_eval_file_seq_cls(paddle_cls: RefModel, tmp_path: Path) -> None:
    fp32 = ernie_deploy.load(paddle_cls.path).predict(TEXTS)
    f = tmp_path / "gold.tsv"
    f.write_text(
        "text\tlabel\n" + "".join(f"{r.text}\t{r.label}\n" for r in fp32), encoding="utf-8"
    )
    report = quantize_model(paddle_cls.path, tmp_path / "int8", eval_file=f)
    ev = report.evaluation
    assert ev is not None and dict(ev.reference)["accuracy"] == 1.0
    assert 0.0 <= dict(ev.candidate)["accuracy"] <= 1.0
    assert "macro_f1" in dict(ev.candidate)


def test_bad_eval_file_writes_nothing(paddle_ner: RefModel, tmp_path: Path) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text('{"text": "北京", "entities": []}\n{"text": "上海", "label": "LOC"}\n', "utf-8")
    with pytest.raises(InputError, match='line 2 has no "entities"'):
        quantize_model(paddle_ner.path, tmp_path / "int8", eval_file=f)
    assert not (tmp_path / "int8").exists()
    g = tmp_path / "wrong.jsonl"
    g.write_text(
        '{"text": "北京", "entities": [{"start": 0, "end": 2, "label": "CITY"}]}\n', "utf-8"
    )
    with pytest.raises(InputError, match="relabel"):
        quantize_model(paddle_ner.path, tmp_path / "int8", eval_file=g)
    assert not (tmp_path / "int8").exists()
    assert not list(tmp_path.glob(".int8*"))  # no staging directory left behind


def test_fused_graph(bert_ner: RefModel, tmp_path: Path) -> None:
    """Graphs with ORT's fused contrib ops (what `optimize` writes) quantise too."""
    optimizer = pytest.importorskip("onnxruntime.transformers.optimizer")
    fused = tmp_path / "fused"
    shutil.copytree(bert_ner.path, fused)
    model = optimizer.optimize_model(
        str(bert_ner.onnx), model_type="bert", num_heads=2, hidden_size=32, opt_level=0
    )
    model.save_model_to_file(str(fused / "model.onnx"))
    ops = {n.op_type for n in onnx.load(str(fused / "model.onnx")).graph.node}
    assert "SkipLayerNormalization" in ops  # a contrib op ONNX shape inference cannot type
    report = quantize_model(fused, tmp_path / "int8")
    assert dict(report.quantized).get("MatMul", 0) > 0
    assert report.parity.argmax_agreement is not None and report.parity.argmax_agreement > 0.9
    assert len(ernie_deploy.load(tmp_path / "int8").predict(TEXTS)) == len(TEXTS)


def test_a_bundled_models_records_do_not_follow_it(tmp_path: Path) -> None:
    # bundle.json / export_check.npz describe the shipped weights (parity, F1): an int8 copy made
    # from them must not present them as its own.
    from ernie_deploy.runtime.bundled import bundled_path

    src = bundled_path("sentiment-zh")
    assert src is not None and (src / "bundle.json").is_file()
    quantize_model(src, tmp_path / "q")
    names = {p.name for p in (tmp_path / "q").iterdir()}
    assert {"vocab.txt", "ernie_deploy.json", "model.onnx"} <= names
    assert not names & {"bundle.json", "export_check.npz"}
