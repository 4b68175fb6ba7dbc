"""fp16: the capability gate, conversion of exported graphs, the cache, the parity fallback (CPU only)."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ernie_deploy
from ernie_deploy import errors
from ernie_deploy.runtime import fp16, fp16_graph
from ernie_deploy.runtime.session import (
    DEFAULT_FP16_BLOCK_OPS,
    FP16_CPU_NOTICE,
    Fp16FallbackWarning,
    RuntimeConfig,
    input_specs,
    load_model,
)
from tests._models import RefModel

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"


# ---------------------------------------------------------------------------------------------
# tiny graphs
# ---------------------------------------------------------------------------------------------


def _save(path: Path, nodes: list[Any], inits: dict[str, np.ndarray], out_dims: list[Any]) -> Path:
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, out_dims)],
        [numpy_helper.from_array(value, name) for name, value in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def tagger(path: Path, seed: int = 0) -> Path:
    """Embedding -> LayerNorm written out as exported graphs do (Pow, ReduceMean) -> 5 logits.

    Nodes are unnamed on purpose: the converter blocks Cast nodes by name.
    """
    rng = np.random.default_rng(seed)
    f32 = np.float32
    inits = {
        "emb": rng.normal(0, 1, (100, 16)).astype(f32),
        "two": np.array(2.0, f32),
        "eps": np.array(1e-5, f32),
        "gamma": rng.uniform(0.5, 1.5, 16).astype(f32),
        "beta": rng.normal(0, 0.1, 16).astype(f32),
        "w": rng.normal(0, 1, (16, 5)).astype(f32),
        "b": rng.normal(0, 0.1, 5).astype(f32),
    }
    n = helper.make_node
    nodes = [
        n("Gather", ["emb", "input_ids"], ["x"]),
        n("ReduceMean", ["x"], ["mean"], axes=[-1]),
        n("Sub", ["x", "mean"], ["d"]),
        n("Pow", ["d", "two"], ["d2"]),
        n("ReduceMean", ["d2"], ["var"], axes=[-1]),
        n("Add", ["var", "eps"], ["var_eps"]),
        n("Sqrt", ["var_eps"], ["std"]),
        n("Div", ["d", "std"], ["normed"]),
        n("Mul", ["normed", "gamma"], ["scaled"]),
        n("Add", ["scaled", "beta"], ["h"]),
        n("MatMul", ["h", "w"], ["hw"]),
        n("Add", ["hw", "b"], ["logits"]),
    ]
    return _save(path, nodes, inits, ["batch", "seq", 5])


def overflow(path: Path) -> Path:
    """ids -> float -> x300 -> x300: past 65504 in fp16 (Inf), then Inf - Inf = NaN.

    The factors are activations times a small constant (the converter clips constant
    initializers to fp16's range, so a constant cannot overflow). The CPU provider runs fp16
    arithmetic chains in fp32 internally; Unsqueeze/Concat (native fp16 kernels) make it store
    the product as fp16 before the Sub, as a GPU would all along.
    """
    n = helper.make_node
    nodes = [
        n("Cast", ["input_ids"], ["x"], to=TensorProto.FLOAT, name="ids_to_float"),
        n("Mul", ["x", "k"], ["y"], name="mul1"),
        n("Mul", ["y", "k"], ["z"], name="mul2"),
        n("Unsqueeze", ["z", "axes"], ["z3"], name="unsqueeze"),
        n("Concat", ["z3", "z3"], ["c"], axis=2, name="concat"),
        n("Sub", ["c", "c"], ["logits"], name="sub"),
    ]
    inits = {"k": np.array(300.0, np.float32), "axes": np.array([2], np.int64)}
    return _save(path, nodes, inits, ["batch", "seq", 2])


@pytest.fixture
def on_cpu_as_gpu(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Let the gate treat the CPU provider like CUDA, so the fp16 path runs here."""
    monkeypatch.setattr(fp16, "FP16_PROVIDERS", (CPU, CUDA, TENSORRT))
    return []


def _probe(calls: list[int], capability: tuple[int, int] | None = (8, 0)) -> Any:
    def probe(index: int) -> tuple[int, int] | None:
        calls.append(index)
        return capability

    return probe


def _feeds(seed: int = 1, vocab: int = 100) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, (3, 12))
    ids[1, 9:] = 0
    ids[2, 4:] = 0
    mask = (ids != 0).astype(np.int64)
    positions = np.broadcast_to(np.arange(12), ids.shape)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": np.zeros_like(ids),
        "position_ids": positions,
    }


# ---------------------------------------------------------------------------------------------
# the gate
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", [CUDA, TENSORRT])
@pytest.mark.parametrize("capability", [(7, 0), (7, 5), (8, 0), (8, 6), (9, 0)])
def test_gate_enables_fp16_from_compute_capability_7(
    provider: str, capability: tuple[int, int]
) -> None:
    gate = fp16.fp16_gate(provider, capability)
    assert gate.enabled and gate.notice is None and not gate.warn


def test_gate_keeps_pascal_in_fp32_and_names_the_capability() -> None:
    gate = fp16.fp16_gate(CUDA, (6, 1), "cuda:0")
    assert not gate.enabled and gate.warn
    assert gate.notice == (
        "fp16 needs a GPU of compute capability >= 7.0 (T4, A10, A100, H100); "
        "cuda:0 has 6.1: running fp32."
    )


def test_gate_unknown_capability_runs_fp32_with_a_warning() -> None:
    gate = fp16.fp16_gate(CUDA, None, "cuda:1")
    assert not gate.enabled and gate.warn
    assert gate.notice is not None and "cuda:1" in gate.notice and "running fp32" in gate.notice


def test_gate_on_cpu_keeps_the_guide_notice() -> None:
    assert fp16.fp16_gate(CPU, (9, 0)) == fp16.Fp16Gate(False, FP16_CPU_NOTICE, warn=False)


@pytest.mark.parametrize(
    ("capability", "active"),
    [
        ((6, 1), False),
        (None, False),
        ((7, 0), True),
        ((7, 5), True),
        ((8, 0), True),
        ((9, 0), True),
    ],
)
def test_load_model_asks_the_injected_probe(
    tmp_path: Path,
    on_cpu_as_gpu: list[int],
    capability: tuple[int, int] | None,
    active: bool,
) -> None:
    model_path = tagger(tmp_path / "m" / "model.onnx")
    config = RuntimeConfig(device="cpu", fp16=True, cache_dir=tmp_path / "cache")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_model(model_path, config, capability_probe=_probe(on_cpu_as_gpu, capability))
    assert on_cpu_as_gpu == [0]
    assert model.fp16_active is active
    fallbacks = [w for w in caught if issubclass(w.category, Fp16FallbackWarning)]
    if active:
        assert not fallbacks
        assert any(n.startswith("fp16 active") for n in model.notices)
    else:
        assert len(fallbacks) == 1 and str(fallbacks[0].message) in model.notices
        assert "running fp32" in str(fallbacks[0].message)
        if capability is not None:
            assert "cuda:0 has 6.1" in str(fallbacks[0].message)
        assert not (tmp_path / "cache").exists()  # nothing converted


def test_cpu_session_never_probes_the_gpu(tmp_path: Path) -> None:
    def probe(index: int) -> tuple[int, int]:
        raise AssertionError("probed a GPU for a CPU session")

    model_path = tagger(tmp_path / "model.onnx")
    model = load_model(model_path, RuntimeConfig(device="cpu", fp16=True), capability_probe=probe)
    assert not model.fp16_active and model.notices == (FP16_CPU_NOTICE,)
    assert not (tmp_path / fp16.CACHE_DIRNAME).exists()


# ---------------------------------------------------------------------------------------------
# conversion of exported graphs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["paddle_ner", "paddle_cls", "bert_ner"])
def test_exported_graph_converts_loads_and_matches_fp32(
    fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    ref: RefModel = request.getfixturevalue(fixture)
    fp16_path, _ = fp16.fp16_model_path(ref.onnx, cache_dir=tmp_path)
    converted = onnx.load(str(fp16_path))
    onnx.checker.check_model(converted)  # valid and topologically sorted
    assert [i.type.tensor_type.elem_type for i in converted.graph.input] == [
        TensorProto.INT64
    ] * len(converted.graph.input)
    assert {o.type.tensor_type.elem_type for o in converted.graph.output} == {TensorProto.FLOAT}
    source_casts = {
        n.name
        for n in onnx.load(str(ref.onnx)).graph.node
        if n.op_type == "Cast" and n.attribute[0].i == TensorProto.FLOAT
    }
    kept = {n.name: n.attribute[0].i for n in converted.graph.node if n.name in source_casts}
    assert set(kept.values()) <= {TensorProto.FLOAT}  # paddle2onnx Cast fix (those left)
    fused = fp16_graph.fused_counts(converted)
    print(fixture, fused)
    assert any(t.data_type == TensorProto.FLOAT16 for t in converted.graph.initializer)

    fp32 = load_model(ref.onnx, RuntimeConfig(device="cpu"))
    half = load_model(fp16_path, RuntimeConfig(device="cpu"))
    feeds = _feeds()
    a, b = fp32.run(feeds), half.run(feeds)
    for name in fp32.outputs:
        assert b[name].dtype == np.float32
        assert np.abs(a[name] - b[name]).max() <= 1e-2
        assert (a[name].argmax(-1) == b[name].argmax(-1)).mean() >= 0.98


def test_default_block_list_keeps_the_layernorm_variance_in_fp32(tmp_path: Path) -> None:
    model = onnx.load(str(tagger(tmp_path / "model.onnx")))
    converted, _ = fp16_graph.convert_to_fp16(model)
    onnx.checker.check_model(converted)
    nodes = list(converted.graph.node)
    assert all(n.name for n in nodes)
    producer = {o: n for n in nodes for o in n.output}
    pow_node = next(n for n in nodes if n.op_type == "Pow")
    variance = next(
        n for n in nodes if n.op_type == "ReduceMean" and n.input[0] == pow_node.output[0]
    )
    # No fp32 -> fp16 -> fp32 round trip between Pow and ReduceMean: the squares stay fp32.
    assert variance.input[0] == pow_node.output[0]
    cast_in = producer[pow_node.input[0]]
    assert cast_in.op_type == "Cast" and cast_in.attribute[0].i == TensorProto.FLOAT
    assert DEFAULT_FP16_BLOCK_OPS == ("Pow", "ReduceMean")


def test_duplicate_casts_from_a_shared_input_are_merged(tmp_path: Path) -> None:
    # x feeds ReduceMean and Sub: blocking both makes the converter cast x to fp32 twice.
    model = onnx.load(str(tagger(tmp_path / "model.onnx")))
    converted, _ = fp16_graph.convert_to_fp16(model, ("Pow", "ReduceMean", "Sub"))
    names = [n.name for n in converted.graph.node]
    assert len(names) == len(set(names))
    onnx.checker.check_model(converted)
    import onnxruntime as ort

    session = ort.InferenceSession(converted.SerializeToString(), providers=[CPU])
    assert session.run(None, {"input_ids": _feeds()["input_ids"]})[0].dtype == np.float32


def test_cast_cannot_be_a_block_op() -> None:
    with pytest.raises(errors.ConfigError, match="Cast"):
        RuntimeConfig(fp16_block_ops=("Softmax", "Cast"))
    with pytest.raises(errors.ConfigError, match="between 0 and 1"):
        RuntimeConfig(fp16_min_agreement=1.5)
    assert RuntimeConfig(fp16_block_ops=["Softmax"]).fp16_block_ops == ("Softmax",)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# the cache
# ---------------------------------------------------------------------------------------------


def test_cache_lands_beside_the_model_never_in_cwd_and_is_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    source = tagger(tmp_path / "models" / "ner.onnx")
    first, _ = fp16.fp16_model_path(source)
    assert first.parent == source.parent / ".ernie_deploy_cache"
    assert first.name.startswith("ner.fp16-") and len(first.name) == len("ner.fp16-.onnx") + 16
    assert os.listdir(first.parent) == [first.name]  # no temporary files left
    assert os.listdir(cwd) == []

    def no_conversion(*args: object, **kwargs: object) -> None:
        raise AssertionError("converted twice")

    monkeypatch.setattr(fp16_graph, "convert_to_fp16", no_conversion)
    second, notes = fp16.fp16_model_path(source)
    assert second == first and notes == ()
    # The key covers the block list (and the bytes): another list is another file.
    monkeypatch.undo()
    monkeypatch.chdir(cwd)
    other, _ = fp16.fp16_model_path(source, ("Pow", "ReduceMean", "Softmax"))
    assert other != first and other.parent == first.parent
    assert os.listdir(cwd) == []


def test_cache_dir_setting_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    source = tagger(tmp_path / "m" / "model.onnx")
    path, _ = fp16.fp16_model_path(source, cache_dir=tmp_path / "c")
    assert path.parent == tmp_path / "c"
    assert sorted(os.listdir(source.parent)) == ["model.onnx"]
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(errors.ConfigError, match="writable cache_dir"):
        fp16.fp16_model_path(source, cache_dir=blocker / "sub")


def test_unwritable_model_dir_or_model_in_cwd_uses_the_user_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    user_cache = tmp_path / "home" / ".cache" / "ernie_deploy"
    source = tagger(tmp_path / "readonly" / "model.onnx")
    real = fp16._writable
    monkeypatch.setattr(fp16, "_writable", lambda d: d.name != fp16.CACHE_DIRNAME and real(d))
    path, _ = fp16.fp16_model_path(source)
    assert path.parent == user_cache
    monkeypatch.setattr(fp16, "_writable", real)

    workdir = tmp_path / "work"
    here = tagger(workdir / "other.onnx", seed=3)
    monkeypatch.chdir(workdir)
    path, _ = fp16.fp16_model_path(Path("other.onnx"))
    assert path.parent == user_cache and path.name.startswith("other.fp16-")
    assert os.listdir(workdir) == [here.name]


def test_external_data_and_large_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = onnx.load(str(tagger(tmp_path / "plain.onnx")))
    source = tmp_path / "ext" / "model.onnx"
    source.parent.mkdir()
    onnx.save_model(
        model,
        str(source),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
        size_threshold=0,
    )
    monkeypatch.setattr(fp16, "_PROTO_LIMIT", 0)  # pretend the fp16 graph is over 2 GB
    path, _ = fp16.fp16_model_path(source, cache_dir=tmp_path / "c")
    assert sorted(os.listdir(tmp_path / "c")) == [path.name, f"{path.name}.data"]
    feeds = {"input_ids": _feeds()["input_ids"]}
    a = load_model(source, RuntimeConfig(device="cpu")).run(feeds)["logits"]
    b = load_model(path, RuntimeConfig(device="cpu")).run(feeds)["logits"]
    assert np.abs(a - b).max() <= 1e-2
    # The key covers the external weights too.
    data = source.parent / "model.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 1
    data.write_bytes(bytes(raw))
    assert fp16.fp16_model_path(source, cache_dir=tmp_path / "c")[0] != path


# ---------------------------------------------------------------------------------------------
# parity check and fallback
# ---------------------------------------------------------------------------------------------


def test_nan_in_fp16_falls_back_to_fp32(tmp_path: Path, on_cpu_as_gpu: list[int]) -> None:
    source = overflow(tmp_path / "m" / "model.onnx")
    config = RuntimeConfig(device="cpu", fp16=True, cache_dir=tmp_path / "cache")
    with pytest.warns(Fp16FallbackWarning, match=r"NaN/Inf .*: running fp32 \(keep more op"):
        model = load_model(source, config, capability_probe=_probe(on_cpu_as_gpu))
    assert not model.fp16_active
    assert any("NaN/Inf" in n for n in model.notices)
    feeds = {"input_ids": np.array([[5, 50, 99, 0]])}
    fp32 = load_model(source, RuntimeConfig(device="cpu")).run(feeds)["logits"]
    np.testing.assert_array_equal(model.run(feeds)["logits"], fp32)
    # ... and the fp16 graph really does overflow.
    (converted,) = list((tmp_path / "cache").glob("*.onnx"))
    assert np.isnan(load_model(converted, RuntimeConfig(device="cpu")).run(feeds)["logits"]).any()


def test_low_agreement_falls_back_to_fp32(
    tmp_path: Path, on_cpu_as_gpu: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fp16, "compare_outputs", lambda *a: fp16.ParityReport(0.5, 0.91))
    config = RuntimeConfig(device="cpu", fp16=True, cache_dir=tmp_path / "cache")
    with pytest.warns(Fp16FallbackWarning) as caught:
        model = load_model(tagger(tmp_path / "model.onnx"), config, capability_probe=_probe([]))
    message = str(caught[0].message)
    assert "fp16 agreed with fp32 on only 91.0% of probe argmaxes (< 98%)" in message
    assert ": running fp32 (" in message and message in model.notices
    assert not model.fp16_active


def test_compare_outputs_counts_real_tokens_and_forgives_ties() -> None:
    mask = np.array([[True, True, False], [True, False, False]])
    ref = np.zeros((2, 3, 3), np.float32)
    ref[..., 0] = 5.0  # class 0 wins clearly everywhere ...
    ref[0, 1] = [5.0, 5.01, 0.0]  # ... but (0, 1) is a tie within 1% of the scale
    got = ref.copy()
    got[0, 1] = [5.0, 4.99, 0.0]  # the tie flips: still agreement
    got[1, 2] = [0.0, 9.0, 0.0]  # a padding position flips: not counted
    report = fp16.compare_outputs({"logits": ref}, {"logits": got}, mask)
    assert report.agreement == 1.0 and report.problem is None
    assert report.max_abs_diff == pytest.approx(9.0)
    got[1, 0] = [0.0, 9.0, 0.0]  # a real token flips clearly: 2 of 3 agree
    assert fp16.compare_outputs({"logits": ref}, {"logits": got}, mask).agreement == pytest.approx(
        2 / 3
    )
    got[0, 0, 0] = np.inf
    assert "NaN/Inf" in (fp16.compare_outputs({"logits": ref}, {"logits": got}, mask).problem or "")
    pooled = np.array([[1.0, 3.0], [2.0, 0.0]], np.float32)  # [B, L]: every row counts
    flipped = fp16.compare_outputs({"p": pooled}, {"p": pooled[:, ::-1].copy()}, mask)
    assert flipped.agreement == 0.0


def test_probe_batch_feeds_only_declared_inputs_and_honours_static_dims(tmp_path: Path) -> None:
    import onnxruntime as ort

    source = tagger(tmp_path / "model.onnx")
    model = onnx.load(str(source))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[0].dim_value, dims[1].dim_value = 2, 7
    session = ort.InferenceSession(model.SerializeToString(), providers=[CPU])
    feeds, mask, what = fp16.probe_feeds(session, input_specs(session, source), tmp_path)
    assert "random-id" in what  # static dims: no text probe
    assert list(feeds) == ["input_ids"] and feeds["input_ids"].shape == (2, 7)
    assert mask.shape == (2, 7) and mask[0].all() and not mask[1].all()
    ids = feeds["input_ids"]
    assert ((ids >= 1) & (ids < 100))[mask].all() and (ids[~mask] == 0).all()


# ---------------------------------------------------------------------------------------------
# integration: load_model and load() on the CPU provider standing in for CUDA
# ---------------------------------------------------------------------------------------------


def test_load_model_runs_fp16_and_reports_it(tmp_path: Path, on_cpu_as_gpu: list[int]) -> None:
    source = tagger(tmp_path / "m" / "model.onnx")
    config = RuntimeConfig(device="cpu", fp16=True, cache_dir=tmp_path / "cache")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_model(source, config, capability_probe=_probe(on_cpu_as_gpu))
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]  # converter quiet
    assert model.fp16_active and on_cpu_as_gpu == [0]
    fused, notice = model.notices
    assert fused == "fused before fp16: LayerNormalization 1"  # the exported Pow/ReduceMean form
    assert notice.startswith("fp16 active") and "max abs diff" in notice and "100.0%" in notice
    assert "random-id probe batch (no tokenizer found)" in notice
    feeds = {"input_ids": _feeds()["input_ids"]}
    fp32 = load_model(source, RuntimeConfig(device="cpu")).run(feeds)["logits"]
    assert np.abs(model.run(feeds)["logits"] - fp32).max() <= 1e-2


def test_int8_graph_converts_with_its_quantized_ops_in_fp32(
    tmp_path: Path, on_cpu_as_gpu: list[int]
) -> None:
    # The int8 e5 heads on an H200: the converter made DequantizeLinear's scale fp16, ORT refused
    # the graph (INVALID_GRAPH) and fp16 fell back to fp32. Quantized ops now stay fp32.
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source = tagger(tmp_path / "fp32" / "model.onnx")
    target = tmp_path / "int8" / "model.onnx"
    target.parent.mkdir()
    quantize_dynamic(
        str(source), str(target), op_types_to_quantize=["MatMul", "Gather"],
        per_channel=True, weight_type=QuantType.QInt8,
    )  # fmt: skip
    assert {"DequantizeLinear", "MatMulInteger"} <= {
        n.op_type for n in onnx.load(str(target)).graph.node
    }
    config = RuntimeConfig(device="cpu", fp16=True, cache_dir=tmp_path / "cache")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_model(target, config, capability_probe=_probe(on_cpu_as_gpu))
    assert not [w for w in caught if issubclass(w.category, Fp16FallbackWarning)]
    assert model.fp16_active
    converted = onnx.load(str(next((tmp_path / "cache").rglob("*.fp16-*.onnx"))))
    inits = {i.name: i.data_type for i in converted.graph.initializer}
    for node in converted.graph.node:
        if node.op_type in fp16_graph.QUANTIZED_OPS:
            assert all(inits.get(x, TensorProto.FLOAT) != TensorProto.FLOAT16 for x in node.input)
    assert any(t == TensorProto.FLOAT16 for t in inits.values())  # the rest did convert
    feeds = {"input_ids": _feeds()["input_ids"]}
    int8 = load_model(target, RuntimeConfig(device="cpu")).run(feeds)["logits"]
    assert (model.run(feeds)["logits"].argmax(-1) == int8.argmax(-1)).mean() >= 0.98


def test_predictor_with_fp16_matches_fp32(
    paddle_ner: RefModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = tmp_path / "ner"
    shutil.copytree(paddle_ner.path, model_dir)
    monkeypatch.setattr(fp16, "FP16_PROVIDERS", (CPU,))
    monkeypatch.setattr("ernie_deploy.runtime.device.compute_capability", lambda i: (8, 0))
    half = ernie_deploy.load(model_dir, device="cpu", fp16=True)
    full = ernie_deploy.load(model_dir, device="cpu")
    assert half.model.fp16_active and not full.model.fp16_active
    assert list((model_dir / ".ernie_deploy_cache").glob("model.fp16-*.onnx"))
    texts = ["乔丹在北京打球", "科比去了成都和重庆", "中华人民共和国国务院总理李克强"]

    def spans(predictor: Any) -> list[list[tuple[str, str, int, int]]]:
        return [[(e.text, e.label, e.start, e.end) for e in r.entities] for r in predictor(texts)]

    assert spans(half) == spans(full)
