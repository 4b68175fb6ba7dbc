"""What `load()` refuses before a model runs, checked in one place that load, inspect and convert share.

A model directory can hold a graph that ONNX Runtime loads but that cannot answer its task:
labels that do not match the output size, a classifier asked for embeddings, a max_seq_length
longer than the position table (ORT then fails mid-run with a Gather index error). Each check
here returns or raises one sentence naming the fix; `problems` lists all of them for
`inspect`, `check_model` raises the first for `load`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ernie_deploy.errors import (
    ConfigError,
    ErnieDeployError,
    LabelMismatchError,
    ModelLoadError,
    UnsupportedGraphError,
    first_line,
)
from ernie_deploy.runtime.model_dir import ModelConfig
from ernie_deploy.runtime.session import OnnxModel

# Output names of graphs that pool inside (sentence-transformers, CLIP-style exports).
POOLED_NAMES = ("sentence_embedding", "sentence_embeddings", "text_embeds", "embeddings")
TOKEN_NAMES = ("last_hidden_state", "token_embeddings", "sequence_output")
# An un-named rank-2 output narrower than this is a classifier head, not an embedding.
_MIN_EMBEDDING_WIDTH = 16
# Ops an embedding lookup's indices or table may pass through unchanged.
_PASS_THROUGH = ("Cast", "Identity", "Unsqueeze", "Squeeze", "Reshape", "Expand", "Flatten")
_TABLE_PRODUCERS = ("Identity", "Cast", "DequantizeLinear")
_ANCESTRY_DEPTH = 12
_FUSED_EMBEDDINGS = ("EmbedLayerNormalization", "QEmbedLayerNormalization")  # input 3: positions
_ID_INPUTS = ("input_ids", "ids", "token_type_ids", "segment_ids")


def read_graph(path: str | Path, external_data: bool = False) -> Any:
    """The ONNX ModelProto of `path` (weights in external files left unread unless asked)."""
    import onnx

    try:
        return onnx.load(str(path), load_external_data=external_data)
    except Exception as exc:  # protobuf DecodeError, OSError, onnx's own errors
        raise ModelLoadError(
            f"Cannot parse {path} as ONNX ({type(exc).__name__}: {first_line(exc, 200)}): "
            "re-export the model and check the file is complete."
        ) from exc


def external_data_files(graph: Any) -> list[str]:
    """The external-data files a graph's initializers name (model.onnx.data, ...), in order."""
    names: dict[str, None] = {}
    for tensor in graph.graph.initializer:
        if tensor.data_location == 1:  # onnx.TensorProto.EXTERNAL
            entry = {e.key: e.value for e in tensor.external_data}
            if "location" in entry:
                names[entry["location"]] = None
    return list(names)


def position_limit(graph: Any) -> int | None:
    """The longest sequence the graph's position embedding table can index, or None if unknown.

    The table is the 2-D initializer an embedding Gather (or a fused EmbedLayerNormalization)
    reads with position indices: its name says "position", or its indices are computed with a
    CumSum (paddle2onnx ERNIE, XLM-R) or come from a `position_ids` input. XLM-R / RoBERTa count
    positions from padding_idx + 1 (an Add of a constant after the CumSum), so a 514-row table
    holds 512 tokens.
    """
    inits = {t.name: t for t in graph.graph.initializer}
    producers = {out: node for node in graph.graph.node for out in node.output}
    found: list[tuple[int, int, int]] = []  # (preference, rows, offset)
    for node in graph.graph.node:
        if node.op_type == "Gather" and len(node.input) == 2:
            table, indices = _table(node.input[0], inits, producers), node.input[1]
        elif node.op_type in _FUSED_EMBEDDINGS and len(node.input) > 3:
            table, indices = _table(node.input[3], inits, producers), None
            if table is not None:
                found.append((3, int(table.dims[0]), 0))
            continue
        else:
            continue
        if table is None or len(table.dims) != 2:
            continue
        if _direct_source(indices, producers) in _ID_INPUTS:
            continue  # the word or token-type lookup
        ops, inputs = _ancestry(indices, producers)
        if "position" in table.name.lower():
            preference = 2
        elif "CumSum" in ops or inputs & {"position_ids", "pos_ids"}:
            preference = 1
        else:
            continue
        offset = _padding_offset(indices, producers, inits) if "CumSum" in ops else 0
        found.append((preference, int(table.dims[0]), offset))
    if not found:
        return None
    preference, rows, offset = max(found, key=lambda f: f[0])
    return rows - offset if rows > offset else None


def _table(name: str, inits: dict[str, Any], producers: dict[str, Any]) -> Any:
    for _ in range(3):
        if name in inits:
            return inits[name]
        node = producers.get(name)
        if node is None or node.op_type not in _TABLE_PRODUCERS or not node.input:
            return None
        name = node.input[0]
    return None


def _direct_source(name: str, producers: dict[str, Any]) -> str:
    """The tensor `name` is, once pass-through ops (Cast, Unsqueeze, ...) are looked through."""
    node = producers.get(name)
    while node is not None and node.op_type in _PASS_THROUGH and node.input:
        name = node.input[0]
        node = producers.get(name)
    return name


def _ancestry(name: str, producers: dict[str, Any]) -> tuple[set[str], set[str]]:
    """Op types and graph-input / initializer names within a few steps upstream of `name`."""
    ops: set[str] = set()
    sources: set[str] = set()
    queue, seen = deque([(name, 0)]), {name}
    while queue:
        current, depth = queue.popleft()
        node = producers.get(current)
        if node is None:
            sources.add(current)
            continue
        ops.add(node.op_type)
        if depth < _ANCESTRY_DEPTH:
            for parent in node.input:
                if parent and parent not in seen:
                    seen.add(parent)
                    queue.append((parent, depth + 1))
    return ops, sources


def _padding_offset(name: str, producers: dict[str, Any], inits: dict[str, Any]) -> int:
    """Rows the position table keeps below the first position (XLM-R: padding_idx + 1)."""
    node = producers.get(name)
    while node is not None and node.op_type in _PASS_THROUGH and node.input:
        node = producers.get(node.input[0])
    if node is None or node.op_type != "Add":
        return 0
    for operand in node.input:
        value = _scalar(operand, producers, inits)
        if value is not None and value > 0:
            return value + 1  # cumsum of the mask counts from 1, plus padding_idx
    return 0


def _scalar(name: str, producers: dict[str, Any], inits: dict[str, Any]) -> int | None:
    from onnx import numpy_helper

    tensor = inits.get(name)
    node = producers.get(name)
    if tensor is None and node is not None and node.op_type == "Constant":
        tensor = next((a.t for a in node.attribute if a.name == "value"), None)
    if tensor is None:
        return None
    value = numpy_helper.to_array(tensor)
    if value.size != 1 or value.dtype.kind not in "iu":
        return None
    return int(value.reshape(()))


def pick_output(model: OnnxModel, rank: int, preferred: Sequence[str]) -> str:
    """The output to read: the first preferred name present, else the first of the given rank."""
    for name in preferred:
        if name in model.outputs and len(model.output_shapes[name]) == rank:
            return name
    for name in model.outputs:
        if len(model.output_shapes[name]) == rank:
            return name
    shapes = ", ".join(f"{n} {model.output_shapes[n]}" for n in model.outputs)
    raise UnsupportedGraphError(
        f"{model.path.name} has no rank-{rank} output (it has {shapes}): export the model "
        "with its task head, or pick the task that matches these outputs."
    )


def label_problem(size: object, labels: Sequence[str]) -> LabelMismatchError | None:
    """Labels must match the size of the class axis where it is known."""
    if not isinstance(size, int) or size == len(labels):
        return None
    return LabelMismatchError(
        f"The model outputs {size} classes but {len(labels)} labels were given "
        f"({', '.join(labels[:8])}{', ...' if len(labels) > 8 else ''}): pass exactly "
        f"{size} labels, in output order."
    )


def rerank_width_problem(size: object) -> UnsupportedGraphError | None:
    if not isinstance(size, int) or size in (1, 2):
        return None
    return UnsupportedGraphError(
        f"A reranker must output 1 logit or 2 classes per pair, this one outputs {size}: "
        "load it with task='seq_cls' instead."
    )


def embedding_output(model: OnnxModel, labels: Sequence[str] | None = None) -> tuple[str, bool]:
    """(output name, whether it holds token states to pool) for the embedding task.

    A graph whose only usable output is rank-2 class logits (a sequence classifier) is refused:
    its few logits are not an embedding.
    """
    pooled = [n for n in POOLED_NAMES if n in model.outputs]
    if pooled:
        return pooled[0], False
    try:
        return pick_output(model, 3, TOKEN_NAMES), True
    except UnsupportedGraphError:
        name = pick_output(model, 2, ("pooler_output",))
    width = model.output_shapes[name][-1]
    named_logits = "logits" in name.lower()
    narrow = isinstance(width, int) and (
        width < _MIN_EMBEDDING_WIDTH or (bool(labels) and width == len(labels or ()))
    )
    if name != "pooler_output" and (named_logits or narrow):
        raise UnsupportedGraphError(
            f"{model.path.name} outputs class logits ({name} {model.output_shapes[name]}), not "
            "token states or a sentence vector: load it as seq_cls, or export the encoder "
            "without its classification head for embeddings."
        )
    return name, False


def problems(model: OnnxModel, config: ModelConfig, max_seq_length: int) -> list[ErnieDeployError]:
    """Everything load() would refuse about this graph with this config (empty: it loads)."""
    found: list[ErnieDeployError] = []
    limit = position_limit(read_graph(model.path))
    if limit is not None and max_seq_length > limit:
        found.append(
            ConfigError(
                f"max_seq_length {max_seq_length} is more than the {limit} positions the model's "
                f"position embedding table holds: pass --max-seq-length {limit} "
                f"(max_seq_length={limit}) or less."
            )
        )
    try:
        _check_task(model, config)
    except ErnieDeployError as exc:
        found.append(exc)
    return found


def _check_task(model: OnnxModel, config: ModelConfig) -> None:
    task, labels = config.task, config.labels
    if task == "embedding":
        embedding_output(model, labels)
    elif task == "rerank":
        output = pick_output(model, 2, ("logits",))
        if width := rerank_width_problem(model.output_shapes[output][-1]):
            raise width
    elif task in ("token_cls", "seq_cls"):
        output = pick_output(model, 3 if task == "token_cls" else 2, ("logits",))
        if task == "token_cls" and not labels:
            raise ConfigError(
                f"{model.path.parent} names no token labels: pass labels= (e.g. O, B-PER, "
                "I-PER, ...) or write them into ernie_deploy.json."
            )
        if labels and (mismatch := label_problem(model.output_shapes[output][-1], labels)):
            raise mismatch


def check_model(model: OnnxModel, config: ModelConfig, max_seq_length: int) -> None:
    """Raise the first thing load() must refuse (see `problems`)."""
    found = problems(model, config, max_seq_length)
    if found:
        raise found[0]
