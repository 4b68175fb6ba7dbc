"""fp16 graph conversion: ORT's bundled float16 converter plus the fixes ERNIE/BERT graphs need.

`convert_to_fp16` runs `onnxruntime.transformers.float16.convert_float_to_float16` (bundled with
onnxruntime: no new dependency) with `keep_io_types=True` (int64 ids in, fp32 outputs out), then
tidies its output:
- paddle2onnx's Cast-to-FLOAT nodes stay fp32 by name (`node_block_list`; with onnxconverter-common
  the graph otherwise fails to load: "Type (tensor(float16)) of output arg ... of node (Cast...)
  does not match expected type (tensor(float))"). "Cast" is never an op type to block: the
  converter loops forever. Unnamed nodes are named first ("" would block every unnamed node).
- the identical Cast nodes it makes when one tensor feeds two blocked nodes are merged (else:
  "two nodes with same node name"), the fp32 -> fp16 -> fp32 round trip it inserts between two
  blocked nodes is removed, and nodes are sorted back into topological order (it appends).
- its warnings and log records are collected into one notice instead of being printed.

Block list: DEFAULT_FP16_BLOCK_OPS = ("Pow", "ReduceMean"), on top of the converter's own list.
Measured on the paddle2onnx ERNIE and torch BERT test graphs with the embedding table scaled up to
push LayerNorm inputs towards fp16's range, run through onnx's numpy reference evaluator (which
computes fp16 ops in fp16, as a plain GPU kernel would):
- nothing blocked: argmax agreement with fp32 falls to 17-24% at x3000 and x10000 (exported
  LayerNorms square x - mean in fp16: past 65504 it is Inf). Pow + ReduceMean in fp32 keep 100%
  at x3000 and 99.3-100% at x10000, where the variance itself nears 65504 (its Add/Sqrt run fp16).
- without the round-trip removal, blocking Pow + ReduceMean still falls to 17-20% at x10000 (the
  squares pass through fp16 between the two), on the CPU provider as well.
- LayerNormalization, SkipLayerNormalization, Softmax: blocking them changed nothing measurable
  (ONNX Runtime's kernels accumulate in fp32) but adds two casts per call, a blocked Softmax keeps
  ORT from fusing attention, and on graphs optimised into contrib ops (which onnx shape inference
  cannot type) a blocked SkipLayerNormalization does not load ("Type parameter (T) of Optype
  (SkipLayerNormalization) bound to different types"). The default converts those graphs fine.
- graphs already fused by graph optimisation have no Pow/ReduceMean left, so the default costs
  nothing there; on unfused graphs it keeps the variance in fp32 at the price of ORT's runtime
  LayerNorm fusion (not measured on a GPU: `fp16_block_ops=()` trades it back).
Unscaled, fp16 vs fp32 max abs diff on the CPU provider: logits 2e-5 to 3e-4, hidden states ~2e-3.

Fuse first (`fuse_and_convert`, what the runtime builds for CUDA): converting the unfused graph
with Pow / ReduceMean blocked puts Casts between ReduceMean and Sub, and ORT's LayerNormFusion
(so SkipLayerNorm and Attention too) then matches nothing: on ner-zh, 0 LayerNorms fused.
ORT's own recipe fuses first, then converts: ORT basic optimisation, the paddle2onnx Attention
rewrite (`convert.fusion`), `optimize_model(model_type="bert", use_gpu=True, opt_level=0)` with
a 1-D mask index (the count of real tokens per row: right padding, as the engine pads; the
fused fp16 attention kernels want it, not a raw 2-D mask), then fp16 with `keep_io_types`.
The fused graph has no Pow / ReduceMean left, so the block list costs no fusion there.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ernie_deploy.errors import ConfigError
from ernie_deploy.runtime.session import DEFAULT_FP16_BLOCK_OPS

_FLOAT, _FLOAT16 = 1, 10  # onnx.TensorProto.FLOAT / FLOAT16
# Ops the transformer fusions write (counted in the fp16 notices, by the GPU check and by
# `optimize`'s report).
FUSED_OPS = (
    "EmbedLayerNormalization",
    "Attention",
    "MultiHeadAttention",
    "SkipLayerNormalization",
    "LayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "SimplifiedLayerNormalization",
    "BiasGelu",
    "FastGelu",
    "Gelu",
)


def fused_counts(model: Any) -> dict[str, int]:
    """How many of each FUSED_OPS op type the graph has (zero counts left out)."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type in FUSED_OPS:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def attention_shape(model_dir: Path) -> tuple[int, int]:
    """(num_heads, hidden_size) from config.json beside the graph, else (0, 0): ORT reads them
    from the graph's Reshape shapes then."""
    try:
        data = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        heads, hidden = data["num_attention_heads"], data["hidden_size"]
    except (OSError, ValueError, KeyError, TypeError):
        return 0, 0
    ok = isinstance(heads, int) and isinstance(hidden, int) and heads > 0 and hidden % heads == 0
    return (heads, hidden) if ok else (0, 0)


def fuse_and_convert(
    source: Path, block_ops: Sequence[str] = DEFAULT_FP16_BLOCK_OPS
) -> tuple[Any, tuple[str, ...]]:
    """ORT's GPU fp16 recipe on the graph at `source`: fuse (see the module docstring), then fp16.

    Returns the fp16 onnx.ModelProto and notices (what fused, what the converter warned about).
    """
    import onnx
    from onnxruntime.transformers.fusion_options import AttentionMaskFormat, FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    from ernie_deploy.convert.fusion import rewrite_attention

    if "Cast" in block_ops:
        raise ConfigError("'Cast' cannot be an fp16 block op (the converter never finishes).")
    with tempfile.TemporaryDirectory(prefix="ernie_deploy_fp16_") as tmp:
        basic = Path(tmp) / "basic.onnx"
        _ort_basic(source, basic)
        model = onnx.load(str(basic))
    _name_nodes(model.graph)
    heads, hidden = attention_shape(source.parent)
    rewrite_attention(model, hidden // heads if heads else None)
    options = FusionOptions("bert")
    options.attention_mask_format = AttentionMaskFormat.MaskIndexEnd
    with _converter_messages() as messages, quiet_fusion_logs():
        fused = optimize_model(
            model,
            model_type="bert",
            num_heads=heads,
            hidden_size=hidden,
            optimization_options=options,
            opt_level=0,
            use_gpu=True,
        )
        counts = fused_counts(fused.model)
        casts = [n.name for n in fused.model.graph.node if n.op_type == "Cast" and _to(n) == _FLOAT]
        fused.convert_float_to_float16(
            use_symbolic_shape_infer=True,
            keep_io_types=True,
            op_block_list=[*_default_block_list(), *block_ops],
            node_block_list=casts,
        )
    model = fused.model
    _merge_duplicates(model.graph)
    _drop_round_trips(model.graph)
    topological_sort(model.graph)
    fused_text = ", ".join(f"{op} {n}" for op, n in sorted(counts.items())) or "nothing"
    notes = [f"fused before fp16: {fused_text}"]
    if messages:
        notes.append(f"the fp16 converter warned {len(messages)}x, first: {messages[0][:200]}")
    return model, tuple(notes)


@contextmanager
def quiet_fusion_logs() -> Iterator[None]:
    """Keep the fusion modules' INFO / WARNING lines ("Model producer not matched" ...) off
    stderr; they import each other as top-level modules, so each logger is named after one."""
    import sys

    where = str(Path(sys.modules["onnxruntime.transformers"].__file__ or "").parent)
    loggers = [
        logging.getLogger(name)
        for name, module in list(sys.modules.items())
        if name.startswith("onnxruntime.transformers")
        or ("." not in name and (getattr(module, "__file__", None) or "").startswith(where))
    ]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


# Quantized ops compute on integers with fp32 scales (an int8 or weight-only export): the
# converter would turn their scale initializers to fp16, which they refuse ("Type
# 'tensor(float16)' of input parameter (..._scale) of operator (DequantizeLinear) ... is
# invalid", seen on an H200 with the int8 e5 heads). They stay fp32, with Casts around them;
# the float ops between them (LayerNorm, attention, GELU) still run in fp16.
QUANTIZED_OPS = (
    "DequantizeLinear",
    "QuantizeLinear",
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul",
    "MatMulNBits",
    "GatherBlockQuantized",
    "QLinearMatMul",
    "QGemm",
    "QAttention",
    "QEmbedLayerNormalization",
    "ConvInteger",
    "QLinearConv",
)


def _default_block_list() -> list[str]:
    from onnxruntime.transformers import float16

    return [*float16.DEFAULT_OP_BLOCK_LIST, *QUANTIZED_OPS]


def _ort_basic(source: Path, target: Path) -> None:
    """ORT's provider-independent (basic) optimisations, written to `target` (weights beside)."""
    from ernie_deploy.runtime.gpu import import_onnxruntime

    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(target)
    opts.log_severity_level = 3
    opts.add_session_config_entry(
        "session.optimized_model_external_initializers_file_name", target.name + ".data"
    )
    # ConstantSharing off, as onnxruntime.transformers does: shared scalars hide patterns.
    ort.InferenceSession(
        str(source),
        opts,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=["ConstantSharing"],
    )


def convert_to_fp16(
    model: Any, block_ops: Sequence[str] = DEFAULT_FP16_BLOCK_OPS, base_dir: Path | None = None
) -> tuple[Any, tuple[str, ...]]:
    """Convert an onnx.ModelProto to fp16 (it is modified); external weights load from base_dir.

    Returns the model and notices summarising what the converter warned about.
    """
    import onnx
    from onnxruntime.transformers import float16

    if "Cast" in block_ops:
        raise ConfigError("'Cast' cannot be an fp16 block op (the converter never finishes).")
    _name_nodes(model.graph)
    # Types for the converter, inferred before the weights load (so under 2 GB); a graph with
    # contrib ops but no com.microsoft opset import cannot be inferred: use the types it has.
    with contextlib.suppress(Exception):
        model = onnx.shape_inference.infer_shapes(model)
    if base_dir is not None:
        onnx.load_external_data_for_model(model, str(base_dir))
    casts = [n.name for n in model.graph.node if n.op_type == "Cast" and _to(n) == _FLOAT]
    with _converter_messages() as messages:
        model = float16.convert_float_to_float16(
            model,
            keep_io_types=True,
            disable_shape_infer=True,
            op_block_list=[*_default_block_list(), *block_ops],
            node_block_list=casts,
        )
    _merge_duplicates(model.graph)
    _drop_round_trips(model.graph)
    topological_sort(model.graph)
    if not messages:
        return model, ()
    return model, (f"the fp16 converter warned {len(messages)}x, first: {messages[0][:200]}",)


@contextmanager
def _converter_messages() -> Iterator[list[str]]:
    """Collect the converter's warnings and log records instead of printing them."""
    messages: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = _Collect(logging.WARNING)
    loggers = [logging.getLogger(n) for n in ("onnxruntime.transformers.float16", "float16")]
    saved = [lg.propagate for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield messages
        messages.extend(str(w.message) for w in caught)
    finally:
        for lg, propagate in zip(loggers, saved):
            lg.removeHandler(handler)
            lg.propagate = propagate


def _to(node: Any) -> int | None:
    return next((int(a.i) for a in node.attribute if a.name == "to"), None)


def _name_nodes(graph: Any) -> None:
    """Name unnamed nodes: the converter blocks nodes by name, and "" would match them all."""
    taken = {n.name for n in graph.node}
    for i, node in enumerate(graph.node):
        if not node.name:
            name = f"{node.op_type}_ed{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def _merge_duplicates(graph: Any) -> None:
    """One tensor feeding two blocked nodes gets two identical Cast nodes: keep one."""
    seen: set[bytes] = set()
    nodes = []
    for node in graph.node:
        if node.op_type == "Cast":
            key = node.SerializeToString()
            if key in seen:
                continue
            seen.add(key)
        nodes.append(node)
    infos, names = [], set()
    for info in graph.value_info:
        if info.name not in names:
            names.add(info.name)
            infos.append(info)
    _replace(graph.node, nodes)
    _replace(graph.value_info, infos)


def _drop_round_trips(graph: Any) -> None:
    """Between two blocked nodes the converter casts fp32 -> fp16 -> fp32: feed the fp32 value."""
    producer = {out: node for node in graph.node for out in node.output}
    rewire: dict[str, str] = {}
    for node in graph.node:
        parent = producer.get(node.input[0]) if node.op_type == "Cast" and node.input else None
        if (
            parent is not None
            and _to(node) == _FLOAT
            and node.name.endswith("_cast_to_fp32_node")
            and parent.op_type == "Cast"
            and _to(parent) == _FLOAT16
            and parent.name.endswith("_cast_to_fp16_node")
        ):
            rewire[node.output[0]] = parent.input[0]
    if not rewire:
        return
    kept = [n for n in graph.node if not (n.op_type == "Cast" and n.output[0] in rewire)]
    for node in kept:
        for i, name in enumerate(node.input):
            node.input[i] = rewire.get(name, name)
    used = {name for node in kept for name in node.input} | {o.name for o in graph.output}
    kept = [
        n
        for n in kept
        if not n.name.endswith("_cast_to_fp16_node") or any(o in used for o in n.output)
    ]
    produced = {out for node in kept for out in node.output}
    infos = [v for v in graph.value_info if v.name in produced or v.name not in producer]
    _replace(graph.node, kept)
    _replace(graph.value_info, infos)


def topological_sort(graph: Any) -> None:
    """Order nodes after the producers of their inputs (subgraph reads included), keeping the
    order otherwise; a graph with a cycle is left as it is for the checker to report."""
    nodes = list(graph.node)
    producer = {out: i for i, node in enumerate(nodes) for out in node.output if out}
    children: list[list[int]] = [[] for _ in nodes]
    pending = [0] * len(nodes)
    for i, node in enumerate(nodes):
        for parent in {producer[x] for x in _needs(node) if x in producer and producer[x] != i}:
            children[parent].append(i)
            pending[i] += 1
    ready = [i for i, count in enumerate(pending) if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for child in children[i]:
            pending[child] -= 1
            if pending[child] == 0:
                heapq.heappush(ready, child)
    if len(order) == len(nodes):  # else a cycle: leave the order to ONNX Runtime
        _replace(graph.node, [nodes[i] for i in order])


def _needs(node: Any) -> set[str]:
    """A node's inputs plus the outer-scope names its subgraphs (If/Loop/Scan bodies) read."""
    names = set(node.input)
    for attr in node.attribute:
        for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
            inner = {o for n in sub.node for o in n.output}
            inner |= {i.name for i in sub.input} | {t.name for t in sub.initializer}
            names |= {x for n in sub.node for x in _needs(n)} - inner
    return names


def _replace(field: Any, items: list[Any]) -> None:
    copies = [type(item)() for item in items]
    for copy, item in zip(copies, items):
        copy.CopyFrom(item)
    del field[:]
    field.extend(copies)
