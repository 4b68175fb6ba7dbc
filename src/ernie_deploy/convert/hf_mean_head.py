"""Sequence classifiers that read the mean of the encoder's outputs instead of its first token.

A transformers RoBERTa-family ``...ForSequenceClassification`` checkpoint whose config.json says
``"classifier_pooling": "mean"`` (the key and values ModernBERT's config uses) keeps the usual
weight layout, but its classification head (dense, tanh, out_proj) reads the attention-masked mean
of the last hidden states: the vector a mean-pooled embedding model such as E5 was pretrained to
give. transformers ignores the key, so `convert hf` exports the encoder as feature extraction,
appends the head to the graph (`append_mean_head`) and checks it against `mean_pooled_logits`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ernie_deploy.errors import ModelLoadError

POOLING_KEY = "classifier_pooling"
POOLINGS = ("cls", "mean")


def classifier_pooling(config: Any, src: Path | str) -> str:
    """ "cls" or "mean": what a transformers config names (no key: "cls"). A model class that
    reads the key itself (ModernBERT) is "cls" here: transformers pools it and optimum exports it."""
    if reads_the_key(config):
        return "cls"
    pooling = getattr(config, POOLING_KEY, None) or "cls"
    if pooling not in POOLINGS:
        raise ModelLoadError(
            f"{src}/config.json has {POOLING_KEY} {pooling!r}: set it to one of "
            f"{', '.join(POOLINGS)}."
        )
    return str(pooling)


def reads_the_key(config: Any) -> bool:
    """Whether the config class has the key by default, i.e. its model implements it."""
    try:
        return hasattr(type(config)(), POOLING_KEY)
    except Exception:  # a config class that needs arguments: not one that defines the key
        return False


def check_mean_head(model: Any, src: Path | str) -> None:
    """A mean-pooled head needs the RoBERTa layout: an encoder and a dense/out_proj classifier."""
    head = getattr(model, "classifier", None)
    if not (hasattr(head, "dense") and hasattr(head, "out_proj") and model.base_model is not model):
        raise ModelLoadError(
            f"{src} says {POOLING_KEY} 'mean' but {type(model).__name__} has no RoBERTa-style "
            "classification head (dense, out_proj): remove the key or use a RoBERTa-family model."
        )


def mean_pool(hidden: Any, mask: Any) -> Any:
    """[B, T, H] hidden states, [B, T] attention mask -> [B, H] mean over the unmasked tokens
    (torch tensors; a row with no token gives zeros)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def mean_pooled_logits(model: Any, input_ids: Any, attention_mask: Any) -> Any:
    """The logits of a mean-pooled head in PyTorch: the reference the graph is checked against,
    and the forward pass training uses."""
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask)[0]
    return model.classifier(mean_pool(hidden, attention_mask)[:, None, :])


def classifier_logits(model: Any, input_ids: Any, attention_mask: Any, src: Path | str) -> Any:
    """A transformers classifier's logits, pooled as its config says (mean or its own way)."""
    if classifier_pooling(model.config, src) == "mean":
        return mean_pooled_logits(model, input_ids, attention_mask)
    return model(input_ids=input_ids, attention_mask=attention_mask).logits


def append_mean_head(onnx_path: Path, model: Any, output: str = "logits") -> None:
    """Rewrite a feature-extraction graph (inputs incl. attention_mask, output last_hidden_state)
    in place so that its one output is `output`: the mean-pooled head's logits."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph_model = onnx.load(str(onnx_path))
    graph = graph_model.graph
    hidden = next((o for o in graph.output if o.name == "last_hidden_state"), None)
    inputs = {i.name for i in graph.input}
    if hidden is None or "attention_mask" not in inputs:
        raise ModelLoadError(
            f"The exported encoder graph has outputs {[o.name for o in graph.output]} and inputs "
            f"{sorted(inputs)}: a mean-pooled head needs last_hidden_state and attention_mask."
        )
    opset = next(o.version for o in graph_model.opset_import if o.domain in ("", "ai.onnx"))
    head = model.classifier

    def const(name: str, value: Any, dtype: Any = np.float32) -> str:
        graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def axes_node(op: str, inp: list[str], out: str, axes: list[int], **kw: Any) -> Any:
        if opset >= 13:  # axes became an input in opset 13
            return helper.make_node(op, [*inp, const(f"{out}/axes", axes, np.int64)], [out], **kw)
        return helper.make_node(op, inp, [out], axes=axes, **kw)

    def linear(inp: str, out: str, layer: str) -> Any:
        """nn.Linear as a Gemm: PyTorch's weight names and [out, in] layout, and the node named
        as torch.onnx names it (tools/onnx_to_hf.py reads quantized weights back by node name)."""
        names = []
        for param in ("weight", "bias"):
            value = getattr(head, layer).get_parameter(param).detach().cpu().float().numpy()
            names.append(const(f"classifier.{layer}.{param}", value))
        return helper.make_node(
            "Gemm", [inp, *names], [out], name=f"/classifier/{layer}/Gemm", transB=1
        )

    p = "mean_head/"
    graph.node.extend(
        [
            helper.make_node("Cast", ["attention_mask"], [p + "mask"], to=TensorProto.FLOAT),
            axes_node("Unsqueeze", [p + "mask"], p + "mask3", [2]),
            helper.make_node("Mul", [hidden.name, p + "mask3"], [p + "masked"]),
            axes_node("ReduceSum", [p + "masked"], p + "sum", [1], keepdims=0),
            axes_node("ReduceSum", [p + "mask3"], p + "count", [1], keepdims=0),
            helper.make_node("Max", [p + "count", const(p + "one", 1.0)], [p + "count1"]),
            helper.make_node("Div", [p + "sum", p + "count1"], [p + "pooled"]),
            linear(p + "pooled", p + "dense", "dense"),
            helper.make_node("Tanh", [p + "dense"], [p + "tanh"]),
            linear(p + "tanh", output, "out_proj"),
        ]
    )
    batch = hidden.type.tensor_type.shape.dim[0]
    batch_dim = batch.dim_param or (batch.dim_value if batch.HasField("dim_value") else None)
    del graph.output[:]
    graph.output.append(
        helper.make_tensor_value_info(
            output, TensorProto.FLOAT, [batch_dim, int(head.out_proj.weight.shape[0])]
        )
    )
    onnx.checker.check_model(graph_model)
    onnx.save(graph_model, str(onnx_path))
