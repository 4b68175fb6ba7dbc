"""The weight candidates an exported e5 head may ship with (tools/export_e5_heads.py): how each
is built from the fp32 export, and the rule that picks one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

MAX_POINTS_LOST = 0.5  # int8 ships when its F1 / accuracy is within this many points of fp32
SIZE_LIMIT_MB = 40.0
# A candidate ships only when each text's outputs are the same alone as in a batch (up to float
# rounding; verify.batch_drift on the probe batch): dynamic int8 scales activations per batch,
# which put the sentiment head shipped until 2026-12-05 at 0.892 held-out at batch 32 but 0.8835
# at batch 1, what a single request gets.
BATCH_DRIFT_LIMIT = 1e-4


def split_files(model_dir: Path) -> None:
    """Rewrite model.onnx with its weights in data files of at most 19 MiB each."""
    import onnx
    from pack_e5_4bit import save_split

    model = onnx.load(str(model_dir / "model.onnx"))  # external data read in
    for stale in model_dir.glob("model.onnx*"):
        stale.unlink()
    save_split(model, model_dir)


CANDIDATES = {
    "int8": "dynamic int8 (ernie-deploy quantize), per-tensor weight scales, every op type",
    "int8_rows": "dynamic int8 as int8, with one activation scale per token row instead of per "
    "batch (ernie-deploy quantize --row-scales): a text's outputs do not depend on its batch",
    "int8_q4_table": "dynamic int8 per-tensor MatMuls; the word-embedding table as its own "
    "4-bit blocks of 32 (GatherBlockQuantized; refused unless the table is still the imported "
    "4-bit blocks, i.e. was frozen in training)",
    "int8_per_channel": "dynamic int8 (ernie-deploy quantize --per-channel), every op type",
    "int8_per_channel_q4_table": "dynamic int8 per-channel MatMuls; the word-embedding table as "
    "its own 4-bit blocks of 32 (as int8_q4_table)",
    "int8_per_channel_ffn_q8": "dynamic int8 (per-channel, every op type) except the "
    "feed-forward output MatMuls, whose input (GELU's output) dynamic int8 rounds worst: those "
    "become weight-only 8-bit blocks of 32 (MatMulNBits, accuracy_level 4)",
    "int8_matmul_q8_table": "dynamic int8 per-channel MatMuls; the word-embedding table as "
    "8-bit blocks of 32 (GatherBlockQuantized)",
    "q8_blocks": "weight-only 8-bit blocks of 32 for every weight MatMul (MatMulNBits, "
    "accuracy_level 4) and the word-embedding table (GatherBlockQuantized)",
    "q8_blocks_q4_table": "weight-only 8-bit blocks of 32 for every weight MatMul (MatMulNBits, "
    "accuracy_level 4); the word-embedding table rounded to 4-bit blocks of 32 "
    "(GatherBlockQuantized, the q4_0 rule), which halves its size",
    "q8_blocks128": "weight-only 8-bit blocks of 128 for every weight MatMul (MatMulNBits, "
    "accuracy_level 4) and the word-embedding table (GatherBlockQuantized): a quarter of the "
    "fp32 scales of blocks of 32, which fits 12 layers under 40 MB",
    "q8_blocks128_fp32_act": "weight-only 8-bit blocks of 128 as q8_blocks128, but the "
    "MatMuls compute on fp32 activations (MatMulNBits accuracy_level 0) instead of rounding "
    "them to int8 (accuracy_level 4): only the weights are rounded",
    "q8_blocks128_q4_table_fp32_act": "weight-only 8-bit blocks of 128 on fp32 activations as "
    "q8_blocks128_fp32_act, with the word-embedding table as 4-bit blocks of 32 as in "
    "q8_blocks_q4_table: fits an 11-layer head's 44k-piece table under 40 MB",
}  # tried in this order (roughly the order they were added, dynamic int8 first, which was the
# fastest on the 6-layer heads; q8_blocks128_fp32_act later measured faster than q8_blocks128 on
# the 12-layer NER head: RESULTS.md "ner_exports"); pick() chooses among those within
# MAX_POINTS_LOST: `--choose first` the first of them, `least-loss` the closest to fp32


def build_candidate(label: str, fp32: Path, out: Path) -> dict[str, Any]:
    """Write one int8 candidate of the fp32 directory into `out` (files under 20 MiB)."""
    from pack_e5_4bit import pack

    from ernie_deploy.convert.quantize import quantize_model

    if label.startswith("q8_blocks"):
        table_bits = 4 if "_q4_table" in label else 8
        block = 128 if label.startswith("q8_blocks128") else 32
        level = 0 if label.endswith("_fp32_act") else 4
        packed = pack(fp32, out, bits=8, block=block, accuracy_level=level, table_bits=table_bits)
        return {"how": CANDIDATES[label], **packed}
    per_channel = label not in ("int8", "int8_q4_table", "int8_rows")
    matmul_only = label in ("int8_matmul_q8_table", "int8_q4_table", "int8_per_channel_q4_table")
    keep = ffn_out(fp32) if label == "int8_per_channel_ffn_q8" else []
    repack = matmul_only or bool(keep)  # the MatMuls / table left float get packed blocks
    stage = out.with_name(out.name + "-stage") if repack else out
    q = quantize_model(
        fp32, stage, per_channel=per_channel, overwrite=True,
        op_types=("MatMul",) if matmul_only else None, keep_fp32=keep,
        row_scales=label.endswith("_rows"),
    )  # fmt: skip
    how = {"how": CANDIDATES[label], "quantized": dict(q.quantized)}
    if repack:
        packing = {"bits": 8, "accuracy_level": 4} if keep else {"bits": 4 if "q4" in label else 8}
        try:
            how.update(pack(stage, out, **packing))
        finally:
            shutil.rmtree(stage)
    else:
        split_files(out)
    return how


def ffn_out(fp32: Path) -> list[str]:
    """The MatMuls whose constant weight is [intermediate_size, hidden_size]: each layer's
    feed-forward output projection."""
    import onnx
    from pack_e5_4bit import PackFailed

    config = json.loads((fp32 / "config.json").read_text(encoding="utf-8"))
    shape = [config["intermediate_size"], config["hidden_size"]]
    graph = onnx.load(str(fp32 / "model.onnx"), load_external_data=False).graph
    weights = {t.name: list(t.dims) for t in graph.initializer}
    names = [
        n.name for n in graph.node if n.op_type == "MatMul" and weights.get(n.input[1]) == shape
    ]
    if len(names) != config["num_hidden_layers"]:
        raise PackFailed(
            f"{fp32} has {len(names)} MatMuls shaped like a feed-forward output, not one per "
            "layer: this candidate is for the e5 graphs convert hf writes."
        )
    return names


def pick(candidates: dict[str, Any], choose: str) -> str | None:
    """The candidate to ship among those within MAX_POINTS_LOST of fp32 and SIZE_LIMIT_MB whose
    outputs do not depend on the batch (BATCH_DRIFT_LIMIT), in the order tried: the first
    ("first") or the one that lost least ("least-loss"; equal losses: the one that scored the
    evaluation set fastest); None if none."""
    fits = [
        (c["points_lost"], c.get("scores", {}).get("seconds", 0.0), label)
        for label, c in candidates.items()
        if "points_lost" in c
        and c["points_lost"] <= MAX_POINTS_LOST
        and c["size_mb"] <= SIZE_LIMIT_MB
        and c.get("batch_drift", 0.0) <= BATCH_DRIFT_LIMIT
    ]
    if not fits:
        return None
    return fits[0][-1] if choose == "first" else min(fits)[-1]
