"""`quantize`: dynamic int8 quantisation of a model directory: presets, op types, the ORT call.

ONNX Runtime's `quantize_dynamic`: weights are quantised offline, activations per batch at run
time (uint8, asymmetric, per tensor), so no calibration data is needed. The presets are
those of `optimum-cli onnxruntime quantize`, set as optimum's `AutoQuantizationConfig` sets
them for dynamic quantisation:

| preset        | for CPUs with                        | weights | reduce_range | kernels             |
| ------------- | ------------------------------------ | ------- | ------------ | ------------------- |
| `arm64`       | ARM64 (NEON / dot-product)           | int8    | no           | u8 x s8             |
| `avx2`        | x86-64 AVX2 without AVX-512          | uint8   | no           | u8 x u8             |
| `avx512`      | AVX-512 without VNNI (Skylake-SP)    | int8    | no           | u8 x s8, VPMADDUBSW |
| `avx512_vnni` | AVX-512 VNNI or AMX (default)        | int8    | no           | u8 x s8, VPDPBUSD   |

All: symmetric weights, uint8 activations, one weight scale per tensor unless per_channel
(off by default, as in optimum-cli). VPMADDUBSW (AVX2 / AVX-512 u8 x s8) adds pairs in 16
bits and can saturate: if `avx512` loses accuracy, try reduce_range=True (7-bit weights).
VNNI and AMX accumulate in 32 bits. Measured on a 2-core AVX-512 VNNI / AMX machine (4-layer,
312-wide BERT, 8 x 64 tokens, noisy): fp32 ~240 ms, int8 weights ~125 ms, uint8 weights
(`avx2`) ~190 ms, per-channel ~10% slower than per-tensor.

Op types: by default all that ORT's dynamic mode handles (`supported_op_types()`): MatMul with
a constant weight (QK^T and attention x V stay fp32, as quantize_dynamic leaves them), Gather
(the embedding tables, uint8 with one scale each: ~73% of an ERNIE's bytes, so this is what
takes a 21 MB model to ~5 MB), Attention and EmbedLayerNormalization (fused graphs), Conv,
LSTM, Transpose. `op_types=("MatMul",)` keeps the embedding tables fp32. `keep_fp32` names
single nodes to leave fp32: in a BERT the feed-forward output MatMuls (their input is GELU's
output, whose per-tensor uint8 rounding costs most) are the usual ones.

No ORT pre-processing (`quant_pre_process`): its symbolic shape inference fails on paddle2onnx
graphs; without that step it quantised the same nodes with the same outputs on the test
models and only removed Identity nodes.

What the quantisation cost (size, agreement with fp32, metric delta) is measured by
`convert.quantize_report`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ernie_deploy.convert.common import TOKENIZER_FILES
from ernie_deploy.convert.outdir import (
    check_loads,
    check_output,
    copy_model_files,
    model_input,
    staged_dir,
)
from ernie_deploy.convert.quantize_report import (
    QuantizeReport,
    evaluate_labelled,
    probe_cosine,
    probe_parity,
    read_eval_file,
)
from ernie_deploy.convert.row_scales import RowScales, to_row_scales
from ernie_deploy.errors import ConfigError, InputError, UnsupportedGraphError, first_line
from ernie_deploy.runtime.checks import read_graph
from ernie_deploy.runtime.model_dir import ModelConfig, ModelFiles, find_model, validate


@dataclass(frozen=True)
class Preset:
    """One row of the preset table (module docstring)."""

    name: str
    weights: str  # "int8" (QInt8) or "uint8" (QUInt8)
    reduce_range: bool
    target: str


PRESETS = {
    p.name: p
    for p in (
        Preset("arm64", "int8", False, "ARM64"),
        Preset("avx2", "uint8", False, "x86-64 AVX2"),
        Preset("avx512", "int8", False, "AVX-512 without VNNI"),
        Preset("avx512_vnni", "int8", False, "AVX-512 VNNI / AMX"),
    )
}
DEFAULT_PRESET = "avx512_vnni"
# Past this many bytes of fp32 weights the int8 graph is written with external data.
EXTERNAL_DATA_THRESHOLD = 2**31 - 2**20
# Ops that show a graph is already quantised (or weight-compressed).
_QUANTIZED_MARKERS = {"DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear", "QGemm"}
# Quantised op written by quantize_dynamic -> the op type it replaced.
_QUANTIZED_FORMS = {
    "MatMulInteger": "MatMul",
    "QAttention": "Attention",
    "QEmbedLayerNormalization": "EmbedLayerNormalization",
    "ConvInteger": "Conv",
    "DynamicQuantizeLSTM": "LSTM",
}


def quantize_model(
    model: str | Path,
    out: str | Path,
    *,
    preset: str = DEFAULT_PRESET,
    per_channel: bool = False,
    reduce_range: bool | None = None,
    op_types: Sequence[str] | None = None,
    keep_fp32: Sequence[str] = (),
    eval_file: str | Path | None = None,
    overwrite: bool = False,
    tokenizer_dir: str | Path | None = None,
    task: str | None = None,
    row_scales: bool = False,
) -> QuantizeReport:
    """Quantise a model to int8 (dynamic) into a new model directory and report the cost.

    Args:
        model: a model directory, or an .onnx file inside one (fp32).
        out: the new model directory: the source's tokenizer / config files plus the int8
            `model.onnx`. It appears whole, or not at all when anything fails.
        preset: "arm64", "avx2", "avx512" or "avx512_vnni" (see the module docstring).
        per_channel: one weight scale per output channel instead of per tensor.
        reduce_range: 7-bit weights; None takes the preset's choice.
        op_types: op types to quantise; None: every type ORT's dynamic mode handles.
        keep_fp32: names of nodes to leave fp32 (each must be in the graph).
        eval_file: a labelled .jsonl / .tsv file (tasks.labelled formats) scored with the
            fp32 and the int8 model through `ernie_deploy.load`.
        overwrite: replace `out` if it exists.
        tokenizer_dir: where the tokenizer is, when not beside the model.
        task: the model's task when its directory does not say (needed for eval_file).
        row_scales: quantise each MatMul's activations with one scale per token row instead of
            one per batch (`convert.row_scales`), so that a text's outputs do not depend on
            the texts batched with it; costs some speed (~1.2x the time on the sentiment head).

    Raises:
        ConfigError: unknown preset or op type, or nothing to quantise.
        InputError: the model is already quantised or fp16, or the eval file is malformed.
        OutputExistsError: `out` exists and `overwrite` is false.
    """
    chosen = _check_preset(preset)
    reduce = chosen.reduce_range if reduce_range is None else bool(reduce_range)
    types = _check_op_types(op_types)
    files = find_model(model, tokenizer_dir)
    source = [model_input(model, files.onnx_path.parent)]
    out = check_output(out, overwrite, source, [tokenizer_dir, eval_file])
    task = validate(ModelConfig(task=task), "the arguments").task or files.config.task
    examples = read_eval_file(eval_file, task, files) if eval_file is not None else None
    graph = _load_graph(files.onnx_path)
    _check_fp32(graph, files.onnx_path)
    keep = _check_keep(graph, keep_fp32, files.onnx_path)
    size_before = _graph_bytes(files.onnx_path, graph)
    with staged_dir(out, overwrite) as stage:
        _copy_files(files, stage)
        target = stage / "model.onnx"
        external = size_before > EXTERNAL_DATA_THRESHOLD
        _quantize(
            files.onnx_path, graph, target, chosen, per_channel, reduce, types, external, keep
        )
        int8_graph = _load_graph(target)
        quantized = _quantized_counts(int8_graph)
        if not quantized:
            raise ConfigError(_nothing_quantized(graph, types, files.onnx_path))
        rows = _row_scales(int8_graph, target) if row_scales else None
        parity, drift = probe_parity(files, target, task)
        parity.require("try another preset, reduce_range=True, or op_types=('MatMul',)")
        check_loads(stage, out, task)
        cosine = probe_cosine(files, stage) if task == "embedding" else None
        evaluation = None
        if examples is not None and eval_file is not None and task is not None:
            evaluation = evaluate_labelled(files, stage, task, examples, Path(eval_file))
        size_after = _graph_bytes(target, int8_graph)
    return QuantizeReport(
        source=files.onnx_path,
        out=out,
        task=task,
        preset=chosen,
        per_channel=per_channel,
        reduce_range=reduce,
        op_types=types,
        quantized=quantized,
        size_before=size_before,
        size_after=size_after,
        parity=parity,
        cosine=cosine,
        evaluation=evaluation,
        batch_drift=drift,
        row_scales=rows,
    )


def _row_scales(int8_graph: Any, target: Path) -> RowScales:
    """Rewrite the written int8 graph to per-row activation scales (external data untouched)."""
    import onnx

    rows = to_row_scales(int8_graph)
    if not rows.rewritten:
        raise ConfigError(
            "row_scales applies to dynamically quantised MatMuls and this graph has none "
            "(its quantised ops are fused Attention, Conv or LSTM, or op_types left MatMul "
            "out): drop row_scales (--row-scales) or quantise MatMul."
        )
    onnx.save(int8_graph, str(target))
    return rows


def _check_preset(preset: str) -> Preset:
    key = str(preset).strip().lower().replace("-", "_").lstrip("_")
    if key not in PRESETS:
        raise ConfigError(f"Unknown preset {preset!r}: use one of {', '.join(PRESETS)}.")
    return PRESETS[key]


def supported_op_types() -> tuple[str, ...]:
    """The op types ONNX Runtime's dynamic quantisation handles (its IntegerOps registry)."""
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    return tuple(IntegerOpsRegistry)


def _check_op_types(op_types: Sequence[str] | None) -> tuple[str, ...]:
    supported = supported_op_types()
    if op_types is None:
        return supported
    asked = tuple(dict.fromkeys(str(t).strip() for t in op_types))
    unknown = [t for t in asked if t not in supported]
    if unknown or not asked:
        raise ConfigError(
            f"Cannot quantise op type(s) {', '.join(unknown) or '(none given)'} dynamically: "
            f"choose from {', '.join(supported)}."
        )
    return asked


def _load_graph(path: Path) -> Any:
    return read_graph(path)


def _external_files(graph: Any) -> set[str]:
    """The external data files the graph's initializers live in (relative paths)."""
    from onnx.external_data_helper import uses_external_data

    found = set()
    for tensor in graph.graph.initializer:
        if uses_external_data(tensor):
            found |= {e.value for e in tensor.external_data if e.key == "location"}
    return found


def _graph_bytes(path: Path, graph: Any) -> int:
    extra = (path.parent / name for name in _external_files(graph))
    return path.stat().st_size + sum(p.stat().st_size for p in extra if p.is_file())


def _check_keep(graph: Any, names: Sequence[str], path: Path) -> tuple[str, ...]:
    keep = tuple(dict.fromkeys(str(n) for n in names))
    present = {n.name for n in graph.graph.node}
    missing = [n for n in keep if n not in present]
    if missing:
        raise ConfigError(
            f"No node named {missing[0]!r} in {path}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + ": name nodes of this graph to keep fp32 (see its node names with Netron or onnx)."
        )
    return keep


def _check_fp32(graph: Any, path: Path) -> None:
    from onnx import TensorProto

    markers = _QUANTIZED_MARKERS | set(_QUANTIZED_FORMS) | {"QLinearMatMul", "MatMulNBits"}
    marks = sorted({n.op_type for n in graph.graph.node} & markers)
    if marks:
        raise InputError(
            f"{path} is already quantised (it has {', '.join(marks)} nodes): pass the fp32 model."
        )
    kinds = Counter(t.data_type for t in graph.graph.initializer)
    if kinds[TensorProto.FLOAT16] > kinds[TensorProto.FLOAT]:
        raise InputError(f"{path} holds fp16 weights: quantise the fp32 model instead.")


def _copy_files(files: ModelFiles, stage: Path) -> None:
    """The source directory's tokenizer / config files, then tokenizer files from tokenizer_dir."""
    copy_model_files(files.onnx_path.parent, stage)
    if files.tokenizer_dir.resolve() == files.onnx_path.parent.resolve():
        return
    for name in TOKENIZER_FILES:
        src = files.tokenizer_dir / name
        if src.is_file() and not (stage / name).exists():
            shutil.copy2(src, stage / name)


def _quantize(
    src: Path,
    graph: Any,
    target: Path,
    preset: Preset,
    per_channel: bool,
    reduce_range: bool,
    op_types: tuple[str, ...],
    external: bool,
    keep: tuple[str, ...] = (),
) -> None:
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    weight_type = QuantType.QInt8 if preset.weights == "int8" else QuantType.QUInt8
    # quantize_dynamic writes a shape-inferred copy beside its input: give it a scratch
    # directory of links, so a read-only model directory works and gains no stray files.
    with tempfile.TemporaryDirectory(prefix="ernie_deploy_quantize_") as tmp:
        scratch = Path(tmp)
        for name in (src.name, *_external_files(graph)):
            _link(src.parent / name, scratch / name)
        try:
            with _quiet_ort_logging():
                quantize_dynamic(
                    scratch / src.name,
                    target,
                    op_types_to_quantize=list(op_types),
                    nodes_to_exclude=list(keep),
                    per_channel=per_channel,
                    reduce_range=reduce_range,
                    weight_type=weight_type,
                    use_external_data_format=external,
                    extra_options={
                        "WeightSymmetric": True,
                        "MatMulConstBOnly": True,
                        # ONNX shape inference cannot type the outputs of fused contrib ops
                        # (ernie-deploy optimize): the graph is fp32, so say so.
                        "DefaultTensorType": TensorProto.FLOAT,
                    },
                )
        except Exception as exc:  # the quantizer raises assorted error types on odd graphs
            raise UnsupportedGraphError(
                f"ONNX Runtime's quantiser failed on {src} ({type(exc).__name__}: "
                f"{first_line(exc, 200)}): "
                "try op_types=('MatMul',) (--op-types MatMul) or check the model loads."
            ) from exc


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(src.resolve(), dst)
    except OSError:  # no symlinks (e.g. Windows without the privilege)
        shutil.copy2(src, dst)


@contextlib.contextmanager
def _quiet_ort_logging() -> Iterator[None]:
    """Keep quantize_dynamic's root-logger advice ("consider pre-processing") off stderr.

    It logs through the root logger, which would also install a stderr handler (basicConfig)
    when none exists; a temporary NullHandler prevents that.
    """
    root = logging.getLogger()
    handler = logging.NullHandler() if not root.handlers else None
    if handler is not None:
        root.addHandler(handler)
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)
        if handler is not None:
            root.removeHandler(handler)


def _quantized_counts(graph: Any) -> tuple[tuple[str, int], ...]:
    from onnx import TensorProto

    counts: Counter[str] = Counter()
    int8 = {
        t.name
        for t in graph.graph.initializer
        if t.data_type in (TensorProto.INT8, TensorProto.UINT8)
    }
    for node in graph.graph.node:
        if node.op_type in _QUANTIZED_FORMS:
            counts[_QUANTIZED_FORMS[node.op_type]] += 1
        elif node.op_type == "Gather" and node.input and node.input[0] in int8:
            counts["Gather"] += 1
    return tuple(sorted(counts.items(), key=lambda kv: -kv[1]))


def _nothing_quantized(graph: Any, op_types: tuple[str, ...], path: Path) -> str:
    present = sorted({n.op_type for n in graph.graph.node} & set(supported_op_types()))
    return (
        f"No {', '.join(op_types)} node with a constant float weight in {path}, so nothing "
        f"was quantised: choose op types among those it has ({', '.join(present) or 'none'})."
    )
