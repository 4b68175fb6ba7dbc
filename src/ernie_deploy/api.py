"""The Python API: `load(path, ...)` builds the predictor for a model directory or .onnx file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Union

from ernie_deploy.errors import ConfigError, UnknownTaskError
from ernie_deploy.runtime.model_dir import TASKS, ModelConfig, find_model, validate
from ernie_deploy.runtime.session import RuntimeConfig, load_model
from ernie_deploy.tasks.embedding import Embedder
from ernie_deploy.tasks.engine import Engine
from ernie_deploy.tasks.rerank import Reranker
from ernie_deploy.tasks.seq_cls import SequenceClassifier
from ernie_deploy.tasks.token_cls import TokenClassifier
from ernie_deploy.tasks.tokenization import Tokenizer
from ernie_deploy.tasks.viterbi import Transitions

AnyPredictor = Union[TokenClassifier, SequenceClassifier, Embedder, Reranker]

DEFAULT_MAX_SEQ_LENGTH = 128
MAX_DEFAULT_LENGTH = 512


def load(
    path: str | Path | None = None,
    task: str | None = None,
    device: str = "auto",
    fp16: bool = False,
    *,
    labels: Sequence[str] | None = None,
    tokenizer_dir: str | Path | None = None,
    max_seq_length: int | None = None,
    batch_size: int = 32,
    threads: int | None = None,
    truncate: bool = False,
    strict: bool | None = None,
    top_k: int = 1,
    multi_label: bool | None = None,
    pooling: str | None = None,
    normalize: bool | None = None,
    decode: str | None = None,
) -> AnyPredictor:
    """Load a model and return the predictor for its task.

    Args:
        path: a model directory (ours, a PaddleNLP save dir, an optimum export dir), an
            .onnx file (then the tokenizer comes from `tokenizer_dir` or the file's directory),
            or a bundled model's name (`ernie-deploy models`); None: the bundled model for
            `task` (token_cls: "ner-zh", seq_cls: "sentiment-zh").
        task: "token_cls", "seq_cls", "embedding" or "rerank"; None reads it from the
            directory's config (ernie_deploy.json, config.json architectures, ...).
        device: "auto", "cpu", "cuda[:N]" or "tensorrt[:N]".
        fp16: use fp16 where supported (CUDA, compute capability >= 7.0); else fp32.
        labels: class / tag names in output order; overrides the directory's labels.
        tokenizer_dir: where tokenizer.json or vocab.txt is, when not beside the model.
        max_seq_length: tokens per sequence with special tokens (NER windows longer texts);
            None reads it from the directory, capped at 512.
        batch_size: sequences per session.run.
        threads: intra-op threads; None sizes them from the CPUs this process may use.
        truncate: seq_cls / embedding / rerank cut over-long texts instead of raising.
        strict: token_cls drops I-X tags that do not continue an X entity.
        top_k: seq_cls lists the k best labels.
        multi_label: seq_cls scores labels with independent sigmoids.
        pooling: embedding pooling, "cls" or "mean".
        normalize: L2-normalise embeddings.
        decode: token_cls tag decoding, "argmax" or "viterbi" (the best tag sequence the
            BIO/BIOES rules allow, plus crf_transitions.npy when the directory has one); None
            reads ernie_deploy.json, else "viterbi" if the directory has CRF transitions,
            else "argmax".
    """
    if path is None:
        path = _default_path(task)
    files = find_model(path, tokenizer_dir)
    asked = ModelConfig(
        task=task,
        labels=tuple(labels) if labels is not None else None,
        max_seq_length=max_seq_length,
        pooling=pooling,
        normalize=normalize,
        multi_label=multi_label,
        strict_bio=strict,
        decode=decode,
    )
    config = files.config.merged(validate(asked, "the arguments"))
    if config.task is None:
        raise UnknownTaskError(
            f"Cannot tell the task of {path}: pass task= (--task_name) one of {', '.join(TASKS)}."
        )
    length = config.max_seq_length
    if length is None:
        length = DEFAULT_MAX_SEQ_LENGTH
    elif max_seq_length is None:
        length = min(length, MAX_DEFAULT_LENGTH)
    tokenizer = Tokenizer.from_dir(files.tokenizer_dir)
    if length <= tokenizer.num_special_tokens(config.task == "rerank"):
        raise ConfigError(f"max_seq_length {length} leaves no room for text: use at least 8.")
    model = load_model(
        files.onnx_path, RuntimeConfig(device=device, intra_op_threads=threads, fp16=fp16)
    )
    engine = Engine(model, tokenizer, length, batch_size)
    if config.task == "token_cls":
        if not config.labels:
            raise ConfigError(
                f"{path} names no token labels: pass labels= (e.g. O, B-PER, I-PER, ...) or "
                "write them into ernie_deploy.json."
            )
        transitions = Transitions.from_dir(files.onnx_path.parent)
        return TokenClassifier(
            engine,
            config.labels,
            strict=bool(config.strict_bio),
            decode=config.decode or ("argmax" if transitions is None else "viterbi"),
            transitions=transitions,
        )
    if config.task == "seq_cls":
        return SequenceClassifier(
            engine,
            config.labels or _generic_labels(model.output_shapes, path),
            top_k=top_k,
            multi_label=bool(config.multi_label),
            truncate=truncate,
        )
    if config.task == "embedding":
        return Embedder(
            engine,
            pooling=config.pooling,  # None: CLS, and Embedder warns that it guessed
            normalize=True if config.normalize is None else config.normalize,
            truncate=truncate,
        )
    return Reranker(engine, truncate=truncate)


def _default_path(task: str | None) -> Path:
    from ernie_deploy.runtime.bundled import DEFAULTS, default_model

    found = default_model(task) if task else None
    if found is None:
        tasks = ", ".join(f"{t} ({name})" for t, name in DEFAULTS.items())
        raise ConfigError(
            f"No model given and no bundled model for task {task!r}: pass a model path, or "
            f"task= one of the tasks with a bundled model: {tasks}."
        )
    return found


def _generic_labels(shapes: dict[str, list[object]], path: str | Path) -> tuple[str, ...]:
    sizes = [s[-1] for s in shapes.values() if len(s) == 2 and isinstance(s[-1], int)]
    if not sizes:
        raise ConfigError(
            f"{path} names no labels and its output size is symbolic: pass labels= or write "
            "them into ernie_deploy.json."
        )
    return tuple(f"LABEL_{i}" for i in range(int(sizes[0])))  # type: ignore[call-overload]
