"""`convert hf`: a local Hugging Face model directory → a verified ONNX model directory.

The graph is written by optimum's ONNX exporter (`optimum.exporters.onnx.main_export`, the
`optimum-cli export onnx` code path), offline (`local_files_only`). transformers' ERNIE is not in
optimum's table; it is exported with optimum's BERT config, whose inputs it shares. The reference
is the same weights in PyTorch eager mode, run on our probe batch.

Tasks: token-classification (token_cls), text-classification (seq_cls; rerank for a
cross-encoder) and feature-extraction (embedding: last_hidden_state, pooled by the loader from
sentence-transformers' 1_Pooling/config.json when the source has one).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ernie_deploy.convert.common import (
    ConvertReport,
    check_labels,
    check_task,
    file_mb,
    graph_opset,
    parse_labels,
    require,
)
from ernie_deploy.convert.hf_mean_head import (
    append_mean_head,
    check_mean_head,
    classifier_pooling,
    mean_pooled_logits,
)
from ernie_deploy.convert.outdir import check_loads, check_output, copy_model_files, staged_dir
from ernie_deploy.convert.verify import (
    DEFAULT_TOLERANCE,
    check_tolerance,
    compare,
    probe_features,
    run_onnx,
)
from ernie_deploy.errors import ModelLoadError, ModelNotFoundError
from ernie_deploy.runtime.model_dir import ModelConfig, read_config, validate, write_config
from ernie_deploy.tasks.tokenization import Tokenizer

# our task -> (optimum task, transformers Auto class, output read from the model)
HF_TASKS = {
    "token_cls": ("token-classification", "AutoModelForTokenClassification", "logits"),
    "seq_cls": ("text-classification", "AutoModelForSequenceClassification", "logits"),
    "rerank": ("text-classification", "AutoModelForSequenceClassification", "logits"),
    "embedding": ("feature-extraction", "AutoModel", "last_hidden_state"),
}
TASK_ALIASES = {
    "token-classification": "token_cls",
    "text-classification": "seq_cls",
    "feature-extraction": "embedding",
    "sentence-similarity": "embedding",
}
_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
# model types optimum has no ONNX config for, exported with its BERT config (same inputs)
_BERT_LIKE = ("ernie",)


def convert_hf(
    src: str | Path,
    out: str | Path,
    *,
    task: str | None = None,
    labels: str | Sequence[str] | None = None,
    opset: int | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    max_seq_length: int | None = None,
    overwrite: bool = False,
) -> ConvertReport:
    """Export with optimum, verify against PyTorch, and write OUT whole (or nothing).

    Args:
        src: a local transformers directory (config.json + model.safetensors / pytorch_model.bin
            + tokenizer files); sentence-transformers directories work too.
        out: the model directory to write.
        task: token_cls, seq_cls, embedding, rerank (or the optimum names token-classification,
            text-classification, feature-extraction); None reads config.json's architectures.
        labels: override the config's id2label (comma-separated, a file, or a list).
        opset: ONNX opset; None takes optimum's default for the architecture.
        tolerance: largest max-abs-diff of the outputs accepted.
        max_seq_length: recorded in the config (None: the loader's default).
        overwrite: replace an existing OUT (only once the new one is verified).
    """
    check_tolerance(tolerance)
    validate(ModelConfig(max_seq_length=max_seq_length), "the arguments")
    out = check_output(out, overwrite, [src])
    src = Path(src).expanduser()
    if not (src / "config.json").is_file() or not any((src / w).is_file() for w in _WEIGHTS):
        raise ModelNotFoundError(
            f"{src} is not a Hugging Face model directory: it needs config.json and "
            "model.safetensors or pytorch_model.bin (save it with save_pretrained)."
        )
    require("torch", "hf")
    transformers = require("transformers", "hf")
    exporters = require("optimum.exporters.onnx", "hf")
    src_config, _ = read_config(src)
    final_task = check_task(TASK_ALIASES.get(task, task) if task else src_config.task, src)
    optimum_task, auto_class, output = HF_TASKS[final_task]
    model = _load_torch(transformers, auto_class, src)
    mean_head = (
        final_task in ("seq_cls", "rerank") and classifier_pooling(model.config, src) == "mean"
    )
    if mean_head:  # hf_mean_head.py: the encoder is exported, the head appended to its graph
        check_mean_head(model, src)
        optimum_task = HF_TASKS["embedding"][0]
    asked_labels = parse_labels(labels)
    with staged_dir(out, overwrite) as stage:
        copy_model_files(src, stage)
        _export(exporters, src, stage, optimum_task, opset, model)
        if mean_head:
            append_mean_head(stage / "model.onnx", model, output)
        tokenizer = Tokenizer.from_dir(stage)
        features = probe_features(
            tokenizer, pairs=final_task == "rerank", max_seq_length=max_seq_length or 128
        )
        onnx_model, ort_out = run_onnx(stage / "model.onnx", features)
        if output not in ort_out:
            raise ModelLoadError(
                f"The exported graph has outputs {', '.join(ort_out)}, not {output!r}: "
                "pass the right --task."
            )
        reference = _torch_run(model, output, features, onnx_model.features, mean_head)
        final_labels = check_labels(
            final_task, asked_labels or _hf_labels(src_config, final_task), [reference], src
        )
        parity = compare(
            {output: reference},
            {output: ort_out[output]},
            features["attention_mask"],
            classify=final_task != "embedding",
            tolerance=tolerance,
            labels=("ONNX Runtime", "PyTorch"),
        )
        parity.require("raise --tolerance only if the difference is expected, else try --opset.")
        write_config(
            stage,
            ModelConfig(task=final_task, labels=final_labels, max_seq_length=max_seq_length),
        )
        check_loads(stage, out, max_seq_length=max_seq_length)
        size = file_mb(stage / "model.onnx")
        written = graph_opset(stage / "model.onnx")
    source = f"transformers {type(model).__name__}{' (mean-pooled head)' if mean_head else ''}"
    return ConvertReport(
        out, f"{source} {src}", final_task, final_labels,
        written, parity, size, asked_opset=opset,
    )  # fmt: skip


def _hf_labels(config: ModelConfig, task: str) -> tuple[str, ...] | None:
    """config.json's id2label, unless it is transformers' placeholder LABEL_0, LABEL_1, ..."""
    labels = config.labels
    if labels and all(name == f"LABEL_{i}" for i, name in enumerate(labels)):
        return labels if task == "seq_cls" else None
    return labels


def _load_torch(transformers: Any, auto_class: str, src: Path) -> Any:
    cls = getattr(transformers, auto_class)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = cls.from_pretrained(
                str(src), local_files_only=True, attn_implementation="eager"
            )
    except Exception as exc:  # transformers raises many types for a bad directory
        raise ModelLoadError(
            f"transformers cannot load {src} as {auto_class} ({str(exc).strip()[:300]}): "
            "check config.json and the weights, or pass the right --task."
        ) from exc
    return model.eval()


def _export(
    exporters: Any, src: Path, stage: Path, optimum_task: str, opset: int | None, model: Any
) -> None:
    """optimum's main_export into a scratch dir; keep its graph (and its tokenizer.json)."""
    custom = None
    if model.config.model_type in _BERT_LIKE:
        from optimum.exporters.onnx.model_configs import BertOnnxConfig

        custom = {"model": BertOnnxConfig(model.config, task=optimum_task)}
    scratch = Path(tempfile.mkdtemp(prefix="ernie_deploy_optimum_"))
    try:
        with warnings.catch_warnings(), _native_stdout_to(scratch / "export.log"):
            warnings.simplefilter("ignore")
            exporters.main_export(
                str(src),
                output=str(scratch),
                task=optimum_task,
                opset=opset,
                device="cpu",
                do_validation=False,  # we verify ourselves, on padded mixed-length batches
                local_files_only=True,
                library_name="transformers",
                custom_onnx_configs=custom,
            )
        if not (scratch / "model.onnx").is_file():
            raise ModelLoadError(f"optimum wrote no model.onnx for {src}: read its log above.")
        for item in scratch.iterdir():
            if item.name.startswith("model.onnx") or not (stage / item.name).exists():
                shutil.move(str(item), stage / item.name)
    except ModelLoadError:
        raise
    except Exception as exc:  # optimum / torch.onnx raise many types
        raise ModelLoadError(
            f"optimum could not export {src} ({str(exc).strip()[:300]}): try another --opset "
            "or check that transformers can load the model."
        ) from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextmanager
def _native_stdout_to(log: Path) -> Iterator[None]:
    """Send file descriptor 1 to `log` while the exporter runs: torch.onnx prints its whole IR
    graph there from C++ when an export fails (140 lines before our one-sentence error).
    Nothing of ours is on stdout meanwhile; where fd 1 cannot be redirected, it is left alone."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:
        yield
        return
    try:
        with log.open("wb") as sink:
            os.dup2(sink.fileno(), 1)
            try:
                yield
            finally:
                sys.stdout.flush()
                os.dup2(saved, 1)
    finally:
        os.close(saved)


def _torch_run(
    model: Any,
    output: str,
    features: dict[str, np.ndarray],
    graph_features: frozenset[str],
    mean_head: bool = False,
) -> np.ndarray:
    import torch

    kwargs = {
        name: torch.from_numpy(np.ascontiguousarray(features[name]))
        for name in ("input_ids", "attention_mask", "token_type_ids", "position_ids")
        if name in graph_features
    }
    with torch.no_grad():
        if mean_head:
            result = mean_pooled_logits(model, kwargs["input_ids"], kwargs["attention_mask"])
        else:
            result = getattr(model(**kwargs), output)
    return np.asarray(result.numpy(), dtype=np.float32)
