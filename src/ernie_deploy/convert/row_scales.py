"""One activation scale per row (token) instead of per batch, in a dynamic int8 graph.

ONNX Runtime's dynamic quantisation puts a `DynamicQuantizeLinear` before each quantised
MatMul: one uint8 scale and zero point for the whole input tensor, padding rows included. A
text's outputs then depend on which texts share its batch (`verify.batch_drift`: the
sentiment head this package shipped until 2026-12-05 scored 0.892 at batch 32 and 0.8835 at
batch 1). This pass replaces each such quantiser by a per-row symmetric one:

    s = max(|x|, over the last axis) / 127             (one scale per token row)
    q = uint8(clip(round(x / s), -127, 127) + 128)     (zero point 128: ORT's fast u8 kernels)

(computed as x / s, then one per-tensor QuantizeLinear with scale 1 and zero point 128: six
nodes per quantiser and no shape arithmetic; the earlier form, one per-axis QuantizeLinear over
a [rows, width] view, needed thirteen and took the sentiment head 1.07x this one's time at batch
32 and 1.13x at batch 1, RESULTS.md "sentiment_exports")

and multiplies each MatMul's float output by `s` after the weight scale, so the graph stays in
the form ORT fuses (`MatMulIntegerToFloat` with a scalar activation scale of 1; a per-row
scale fed into that fusion would be read wrongly). Rows no longer share anything, so a text
gets the same outputs alone or batched, up to float rounding (a rounding step can still flip
where fp32 noise lands on a half step: ~4e-4 on the sentiment head's logits, no label changed).

A quantiser is rewritten only where every use is the activation input of a MatMulInteger
followed by Cast and the scale Mul (what `quantize_dynamic` writes for MatMul); others (fused
Attention, Conv, LSTM) keep their per-tensor scale and are counted in `left`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PREFIX = "ernie_deploy_row_scale"
CONSTANTS = {  # name suffix -> (onnx TensorProto type name, value)
    "zero_point": ("UINT8", 128),
    "one": ("FLOAT", 1.0),
    "q_max": ("FLOAT", 127.0),
    "tiny": ("FLOAT", 1e-12),  # an all-zero row: any scale gives q = 128 (zero)
}


@dataclass(frozen=True)
class RowScales:
    """What `to_row_scales` did: quantisers now per row, and those left per tensor."""

    rewritten: int
    left: int


def to_row_scales(model: Any) -> RowScales:
    """Rewrite the ModelProto in place (see the module docstring)."""
    from onnx import TensorProto, helper

    graph = model.graph
    users: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    nodes: list[Any] = []
    after: dict[int, Any] = {}  # id of a scale Mul -> the row-scale Mul that follows it
    rewritten = left = 0
    for node in graph.node:
        muls = _scale_muls(node, users) if node.op_type == "DynamicQuantizeLinear" else None
        if muls is None:
            left += node.op_type == "DynamicQuantizeLinear"
            nodes.append(node)
            continue
        x, (q, s, z) = node.input[0], node.output
        row = f"{q}/{PREFIX}"
        nodes += _row_quantiser(helper, TensorProto, x, q, row, opset)
        nodes += [
            helper.make_node("Identity", [f"{PREFIX}/one"], [s], name=f"{row}/scale"),
            helper.make_node("Identity", [f"{PREFIX}/zero_point"], [z], name=f"{row}/zp"),
        ]
        for mul in muls:
            out = mul.output[0]
            mul.output[0] = f"{out}/{PREFIX}/unscaled"
            after[id(mul)] = helper.make_node(
                "Mul", [mul.output[0], row], [out], name=f"{mul.name or out}/{PREFIX}"
            )
        rewritten += 1
    if rewritten:
        graph.initializer.extend(
            helper.make_tensor(f"{PREFIX}/{k}", getattr(TensorProto, t), [], [v])
            for k, (t, v) in CONSTANTS.items()
        )
        ordered = []
        for node in nodes:
            ordered.append(node)
            if id(node) in after:
                ordered.append(after[id(node)])
        del graph.node[:]
        graph.node.extend(ordered)
    return RowScales(rewritten, left)


def _scale_muls(node: Any, users: dict[str, list[Any]]) -> list[Any] | None:
    """The Mul after each MatMulInteger -> Cast that the quantiser feeds, or None when any use
    of its outputs is something else (then it stays per tensor)."""
    q, s, z = node.output
    muls = []
    for user in users.get(q, []):
        if user.op_type != "MatMulInteger" or list(user.input).count(q) != 1 or user.input[0] != q:
            return None
        if len(user.input) < 3 or user.input[2] != z:
            return None
        casts = users.get(user.output[0], [])
        if len(casts) != 1 or casts[0].op_type != "Cast":
            return None
        after_cast = users.get(casts[0].output[0], [])
        if len(after_cast) != 1 or after_cast[0].op_type != "Mul":
            return None
        muls.append(after_cast[0])
    if not muls or any(u.op_type != "Mul" for u in users.get(s, [])):
        return None
    if any(u.op_type != "MatMulInteger" for u in users.get(z, [])):
        return None
    return muls


def _row_quantiser(helper: Any, tp: Any, x: str, q: str, row: str, opset: int) -> list[Any]:
    """Nodes computing the row scale `row` and the uint8 rows `q` of `x`."""
    p = f"{row}/"
    if opset >= 18:  # ReduceMax takes axes as an input from opset 18
        axes = helper.make_node(
            "Constant", [], [p + "axes"], value=helper.make_tensor("axes", tp.INT64, [1], [-1])
        )
        reduce = [axes, helper.make_node("ReduceMax", [p + "abs", p + "axes"], [p + "max"])]
    else:
        reduce = [helper.make_node("ReduceMax", [p + "abs"], [p + "max"], axes=[-1])]
    for n in reduce[-1:]:
        n.attribute.append(helper.make_attribute("keepdims", 1))
    c = f"{PREFIX}/"
    return [
        helper.make_node("Abs", [x], [p + "abs"]),
        *reduce,
        helper.make_node("Div", [p + "max", c + "q_max"], [p + "step"]),
        helper.make_node("Max", [p + "step", c + "tiny"], [row]),
        # |x / row| <= 127, so QuantizeLinear's rounding (half to even) and saturation to
        # [0, 255] give round(x / row) + 128 in [1, 255]: the symmetric rule
        helper.make_node("Div", [x, row], [p + "scaled"]),
        helper.make_node(
            "QuantizeLinear", [p + "scaled", c + "one", c + "zero_point"], [q], name=p + "quantize"
        ),
    ]
