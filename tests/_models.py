"""Builders for tiny random-init reference models laid out like the real export tools write them.

Each builder writes a complete model directory (PaddleNLP save dir + paddle2onnx ``model.onnx``,
or an ``optimum-cli export onnx``-style directory for transformers models) and returns a
:class:`RefModel` whose ``reference`` callable runs the *source* framework (paddle / torch eager)
on the same weights, so tests can check ONNX Runtime against it.

Heavy frameworks (paddle, paddlenlp, paddle2onnx, torch, transformers) are imported lazily inside
the builders: importing this module costs only numpy.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ernie_deploy.cli.infer import GUIDE_LABELS

Reference = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]

# Tiny architecture shared by every builder: fast to build, export and run.
HIDDEN = 32
LAYERS = 2
HEADS = 2
INTERMEDIATE = 64

NER_LABELS: tuple[str, ...] = GUIDE_LABELS["token_cls"]
TNEWS_LABELS: tuple[str, ...] = GUIDE_LABELS["seq_cls"]
BERT_CLS_LABELS: tuple[str, ...] = ("negative", "neutral", "positive")
RERANK2_LABELS: tuple[str, ...] = ("irrelevant", "relevant")


@dataclass(frozen=True)
class RefModel:
    """A model directory plus a callable computing the source framework's output."""

    path: Path  # the model directory
    onnx: Path  # the .onnx file inside it
    task: str  # "token_cls" | "seq_cls" | "embedding" | "rerank"
    labels: tuple[str, ...]  # () for embedding / single-logit rerank
    # (input_ids, token_type_ids, attention_mask), all int64 [B, T] -> float32 output:
    # token_cls -> logits [B,T,L]; seq_cls / rerank -> logits [B,L]; embedding -> [B,T,H]
    reference: Reference


def _label_maps(labels: Sequence[str]) -> tuple[dict[int, str], dict[str, int]]:
    return {i: name for i, name in enumerate(labels)}, {name: i for i, name in enumerate(labels)}


# --------------------------------------------------------------------------------------------
# PaddleNLP ERNIE -> paddle.jit.save -> paddle2onnx
# --------------------------------------------------------------------------------------------

_PADDLE_CLASSES = {
    "token_cls": "ErnieForTokenClassification",
    "seq_cls": "ErnieForSequenceClassification",
    "embedding": "ErnieModel",
}


def _paddle2onnx(static_prefix: Path, save_file: Path, opset: int = 13) -> None:
    """Convert a ``paddle.jit.save`` output (PIR ``.json`` or old ``.pdmodel``) to ONNX."""
    from ernie_deploy.convert.paddle import run_paddle2onnx

    model_file = static_prefix.with_suffix(".json")
    if not model_file.exists():  # paddle < 3 (old IR) writes .pdmodel
        model_file = static_prefix.with_suffix(".pdmodel")
    run_paddle2onnx(model_file, static_prefix.with_suffix(".pdiparams"), save_file, opset)


def build_paddle_ernie(
    out_dir: Path,
    task: str,
    vocab_file: Path,
    labels: Sequence[str] = (),
    seed: int = 0,
) -> RefModel:
    """Write a PaddleNLP ERNIE save dir (+ ``model.onnx`` via paddle2onnx) to ``out_dir``.

    ``task`` is ``token_cls`` (ErnieForTokenClassification), ``seq_cls``
    (ErnieForSequenceClassification) or ``embedding`` (ErnieModel). Labels go into the config's
    ``id2label`` / ``label2id`` (PaddleNLP's PretrainedConfig supports both and writes them to
    ``config.json``). The ONNX graph takes ``input_ids`` and ``token_type_ids`` only: ERNIE builds
    its attention mask from ``input_ids == pad_token_id`` (0).
    """
    os.environ.setdefault("AISTUDIO_BOS_OFFLINE", "1")
    import paddle
    import paddlenlp.transformers as ptf

    if task not in _PADDLE_CLASSES:
        raise ValueError(f"unknown paddle task {task!r}")
    cls = getattr(ptf, _PADDLE_CLASSES[task])
    with Path(vocab_file).open(encoding="utf-8") as f:
        n_vocab = sum(1 for _ in f)
    config_kwargs: dict[str, Any] = {}
    if labels:
        id2label, label2id = _label_maps(labels)
        config_kwargs.update(id2label=id2label, label2id=label2id, num_labels=len(labels))
    config = ptf.ErnieConfig(
        vocab_size=n_vocab,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        max_position_embeddings=512,
        type_vocab_size=4,  # as ERNIE 3.0
        pad_token_id=0,
        **config_kwargs,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    paddle.seed(seed)
    model = cls(config)
    model.eval()
    model.save_pretrained(str(out_dir))
    ptf.ErnieTokenizer(vocab_file=str(vocab_file)).save_pretrained(str(out_dir))

    # paddle.jit.to_static converts the layer's forward in place, so export a reloaded copy
    # and keep `model` in eager (dygraph) mode for the reference.
    exported = cls.from_pretrained(str(out_dir))
    exported.eval()
    spec = [
        paddle.static.InputSpec([None, None], "int64", name="input_ids"),
        paddle.static.InputSpec([None, None], "int64", name="token_type_ids"),
    ]
    with tempfile.TemporaryDirectory(prefix="paddle_static_") as tmp:
        prefix = Path(tmp) / "inference"
        static = paddle.jit.to_static(exported, input_spec=spec, full_graph=True)
        paddle.jit.save(static, str(prefix))
        _paddle2onnx(prefix, out_dir / "model.onnx")

    def reference(
        input_ids: np.ndarray, token_type_ids: np.ndarray, attention_mask: np.ndarray
    ) -> np.ndarray:
        del attention_mask  # ERNIE derives it from input_ids == 0, like the exported graph
        with paddle.no_grad():
            out = model(
                paddle.to_tensor(np.asarray(input_ids, dtype=np.int64)),
                paddle.to_tensor(np.asarray(token_type_ids, dtype=np.int64)),
            )
        if isinstance(out, (tuple, list)):  # ErnieModel: (sequence_output, pooled_output)
            out = out[0]
        return np.asarray(out.numpy(), dtype=np.float32)

    return RefModel(
        path=out_dir,
        onnx=out_dir / "model.onnx",
        task=task,
        labels=tuple(labels),
        reference=reference,
    )


# --------------------------------------------------------------------------------------------
# transformers (torch) -> torch.onnx.export, optimum-cli layout
# --------------------------------------------------------------------------------------------

_EN_TEXT = (
    "the a an and or but not no yes is are was were be been has have had do does did will would "
    "can could should may might must of to in on at by for with from about as into over under "
    "after before between through up down out off this that these those it its he she they we "
    "you i me him her them us my your our their who what when where why how which all any some "
    "one two three four five first last new old good bad great small big long short high low "
    "man woman people child world city country company bank school university government "
    "market price stock news game team player match win lose play work time year day week month "
    "home house car road river water food music movie book story art science tech data model "
    "search query document answer question relevant result page text word language china beijing "
    "shanghai london paris john mary smith apple google microsoft"
)
_EN_WORDS = tuple(_EN_TEXT.split())
_SUFFIXES = "s es ed ing er est ly tion al ment ness ful able"
_WORDPIECES = tuple("##" + p for p in _SUFFIXES.split())
_CJK = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产"
    "种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从"
    "业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又"
    "么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位"
    "入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放"
    "决西被干做必战先回则任取据处队南给色光门即保治北造百规热领七海口东导器压志世金增争济阶油思术极交受"
    "联什认六共权收证改清己美再采转更单风切打白教速花带安场身车例真务具万每目至达走积示议声报斗完类八离"
    "华名确才科张信马节话米整空元况今集温传土许步群广石记需段研界拉林律叫且究观越织装影算低持音众书布复"
    "容儿须际商非验连断深难近矿千周委素技备半办青省列习响约支般史感劳便团往酸历市克何除消构府称太准精值"
    "号率族维划选标写存候毛亲快效斯院查江型眼王按格养易置派层片始却专状育厂京识适属圆包火住调满县局照参"
    "红细引听该铁价严京"
)
_PUNCT = list(".,!?;:'\"()-/&%$@#*+=") + list("，。！？、：；“”（）《》")


def bert_vocab() -> list[str]:
    """A small deterministic WordPiece vocab: specials, words, ## pieces, digits, CJK, punct."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    digits = [str(d) for d in range(10)]
    seen: set[str] = set()
    vocab: list[str] = []
    pieces = (
        specials
        + _PUNCT
        + digits
        + ["##" + d for d in digits]
        + letters
        + ["##" + c for c in letters]
        + list(_WORDPIECES)
        + list(_EN_WORDS)
        + list(_CJK)
    )
    for token in pieces:
        if token not in seen:
            seen.add(token)
            vocab.append(token)
    return vocab


def _output_adapter(model: Any, output: str, with_token_type_ids: bool) -> Any:
    """A torch module that returns one named output of a transformers model, positionally."""
    import torch

    class Adapter(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, *rest: Any) -> Any:
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if with_token_type_ids:
                kwargs["token_type_ids"] = rest[0]
            return getattr(self.model(**kwargs), output)

    return Adapter().eval()


def _torch_export(
    model: Any,
    onnx_path: Path,
    output: str,
    per_token: bool,
    with_token_type_ids: bool,
    pad_id: int,
    opset: int = 14,
) -> None:
    """Export like ``optimum-cli export onnx``: int64 inputs, dynamic batch/sequence axes.

    Uses the TorchScript-based exporter (``dynamo=False``), which torch 2.13 still ships.
    """
    import torch

    input_names = ["input_ids", "attention_mask"]
    if with_token_type_ids:
        input_names.append("token_type_ids")
    # padded dummy batch (B=2, T=7): no size-1 or all-ones-mask specialisation gets traced in
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11], [12, 13, 14] + [pad_id] * 4])
    dummy = [ids, (ids != pad_id).long()]
    if with_token_type_ids:
        dummy.append(torch.zeros_like(ids))
    dynamic_axes = {name: {0: "batch_size", 1: "sequence_length"} for name in input_names}
    dynamic_axes[output] = {0: "batch_size"}
    if per_token:
        dynamic_axes[output][1] = "sequence_length"
    # the legacy exporter warns that it is legacy, and the tracer about Python-level checks
    # (XLM-R's padding_idx bound) that are constants for these models
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            _output_adapter(model, output, with_token_type_ids),
            tuple(dummy),
            str(onnx_path),
            input_names=input_names,
            output_names=[output],
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def _torch_reference(model: Any, output: str, with_token_type_ids: bool) -> Reference:
    import torch

    def reference(
        input_ids: np.ndarray, token_type_ids: np.ndarray, attention_mask: np.ndarray
    ) -> np.ndarray:
        kwargs = {
            "input_ids": torch.from_numpy(np.asarray(input_ids, dtype=np.int64)),
            "attention_mask": torch.from_numpy(np.asarray(attention_mask, dtype=np.int64)),
        }
        if with_token_type_ids:
            kwargs["token_type_ids"] = torch.from_numpy(np.asarray(token_type_ids, dtype=np.int64))
        with torch.no_grad():
            out = getattr(model(**kwargs), output)
        return out.numpy().astype(np.float32)

    return reference


_BERT_CLASSES = {
    "token_cls": ("BertForTokenClassification", "logits"),
    "seq_cls": ("BertForSequenceClassification", "logits"),
    "rerank": ("BertForSequenceClassification", "logits"),
    "embedding": ("BertModel", "last_hidden_state"),
}


def build_bert(
    out_dir: Path,
    task: str,
    labels: Sequence[str] = (),
    seed: int = 0,
    family: str = "Bert",
    keep_weights: bool = False,
) -> RefModel:
    """Write a tiny transformers BERT in the ``optimum-cli export onnx`` layout to ``out_dir``.

    ``family="Ernie"`` builds transformers' ERNIE classes instead; ``keep_weights`` keeps
    ``model.safetensors`` (a ``save_pretrained`` directory, the input of ``convert hf``).

    ``task``: ``token_cls``, ``seq_cls``, ``rerank`` (a ``BertForSequenceClassification``
    cross-encoder) or ``embedding`` (``BertModel``, plus sentence-transformers ``modules.json`` /
    ``1_Pooling/config.json`` for mean pooling).
    """
    import torch
    import transformers

    if task not in _BERT_CLASSES:
        raise ValueError(f"unknown bert task {task!r}")
    class_name, output = _BERT_CLASSES[task]
    class_name = class_name.replace("Bert", family)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = bert_vocab()
    vocab_file = out_dir / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = transformers.BertTokenizerFast(
        vocab_file=str(vocab_file), do_lower_case=True, model_max_length=128
    )
    tokenizer.save_pretrained(str(out_dir))

    config_kwargs: dict[str, Any] = {}
    if labels:
        id2label, label2id = _label_maps(labels)
        config_kwargs.update(id2label=id2label, label2id=label2id)
    config = getattr(transformers, f"{family}Config")(
        vocab_size=len(vocab),
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        max_position_embeddings=128,
        type_vocab_size=2,
        pad_token_id=0,
        attn_implementation="eager",  # plain MatMul/Softmax attention in the graph
        **config_kwargs,
    )
    torch.manual_seed(seed)
    model = getattr(transformers, class_name)(config).eval()
    model.save_pretrained(str(out_dir), safe_serialization=True)
    if not keep_weights:  # optimum-cli writes config + tokenizer files + model.onnx only
        (out_dir / "model.safetensors").unlink(missing_ok=True)
    _torch_export(
        model,
        out_dir / "model.onnx",
        output,
        per_token=task in ("token_cls", "embedding"),
        with_token_type_ids=True,
        pad_id=0,
    )

    if task == "embedding":
        _write_sentence_transformers_files(out_dir, HIDDEN)

    return RefModel(
        path=out_dir,
        onnx=out_dir / "model.onnx",
        task=task,
        labels=tuple(labels),
        reference=_torch_reference(model, output, with_token_type_ids=True),
    )


def _write_sentence_transformers_files(out_dir: Path, hidden: int) -> None:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    pooling = {
        "word_embedding_dimension": hidden,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False,
        "include_prompt": True,
    }
    (out_dir / "modules.json").write_text(json.dumps(modules, indent=2) + "\n", encoding="utf-8")
    (out_dir / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 128, "do_lower_case": False}, indent=2) + "\n",
        encoding="utf-8",
    )
    (out_dir / "1_Pooling").mkdir(exist_ok=True)
    (out_dir / "1_Pooling" / "config.json").write_text(
        json.dumps(pooling, indent=2) + "\n", encoding="utf-8"
    )


# --------------------------------------------------------------------------------------------
# XLM-R cross-encoder (bge-reranker shape)
# --------------------------------------------------------------------------------------------

XLMR_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")  # ids 0..4, pad = 1 like XLM-R


def rerank_corpus(n: int = 400, seed: int = 0) -> list[str]:
    """Deterministic mixed English / Chinese sentences to train the tiny tokenizer on."""
    rng = random.Random(seed)
    words = list(_EN_WORDS)
    cjk = list(_CJK[:200])
    lines = []
    for i in range(n):
        if i % 3 == 2:
            line = "".join(rng.choice(cjk) for _ in range(rng.randint(4, 16))) + "。"
        else:
            line = " ".join(rng.choice(words) for _ in range(rng.randint(4, 14)))
            line = line.capitalize() + rng.choice([".", "?", "!", ""])
        if rng.random() < 0.2:
            line += f" {rng.randint(0, 2025)}"
        lines.append(line)
    return lines


def _canonical_unigram_vocab(tok: Any) -> list[tuple[str, float]]:
    """The trained Unigram vocab in an order that does not depend on the run.

    The trainer's multi-threaded EM leaves last-bit noise in the scores, and it appends the
    characters it must keep with scores stepping down by 1e-4 in hash-set order. Round the scores,
    sort by (score, piece), and hand those characters their scores in sorted order, so that every
    build writes the same tokenizer.json.
    """
    trained = json.loads(tok.to_str())["model"]["vocab"]
    n_special = len(XLMR_SPECIALS)
    specials = [(piece, score) for piece, score in trained[:n_special]]
    pieces = [(piece, round(score, 6)) for piece, score in trained[n_special:]]
    char_scores = [score for piece, score in pieces if len(piece) == 1]

    def stepped(score: float) -> bool:  # a neighbour 1e-4 away: one of the appended characters
        return any(abs(abs(score - other) - 1e-4) < 1e-7 for other in char_scores)

    tail = [(piece, score) for piece, score in pieces if len(piece) == 1 and stepped(score)]
    tail_scores = sorted((score for _, score in tail), reverse=True)
    rest = set(pieces) - set(tail)
    tail = list(zip(sorted(piece for piece, _ in tail), tail_scores, strict=True))
    return specials + sorted([*rest, *tail], key=lambda x: (-x[1], x[0]))


def xlmr_tokenizer(vocab_size: int = 600, seed: int = 0) -> Any:
    """A tiny XLM-R-like Unigram ``tokenizers.Tokenizer`` trained in-process."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from tokenizers.processors import TemplateProcessing

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=list(XLMR_SPECIALS),
        unk_token="<unk>",
        show_progress=False,
    )
    tok.train_from_iterator(rerank_corpus(seed=seed), trainer=trainer)
    tok.model = models.Unigram(_canonical_unigram_vocab(tok), unk_id=XLMR_SPECIALS.index("<unk>"))
    for i, name in enumerate(XLMR_SPECIALS):
        if tok.token_to_id(name) != i:
            raise RuntimeError(f"special token {name} got id {tok.token_to_id(name)}, not {i}")
    tok.post_processor = TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    return tok


def build_xlmr_rerank(out_dir: Path, seed: int = 0, keep_weights: bool = False) -> RefModel:
    """Write a tiny ``XLMRobertaForSequenceClassification`` (num_labels=1) cross-encoder.

    The ONNX graph takes ``input_ids`` and ``attention_mask`` only (as optimum exports XLM-R)
    and outputs ``logits`` [B, 1]. Position ids come from ``input_ids != 1`` (the pad id) both in
    the graph and in the reference, so batches must be padded with id 1.
    """
    import torch
    import transformers

    out_dir.mkdir(parents=True, exist_ok=True)
    tok = xlmr_tokenizer(seed=seed)
    fast = transformers.XLMRobertaTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=128,
    )
    fast.save_pretrained(str(out_dir))

    max_len = 128
    config = transformers.XLMRobertaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        max_position_embeddings=max_len + 2,  # positions start at padding_idx + 1 = 2
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        num_labels=1,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    model = transformers.XLMRobertaForSequenceClassification(config).eval()
    model.save_pretrained(str(out_dir), safe_serialization=True)
    if not keep_weights:
        (out_dir / "model.safetensors").unlink(missing_ok=True)
    _torch_export(
        model,
        out_dir / "model.onnx",
        "logits",
        per_token=False,
        with_token_type_ids=False,
        pad_id=1,
    )
    return RefModel(
        path=out_dir,
        onnx=out_dir / "model.onnx",
        task="rerank",
        labels=(),
        reference=_torch_reference(model, "logits", with_token_type_ids=False),
    )


def save_static(model_dir: Path, task: str, out_dir: Path) -> Path:
    """``paddle.jit.save`` the PaddleNLP checkpoint in ``model_dir`` as ``out_dir/inference.*``.

    What a user has after the ERNIE 3.0 guide's ``export_model.py``: the program and its
    parameters, without tokenizer or config files.
    """
    import paddle
    import paddlenlp.transformers as ptf

    model = getattr(ptf, _PADDLE_CLASSES[task]).from_pretrained(str(model_dir))
    model.eval()
    spec = [
        paddle.static.InputSpec([None, None], "int64", name="input_ids"),
        paddle.static.InputSpec([None, None], "int64", name="token_type_ids"),
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    static = paddle.jit.to_static(model, input_spec=spec, full_graph=True)
    paddle.jit.save(static, str(out_dir / "inference"))
    return out_dir
