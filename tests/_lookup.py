"""Deterministic "gazetteer" NER graphs built with onnx.helper, for exact-output tests.

logits[b, t] = T1[ids[b, t]] + T2[ids[b, t - 1]]: a listed word's first token scores B-X,
each following token of the word scores I-X through its predecessor. Everything else is O.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ernie_deploy.cli.infer import GUIDE_LABELS

GUIDE_NER_LABELS = GUIDE_LABELS["token_cls"]
GUIDE_ENTITIES = {
    "北京": "LOC",
    "重庆": "LOC",
    "成都": "LOC",
    "乔丹": "PER",
    "科比": "PER",
    "詹姆斯": "PER",
    "姚明": "PER",
}


def build_lookup_graph(
    path: Path,
    vocab_size: int,
    rules: Sequence[tuple[Sequence[int], str]],
    labels: Sequence[str] = GUIDE_NER_LABELS,
    int32_inputs: bool = False,
    extra_inputs: Sequence[str] = ("token_type_ids",),
    output_name: str = "logits",
) -> Path:
    """Write the graph; `rules` are (token id sequence, entity type)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n = len(labels)
    t1 = np.zeros((vocab_size, n), np.float32)
    t1[:, labels.index("O")] = 1.0
    t2 = np.zeros((vocab_size, n), np.float32)
    for ids, kind in rules:
        t1[ids[0], labels.index(f"B-{kind}")] = 2.0
        for prev in ids[:-1]:
            t2[prev, labels.index(f"I-{kind}")] = 3.0
    itype = TensorProto.INT32 if int32_inputs else TensorProto.INT64
    inputs = [helper.make_tensor_value_info("input_ids", itype, ["batch", "seq"])]
    inputs += [
        helper.make_tensor_value_info(name, itype, ["batch", "seq"]) for name in extra_inputs
    ]
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["ids64"], to=TensorProto.INT64),
        helper.make_node("Gather", ["t1", "ids64"], ["cur"], axis=0),
        helper.make_node("Slice", ["ids64", "zero", "minus_one", "one"], ["head"]),
        helper.make_node("Shape", ["ids64"], ["shape"]),
        helper.make_node("Slice", ["shape", "zero0", "one0"], ["batch"]),
        helper.make_node("Concat", ["batch", "one"], ["pad_shape"], axis=0),
        helper.make_node(
            "ConstantOfShape",
            ["pad_shape"],
            ["pad"],
            value=helper.make_tensor("v", TensorProto.INT64, [1], [0]),
        ),
        helper.make_node("Concat", ["pad", "head"], ["prev_ids"], axis=1),
        helper.make_node("Gather", ["t2", "prev_ids"], ["prev"], axis=0),
        helper.make_node("Add", ["cur", "prev"], [output_name]),
    ]
    # Reference every extra input so ORT keeps it in the signature.
    for name in extra_inputs:
        nodes.append(helper.make_node("Shape", [name], [f"{name}_shape"]))
    inits = [
        numpy_helper.from_array(t1, "t1"),
        numpy_helper.from_array(t2, "t2"),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([-1], np.int64), "minus_one"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
        numpy_helper.from_array(np.array([0], np.int64), "zero0"),
        numpy_helper.from_array(np.array([1], np.int64), "one0"),
    ]
    outputs = [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", "seq", n])]
    outputs += [
        helper.make_tensor_value_info(f"{name}_shape", TensorProto.INT64, [2])
        for name in extra_inputs
    ]
    graph = helper.make_graph(nodes, "lookup_ner", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def read_vocab(vocab_file: Path) -> dict[str, int]:
    lines = vocab_file.read_text(encoding="utf-8").splitlines()
    return {tok: i for i, tok in enumerate(lines)}


def gazetteer_rules(
    vocab_file: Path, entities: dict[str, str] = GUIDE_ENTITIES
) -> list[tuple[list[int], str]]:
    """Rules for words given as space-free strings: Chinese char by char, other words whole."""
    from ernie_deploy.tasks.tokenization import Tokenizer

    tok = Tokenizer.from_vocab(vocab_file)
    rules = []
    for word, kind in entities.items():
        ids = [int(i) for t in tok.tokenize(word.split()) for i in t.ids]
        rules.append((ids, kind))
    return rules


def lookup_ner_dir(
    directory: Path,
    vocab_file: Path,
    entities: dict[str, str] = GUIDE_ENTITIES,
    with_config: bool = True,
    **graph_options: object,
) -> Path:
    """A PaddleNLP-like directory: model.onnx, vocab.txt, tokenizer_config.json (+ our config)."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab = directory / "vocab.txt"
    vocab.write_bytes(vocab_file.read_bytes())
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": True, "tokenizer_class": "ErnieTokenizer"}), "utf-8"
    )
    size = len(read_vocab(vocab_file))
    build_lookup_graph(
        directory / "model.onnx", size, gazetteer_rules(vocab, entities), **graph_options
    )  # type: ignore[arg-type]
    if with_config:
        (directory / "ernie_deploy.json").write_text(
            json.dumps({"task": "token_cls", "labels": list(GUIDE_NER_LABELS)}), "utf-8"
        )
    return directory


def build_bag_classifier(
    path: Path,
    vocab_size: int,
    n_labels: int,
    seed: int = 0,
    output_name: str = "logits",
    table: np.ndarray | None = None,
) -> Path:
    """logits[b] = mean of T[ids[b, t]] over non-pad tokens (pad id 0): a deterministic seq_cls graph.

    `table` ([vocab_size, n_labels]) replaces the random one (seeded normal, std 2).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if table is None:
        table = np.random.default_rng(seed).normal(0, 2, (vocab_size, n_labels))
    table = np.asarray(table, dtype=np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["emb"], axis=0),
        helper.make_node("Equal", ["input_ids", "pad_id"], ["is_pad"]),
        helper.make_node("Not", ["is_pad"], ["keep"]),
        helper.make_node("Cast", ["keep"], ["keep_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["keep_f", "last_axis"], ["keep3"]),
        helper.make_node("Mul", ["emb", "keep3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "seq_axis"], ["total"], keepdims=0),
        helper.make_node("ReduceSum", ["keep3", "seq_axis"], ["count"], keepdims=0),
        helper.make_node("Div", ["total", "count"], [output_name]),
        helper.make_node("Shape", ["token_type_ids"], ["tt_shape"]),
    ]
    graph = helper.make_graph(
        nodes,
        "bag_cls",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, ["batch", "seq"]),
        ],
        [
            helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", n_labels]),
            helper.make_tensor_value_info("tt_shape", TensorProto.INT64, [2]),
        ],
        [
            numpy_helper.from_array(table, "table"),
            numpy_helper.from_array(np.array(0, np.int64), "pad_id"),
            numpy_helper.from_array(np.array([2], np.int64), "last_axis"),
            numpy_helper.from_array(np.array([1], np.int64), "seq_axis"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path
