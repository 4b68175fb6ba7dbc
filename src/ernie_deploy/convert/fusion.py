"""Graph rewrite that lets ONNX Runtime's Attention fusion match paddle2onnx ERNIE attention blocks.

ORT's `fusion_attention` matches the Hugging Face BERT form of self-attention:

    MatMul(q, k^T) -> Div/Mul(scale) -> Add(mask) -> Softmax -> MatMul(., v)
    mask = Mul(Sub(1, Cast(Unsqueeze(Unsqueeze(mask_2d)))), -10000)

paddle2onnx writes ERNIE attention differently, so the stock optimiser fuses LayerNorm and Gelu
but not Attention ("failed to match qk path"):

    MatMul(Mul(q, 1/sqrt(d)), k^T) -> Add(mask) -> Softmax -> MatMul(., v)
    mask = Unsqueeze(Cast(Equal(input_ids, pad)) * -10000 [+ 0], axes=[1, 2])

`rewrite_attention` changes the graph, in place, into the matched form without changing what it
computes or which inputs it takes:

1. the q scaling moves after the QK MatMul: MatMul(q * s, k^T) -> Div(MatMul(q, k^T), 1 / s), a
   Div as in HF BERT (exact for head sizes 16 / 64 / 256, a last-bit rounding change otherwise),
   only where s is the 1/sqrt(head size) that the fused Attention op assumes;
2. the additive mask is rebuilt from the same Equal(input_ids, pad) node in the HF form, with a
   2-D int mask Cast(Not(Equal(input_ids, pad))) inside the graph: no attention_mask input is
   added, so the graph still takes only what the user exported (input_ids, token_type_ids).

Blocks that do not have this shape (torch-exported BERT / XLM-R already do) are left as they are.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ernie_deploy.runtime.fp16_graph import topological_sort

_PREFIX = "ernie_deploy_fusion"
_FLOAT = TensorProto.FLOAT


@dataclass(frozen=True)
class RewriteReport:
    """What `rewrite_attention` changed.

    Args:
        attention_blocks: Softmax(Add(MatMul(q, k^T), mask)) blocks found.
        scales_moved: blocks whose q scaling now follows the QK MatMul.
        masks_rebuilt: blocks whose additive mask is now built in the Hugging Face form.
        pad_id: the padding id the mask is derived from (None when no mask was rebuilt).
        notes: blocks left as they were, and why.
    """

    attention_blocks: int = 0
    scales_moved: int = 0
    masks_rebuilt: int = 0
    pad_id: int | None = None
    notes: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.scales_moved or self.masks_rebuilt)


class _Graph:
    """Producer / consumer lookups and constant values for one onnx GraphProto."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.graph = model.graph
        self.inits = {t.name: t for t in self.graph.initializer}
        self.inputs = {i.name for i in self.graph.input} - set(self.inits)
        self.producer = {out: n for n in self.graph.node for out in n.output}
        self.opset = next(
            (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13
        )
        self._names = {n.name for n in self.graph.node} | set(self.producer) | set(self.inits)

    def const(self, name: str) -> np.ndarray | None:
        """The value of an initializer or Constant node output, else None."""
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
        return None

    def scalar(self, name: str) -> float | None:
        value = self.const(name)
        if value is None or value.size != 1:
            return None
        return float(value.reshape(()))

    def parent(self, name: str) -> onnx.NodeProto | None:
        """The node producing `name`, looking through Identity nodes."""
        node = self.producer.get(name)
        while node is not None and node.op_type == "Identity":
            node = self.producer.get(node.input[0])
        return node

    def split_const(self, node: onnx.NodeProto) -> tuple[str, float] | None:
        """(variable input, scalar constant) of a binary node with one scalar constant input."""
        if len(node.input) != 2:
            return None
        for i in (0, 1):
            value = self.scalar(node.input[i])
            if value is not None and self.const(node.input[1 - i]) is None:
                return node.input[1 - i], value
        return None

    def fresh(self, stem: str) -> str:
        name, i = f"{_PREFIX}/{stem}", 0
        while name in self._names:
            i += 1
            name = f"{_PREFIX}/{stem}_{i}"
        self._names.add(name)
        return name

    def add_const(self, stem: str, value: np.ndarray) -> str:
        name = self.fresh(stem)
        tensor = numpy_helper.from_array(value, name)
        self.graph.initializer.append(tensor)
        self.inits[name] = tensor
        return name

    def add_node(self, op: str, inputs: list[str], stem: str, **attrs: Any) -> str:
        out = self.fresh(stem)
        node = helper.make_node(op, inputs, [out], name=self.fresh(f"{stem}_node"), **attrs)
        self.graph.node.append(node)
        self.producer[out] = node
        return out


@dataclass(frozen=True)
class _Block:
    softmax: onnx.NodeProto
    add: onnx.NodeProto
    scores_index: int  # which input of `add` carries the QK scores (the other is the mask)
    matmul: onnx.NodeProto


def _blocks(g: _Graph) -> Iterator[_Block]:
    for node in list(g.graph.node):
        if node.op_type != "Softmax":
            continue
        add = g.parent(node.input[0])
        if add is None or add.op_type != "Add" or len(add.input) != 2:
            continue
        for i in (0, 1):
            matmul = g.parent(add.input[i])
            if matmul is not None and matmul.op_type == "MatMul":
                yield _Block(node, add, i, matmul)
                break


def _head_size(g: _Graph, q: str) -> int | None:
    """H from q = Transpose(Reshape(x, [0, 0, N, H]))."""
    transpose = g.parent(q)
    if transpose is None or transpose.op_type != "Transpose":
        return None
    reshape = g.parent(transpose.input[0])
    if reshape is None or reshape.op_type != "Reshape":
        return None
    shape = g.const(reshape.input[1])
    if shape is None or shape.shape != (4,) or shape[3] <= 0:
        return None
    return int(shape[3])


def _move_scale(g: _Graph, block: _Block, head_size: int | None) -> str | None:
    """MatMul(q * s, k^T) -> MatMul(q, k^T) * s; returns None when done, else why not."""
    scaled = g.parent(block.matmul.input[0])
    if scaled is not None and scaled.op_type == "Add":  # paddle's scale op: x * s + 0
        parts = g.split_const(scaled)
        if parts is None or parts[1] != 0.0:
            return "q path has an Add that is not + 0"
        scaled = g.parent(parts[0])
    if scaled is None or scaled.op_type not in ("Mul", "Div"):
        return None  # no scaling before the MatMul: nothing to move (HF form already)
    parts = g.split_const(scaled)
    if parts is None:
        return f"q is scaled by a non-constant {scaled.op_type}"
    q, value = parts
    if scaled.op_type == "Div" and (scaled.input[0] != q or value == 0.0):
        return "q divides a constant instead of being divided by one"
    factor = value if scaled.op_type == "Mul" else 1.0 / value
    size = head_size or _head_size(g, q)
    if size is None:
        return "cannot read the head size to check the q scale"
    if not math.isclose(factor, 1.0 / math.sqrt(size), rel_tol=1e-5):
        return f"q scale {factor:g} is not 1/sqrt(head size {size}), which Attention assumes"
    # A Div, as in HF BERT: ORT takes the first Mul parent of the Add for the mask's Mul.
    if scaled.op_type == "Div":
        divisor = scaled.input[1]
    else:
        divisor = g.add_const("qk_divisor", np.array(1.0 / value, dtype=np.float32))
    block.matmul.input[0] = q
    out = g.add_node("Div", [block.matmul.output[0], divisor], "qk_scaled")
    block.add.input[block.scores_index] = out
    return None


@dataclass(frozen=True)
class _PaddleMask:
    equal_out: str  # Equal(input_ids, pad) -> bool [B, T]
    pad_id: int
    fill: float  # the negative value added at padded positions (-10000)


def _match_paddle_mask(g: _Graph, mask: str) -> _PaddleMask | None:
    """Match Unsqueeze(Cast(Equal(ids, pad)) * fill [+ 0], [1, 2]) in any op order, else None."""
    unsqueezes: list[list[int]] = []
    fills: list[float] = []
    float_cast = False
    name = mask
    while True:
        node = g.parent(name)
        if node is None:
            return None
        if node.op_type == "Unsqueeze":
            axes = _unsqueeze_axes(g, node)
            if axes is None:
                return None
            unsqueezes.append(axes)
            name = node.input[0]
        elif node.op_type in ("Mul", "Add"):
            parts = g.split_const(node)
            if parts is None:
                return None
            name, value = parts
            if node.op_type == "Mul":
                fills.append(value)
            elif value != 0.0:
                return None
        elif node.op_type == "Cast":
            if float_cast or _attr(node, "to") != _FLOAT:
                return None
            float_cast = True
            name = node.input[0]
        elif node.op_type == "Equal":
            break
        else:
            return None
    ids, pad = _equal_input(g, node)
    fill = math.prod(fills) if fills else 0.0
    if ids is None or pad is None or not float_cast or len(fills) != 1 or not fill < 0:
        return None
    if not _adds_axes_1_2(list(reversed(unsqueezes))):
        return None
    return _PaddleMask(node.output[0], pad, fill)


def _equal_input(g: _Graph, equal: onnx.NodeProto) -> tuple[str | None, int | None]:
    """(graph input, scalar integer constant) compared by an Equal node."""
    for i in (0, 1):
        value = g.const(equal.input[i])
        if value is not None and value.size == 1 and np.issubdtype(value.dtype, np.integer):
            other = equal.input[1 - i]
            cast = g.parent(other)
            if cast is not None and cast.op_type == "Cast" and cast.input[0] in g.inputs:
                other = cast.input[0]  # int32 <-> int64 ids: equality is unchanged
            if other in g.inputs:
                return other, int(value.reshape(()))
    return None, None


def _unsqueeze_axes(g: _Graph, node: onnx.NodeProto) -> list[int] | None:
    if len(node.input) > 1:
        value = g.const(node.input[1])
        return None if value is None else [int(a) for a in value.ravel()]
    axes = _attr(node, "axes")
    return list(axes) if isinstance(axes, list) else None


def _adds_axes_1_2(steps: list[list[int]]) -> bool:
    """Do these Unsqueeze steps turn [B, T] into [B, 1, 1, T]?"""
    dims: list[str] = ["B", "T"]
    for axes in steps:
        rank = len(dims) + len(axes)
        for axis in sorted(a + rank if a < 0 else a for a in axes):
            if not 0 <= axis <= len(dims):
                return False
            dims.insert(axis, "1")
    return dims == ["B", "1", "1", "T"]


def _attr(node: onnx.NodeProto, name: str) -> object:
    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return None


def _hf_mask(g: _Graph, paddle: _PaddleMask) -> str:
    """Build Mul(Sub(1, Cast(Unsqueeze(Unsqueeze(Cast(Not(Equal)))))), fill): ORT's mask path."""
    keep = g.add_node("Not", [paddle.equal_out], "not_pad")
    mask_2d = g.add_node("Cast", [keep], "attention_mask_2d", to=TensorProto.INT64)
    expanded = mask_2d
    for axis in (1, 2):
        if g.opset >= 13:
            axes = g.add_const(f"unsqueeze_axes_{axis}", np.array([axis], dtype=np.int64))
            expanded = g.add_node("Unsqueeze", [expanded, axes], f"mask_unsqueeze_{axis}")
        else:
            expanded = g.add_node("Unsqueeze", [expanded], f"mask_unsqueeze_{axis}", axes=[axis])
    as_float = g.add_node("Cast", [expanded], "mask_float", to=_FLOAT)
    one = g.add_const("one", np.array(1.0, dtype=np.float32))
    padded = g.add_node("Sub", [one, as_float], "mask_padded")
    fill = g.add_const("mask_fill", np.array(paddle.fill, dtype=np.float32))
    return g.add_node("Mul", [padded, fill], "extended_attention_mask")


def rewrite_attention(model: onnx.ModelProto, head_size: int | None = None) -> RewriteReport:
    """Rewrite paddle2onnx attention blocks, in place, into the form ORT's Attention fusion matches.

    Args:
        model: the graph; changed in place (nodes added, rewired, dead nodes removed).
        head_size: attention head size (hidden_size / num_heads) when known from config.json;
            None reads it from the q Reshape's constant shape.

    Returns what changed; a graph without paddle-style blocks comes back unchanged.
    """
    g = _Graph(model)
    blocks = list(_blocks(g))
    notes: list[str] = []
    moved = rebuilt = 0
    pad_id: int | None = None
    masks: dict[tuple[str, float], str] = {}
    for block in blocks:
        before = block.matmul.input[0]
        why = _move_scale(g, block, head_size)
        if why is not None:
            notes.append(f"{block.softmax.name}: scale left in place ({why})")
        elif block.matmul.input[0] != before:
            moved += 1
        mask_index = 1 - block.scores_index
        paddle = _match_paddle_mask(g, block.add.input[mask_index])
        if paddle is None:
            continue
        key = (paddle.equal_out, paddle.fill)
        if key not in masks:
            masks[key] = _hf_mask(g, paddle)
        block.add.input[mask_index] = masks[key]
        pad_id = paddle.pad_id
        rebuilt += 1
    if moved or rebuilt:
        _prune(model.graph)
        topological_sort(model.graph)
    return RewriteReport(len(blocks), moved, rebuilt, pad_id, tuple(notes))


def _subgraph_names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name read inside subgraphs (If / Loop bodies may read outer-scope names)."""
    names: set[str] = set()
    for node in graph.node:
        for attr in node.attribute:
            subs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
            for sub in subs:
                names.update(i for n in sub.node for i in n.input)
                names |= _subgraph_names(sub)
    return names


def _prune(graph: onnx.GraphProto) -> None:
    """Remove nodes whose outputs nothing reads, then initializers nothing reads."""
    keep = {o.name for o in graph.output} | _subgraph_names(graph)
    nodes = list(graph.node)
    while True:
        used = keep | {i for n in nodes for i in n.input}
        live = [n for n in nodes if any(o in used for o in n.output if o)]
        if len(live) == len(nodes):
            break
        nodes = live
    # an initializer that is also a graph input is an overridable default: keep it
    used = keep | {i for n in nodes for i in n.input} | {i.name for i in graph.input}
    del graph.node[:]
    graph.node.extend(nodes)
    stale = [i for i, t in enumerate(graph.initializer) if t.name not in used]
    for i in reversed(stale):  # by index: no copies of the (large) weights
        del graph.initializer[i]
