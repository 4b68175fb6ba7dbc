#!/usr/bin/env python
"""Rebuild a transformers checkpoint from one of our dynamic-int8 ONNX exports, to train it further.

    python tools/onnx_to_hf.py src/ernie_deploy/models/ner-zh-e5 .cache/e5/ner-zh-e5-v1

The fp32 training checkpoint of a shipped e5 head lives only in the `.cache/` of the machine that
trained it. The shipped ONNX file still holds every weight: the int8 ones (MatMulInteger weights,
per channel or per tensor; the quantized Gather tables) are dequantized, `(q - zero_point) *
scale`, the fp32 ones (biases, LayerNorms) copied. Each MatMulInteger node is named after the
`nn.Linear` it came from (`/roberta/encoder/layer.3/attention/self/query/MatMul_quant`), its
weight is [in, out] (transposed back here), and each quantized table is
`<parameter>_quantized` (or `<parameter>_q4` with `_scales`: 4-bit blocks of 32 along a row,
element 2i in the low nibble of byte i, `(q - 8) * scale`; or `<parameter>_q8`: 8-bit blocks
along a row, `(q - 128) * scale`). MatMuls kept as weight-only 8-bit
blocks (MatMulNBits, [out, in] rows of blocks) are `(q - 128) * scale`. The result is a `save_pretrained`
directory (config.json and the tokenizer files copied from the model directory, its bundle.json
as `source_bundle.json`) that `tools/train_e5_heads.py --base` takes.

Check (always run): the rebuilt PyTorch model's logits against the ONNX model's on the model
directory's `export_check.npz` probe batch; they differ only by the int8 activation rounding
of the ONNX model's dynamic quantization (the weights are the same numbers), and against the
fp32 checkpoint's own logits kept there at export (what the int8 rounding of the weights cost).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

COPIED = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def unpack_q4(packed: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """[rows, cols/2] bytes (element 2i in the low nibble of byte i) and [rows, cols/32] scales
    -> fp32 [rows, cols], `(q - 8) * scale` per block of 32 (tools/pack_e5_4bit.py's layout)."""
    rows = packed.shape[0]
    q = np.stack([packed & 0x0F, packed >> 4], -1).reshape(rows, -1).astype(np.float32)
    blocks = (q - 8).reshape(rows, scales.shape[1], -1) * scales.astype(np.float32)[..., None]
    return blocks.reshape(rows, -1)


def unpack_q8(q: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """8-bit blocks along each row (zero point 128) and [rows, blocks] scales -> fp32
    [rows, blocks * block], `(q - 128) * scale` (GatherBlockQuantized tables and MatMulNBits
    weights alike, as tools/pack_e5_4bit.py writes them)."""
    rows, n_blocks = scales.shape
    blocks = q.astype(np.float32).reshape(rows, n_blocks, -1) - 128.0
    return (blocks * scales.astype(np.float32)[..., None]).reshape(rows, -1)


def dequantized_weights(onnx_path: Path) -> dict[str, np.ndarray]:
    """Parameter name -> fp32 array (PyTorch layout) for every weight in the graph."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}

    def deq(base: str) -> np.ndarray:
        q = init[base + "_quantized"].astype(np.float32)
        zp = init[base + "_zero_point"].astype(np.float32)
        return (q - zp) * init[base + "_scale"].astype(np.float32)

    out: dict[str, np.ndarray] = {}
    matmul_weights = {n.input[1] for n in model.graph.node if n.op_type == "MatMulInteger"}
    tables = {  # tables stored as blocks: read below, not as fp32
        n.input[0].rsplit("_q", 1)[0]
        for n in model.graph.node
        if n.op_type == "GatherBlockQuantized"
    }
    for name, value in init.items():
        if name.startswith(("onnx::", "/")) or name in matmul_weights:
            continue  # MatMul weights are named after their node below (Gemm's `_Transposed` too)
        if name.endswith("_scales") and name[: -len("_scales")] in tables:
            continue
        if value.dtype == np.float32 and value.ndim >= 1:
            out[name] = value
        elif name.endswith("_quantized"):
            out[name[: -len("_quantized")]] = deq(name[: -len("_quantized")])
    for node in model.graph.node:  # a table stored as 4- or 8-bit blocks (GatherBlockQuantized)
        if node.op_type != "GatherBlockQuantized":
            continue
        bits = next((a.i for a in node.attribute if a.name == "bits"), 4)
        value, scales = init[node.input[0]], init[node.input[2]].astype(np.float32)
        base = node.input[0].rsplit("_q", 1)[0]
        if bits == 4:
            out[base] = unpack_q4(value, scales)
        else:  # 8-bit, zero point 128 (pack_e5_4bit's q8 blocks)
            out[base] = unpack_q8(value, scales).reshape(value.shape)
    for node in model.graph.node:
        if node.op_type != "MatMulInteger" or not node.input[1].endswith("_quantized"):
            continue
        module = node.name.strip("/").rsplit("/", 1)[0].replace("/", ".")
        out[module + ".weight"] = deq(node.input[1][: -len("_quantized")]).T.copy()
    for node in model.graph.node:  # weight-only 8-bit blocks (MatMulNBits, zero point 128)
        if node.op_type != "MatMulNBits":
            continue
        attrs = {a.name: a.i for a in node.attribute}
        if attrs.get("bits") != 8:
            raise SystemExit(
                f"onnx_to_hf: {node.name} has {attrs.get('bits')}-bit blocks; "
                "only 8-bit MatMulNBits are read back."
            )
        scales = init[node.input[2]].reshape(attrs["N"], -1)
        module = node.name.strip("/").rsplit("/", 1)[0].replace("/", ".")
        weight = unpack_q8(init[node.input[1]], scales)
        out[module + ".weight"] = weight.reshape(attrs["N"], attrs["K"])
    return out


def rebuild(model_dir: Path, out: Path) -> dict:
    import torch
    from safetensors.torch import save_file
    from transformers import (
        AutoConfig,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
    )

    config = AutoConfig.from_pretrained(str(model_dir))
    arch = (config.architectures or [""])[0]
    cls = (
        AutoModelForTokenClassification
        if arch.endswith("ForTokenClassification")
        else AutoModelForSequenceClassification
    )
    model = cls.from_config(config).eval()
    weights = dequantized_weights(model_dir / "model.onnx")
    expected = {k for k in model.state_dict() if not k.endswith("position_ids")}
    # a mean-pooled head's graph holds the encoder exported alone (convert/hf_mean_head.py): its
    # weights are named without the task model's prefix ("encoder.layer.0..." for "roberta...")
    prefix = model.base_model_prefix + "."
    weights = {k if k in expected else prefix + k: v for k, v in weights.items()}
    missing, extra = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or extra:
        raise SystemExit(
            f"onnx_to_hf: weights do not map: missing {missing[:5]}, extra {extra[:5]}"
        )
    model.load_state_dict({k: torch.tensor(v) for k, v in weights.items()}, strict=False)

    from export_e5_heads import agreement, ort_logits  # the export's own probe comparison

    probe = np.load(model_dir / "export_check.npz")
    feeds = {k: probe[k] for k in ("input_ids", "attention_mask")}
    from ernie_deploy.convert.hf_mean_head import classifier_logits

    ids, attention = (torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask"))
    with torch.no_grad():  # a mean-pooled head (train_e5_heads.py --pooling mean) as it pools
        got = classifier_logits(model, ids, attention, model_dir).numpy()
    mask = feeds["attention_mask"]
    vs_onnx = agreement(ort_logits(model_dir, feeds), got, mask)
    check = {
        "probe_texts": int(feeds["input_ids"].shape[0]),
        **{f"{k}_vs_onnx": v for k, v in vs_onnx.items()},
    }
    if "pytorch_logits" in probe.files:  # the fp32 checkpoint's own logits, kept at export
        vs_fp32 = agreement(probe["pytorch_logits"], got, mask)
        check.update({f"{k}_vs_fp32_checkpoint": v for k, v in vs_fp32.items()})
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
    for name in COPIED:
        shutil.copy2(model_dir / name, tmp / name)
    if (model_dir / "bundle.json").is_file():  # how the source was trained: the next card cites it
        shutil.copy2(model_dir / "bundle.json", tmp / "source_bundle.json")
    info = {"rebuilt_from": str(model_dir), "weights": len(weights), "check": check}
    (tmp / "rebuild_info.json").write_text(json.dumps(info, indent=1), "utf-8")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "model_dir", type=Path, help="a shipped model directory (model.onnx, config.json)"
    )
    p.add_argument(
        "out", type=Path, help="the transformers directory to write (replaced if present)"
    )
    a = p.parse_args(argv)
    if not (a.model_dir / "model.onnx").is_file() or not (a.model_dir / "config.json").is_file():
        print(
            f"onnx_to_hf: {a.model_dir} holds no model.onnx + config.json: pass a model directory.",
            file=sys.stderr,
        )
        return 2
    print(json.dumps(rebuild(a.model_dir, a.out), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
