"""An ERNIE-3.0-medium-shaped token classifier written as paddle2onnx writes ERNIE (random weights).

The GPU check needs a model of real size on a machine that has no paddle and no network, so
the graph is written here with onnx.helper in the node pattern paddle2onnx 2.1 emits for
PaddleNLP ERNIE (read off the bundled ner-zh): the mask built from `input_ids == 0`, positions
from CumSum(ones) - ones, LayerNorm as ReduceMean / Pow / Sqrt, q scaled before the QK MatMul,
exact (erf) GELU. So the runtime's fp16 path (Attention rewrite, fusion, conversion) runs on it
as on a real export. Inputs: input_ids, token_type_ids (int64); output: logits [B, T, labels].
Weights: N(0, 0.02) like an initialised ERNIE, seeded; speed and numerics only, no meaning.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


@dataclass(frozen=True)
class Shape:
    layers: int = 6
    hidden: int = 768
    heads: int = 12
    ffn: int = 3072
    vocab: int = 40000
    positions: int = 2048
    labels: int = 7

    def describe(self) -> str:
        return (
            f"{self.layers} layers, hidden {self.hidden}, {self.heads} heads, ffn {self.ffn}, "
            f"vocab {self.vocab}" + (" (ERNIE 3.0 medium's shape)" if self == MEDIUM else "")
        )


MEDIUM = Shape()
TINY = Shape(layers=2, hidden=64, heads=4, ffn=128, vocab=1000, positions=512)


class _Builder:
    def __init__(self, seed: int) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.rng = np.random.default_rng(seed)
        self.count = 0

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}.{self.count}"

    def const(self, value: np.ndarray | float | list[int], stem: str = "c") -> str:
        array = np.asarray(value)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        name = self.name(stem)
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def weight(self, *shape: int, std: float = 0.02, value: float | None = None) -> str:
        if value is not None:
            return self.const(np.full(shape, value, np.float32), "w")
        return self.const((self.rng.standard_normal(shape) * std).astype(np.float32), "w")

    def op(self, op_type: str, inputs: list[str], **attrs: object) -> str:
        out = self.name(op_type)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out + "_n", **attrs))
        return out

    def layer_norm(self, x: str, hidden: int) -> str:
        mean = self.op("ReduceMean", [x], axes=[-1])
        d = self.op("Sub", [x, mean])
        var = self.op("ReduceMean", [self.op("Pow", [d, self.const(2.0)])], axes=[-1])
        std = self.op("Sqrt", [self.op("Add", [var, self.const(1e-12)])])
        normed = self.op("Div", [d, std])
        scaled = self.op("Mul", [normed, self.weight(hidden, value=1.0)])
        return self.op("Add", [scaled, self.weight(hidden, value=0.0)])

    def linear(self, x: str, n_in: int, n_out: int) -> str:
        return self.op(
            "Add", [self.op("MatMul", [x, self.weight(n_in, n_out)]), self.weight(n_out, value=0.0)]
        )


def build(path: Path, shape: Shape = MEDIUM, seed: int = 0) -> Path:
    """Write model.onnx (weights in model.onnx.data), config.json and a vocab.txt into path/."""
    path.mkdir(parents=True, exist_ok=True)
    b = _Builder(seed)
    h, n, size = shape.hidden, shape.heads, shape.hidden // shape.heads
    # mask: Unsqueeze(Cast(Equal(ids, 0)) * -10000 + 0, [1, 2])
    pad = b.op(
        "Cast", [b.op("Equal", ["input_ids", b.const(np.array(0, np.int64))])], to=TensorProto.FLOAT
    )
    mask = b.op(
        "Add", [b.op("Mul", [pad, b.const(np.array([-10000.0], np.float32))]), b.const(0.0)]
    )
    mask = b.op("Unsqueeze", [mask, b.const(np.array([1, 2], np.int64))])
    # embeddings: word + position (CumSum(ones) - ones) + token type, then LayerNorm
    words = b.op("Gather", [b.weight(shape.vocab, h), "input_ids"])
    ones = b.op(
        "Cast",
        [b.op("Expand", [b.const(np.array([1.0], np.float32)), b.op("Shape", ["input_ids"])])],
        to=TensorProto.INT64,
    )
    positions = b.op("Sub", [b.op("CumSum", [ones, b.const(np.array(1, np.int64))]), ones])
    x = b.op("Add", [words, b.op("Gather", [b.weight(shape.positions, h), positions])])
    x = b.op("Add", [x, b.op("Gather", [b.weight(4, h), "token_type_ids"])])
    x = b.layer_norm(x, h)
    heads_shape = b.const(np.array([0, 0, n, size], np.int64))
    merged_shape = b.const(np.array([0, 0, h], np.int64))
    for _ in range(shape.layers):
        q, k, v = (
            b.op(
                "Transpose", [b.op("Reshape", [b.linear(x, h, h), heads_shape])], perm=[0, 2, 1, 3]
            )
            for _ in range(3)
        )
        q = b.op(
            "Add",
            [b.op("Mul", [q, b.const(np.array([1 / math.sqrt(size)], np.float32))]), b.const(0.0)],
        )
        scores = b.op("MatMul", [q, b.op("Transpose", [k], perm=[0, 1, 3, 2])])
        probs = b.op("Softmax", [b.op("Add", [scores, mask])], axis=-1)
        context = b.op("Transpose", [b.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        attended = b.linear(b.op("Reshape", [context, merged_shape]), h, h)
        x = b.layer_norm(b.op("Add", [x, attended]), h)
        up = b.linear(x, h, shape.ffn)
        erf = b.op("Erf", [b.op("Div", [up, b.const(math.sqrt(2.0))])])
        gelu = b.op("Mul", [b.op("Mul", [up, b.op("Add", [erf, b.const(1.0)])]), b.const(0.5)])
        x = b.layer_norm(b.op("Add", [x, b.linear(gelu, shape.ffn, h)]), h)
    logits = b.linear(x, h, shape.labels)
    b.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="logits_n"))
    ids = [
        helper.make_tensor_value_info(i, TensorProto.INT64, ["batch", "seq"])
        for i in ("input_ids", "token_type_ids")
    ]
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", shape.labels])
    graph = helper.make_graph(b.nodes, "ernie_medium_p2o_style", ids, [out], b.inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="ernie-deploy gpu_check"
    )
    model.ir_version = 8
    onnx.save_model(
        model, str(path / "model.onnx"), save_as_external_data=True, location="model.onnx.data"
    )
    config = {
        "hidden_size": h,
        "num_attention_heads": n,
        "num_hidden_layers": shape.layers,
        "intermediate_size": shape.ffn,
        "vocab_size": shape.vocab,
        "id2label": {str(i): f"L{i}" for i in range(shape.labels)},
    }
    (path / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    specials = ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]"]
    # from U+4E00 on, past the surrogates (U+D800-DFFF), which utf-8 refuses
    need = shape.vocab - len(specials) - 26
    points = (c for c in range(0x4E00, 0x110000) if not 0xD800 <= c <= 0xDFFF)
    chars = [chr(next(points)) for _ in range(need)]
    vocab = specials + [chr(c) for c in range(ord("a"), ord("z") + 1)] + chars
    (path / "vocab.txt").write_text("\n".join(vocab[: shape.vocab]) + "\n", encoding="utf-8")
    return path
