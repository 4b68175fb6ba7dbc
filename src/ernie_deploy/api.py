"""The Python API: `load(path, ...)` builds the predictor for a model directory or .onnx file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

from ernie_deploy.errors import ConfigError, UnknownTaskError
from ernie_deploy.options import LoadOptions
from ernie_deploy.runtime.checks import check_model
from ernie_deploy.runtime.model_dir import TASKS, ModelConfig, find_model
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
    *,
    options: LoadOptions | None = None,
    **changes: Any,
) -> AnyPredictor:
    """Load a model and return the predictor for its task.

    Args:
        path: a model directory (ours, a PaddleNLP save dir, an optimum export dir), an
            .onnx file (then the tokenizer comes from `tokenizer_dir` or the file's directory),
            or a bundled model's name (`ernie-deploy models`); None: the bundled model for
            `task` (token_cls: "ner-zh", seq_cls: "sentiment-zh").
        task: "token_cls", "seq_cls", "embedding" or "rerank"; None reads it from the
            directory's config (ernie_deploy.json, config.json architectures, ...).
        options: a `LoadOptions` (what every entry point builds); None: the defaults.
        **changes: any `LoadOptions` field by name (device, fp16, labels, tokenizer_dir,
            max_seq_length, batch_size, threads, truncate, strict, top_k, multi_label,
            pooling, normalize, decode, spinning), applied over `options`; see `LoadOptions`
            for each.
            An unknown name is a ConfigError listing the fields.
    """
    if task is not None:
        changes["task"] = task
    opts = (options or LoadOptions()).updated(**changes)
    return _load(path, opts)


def _load(path: str | Path | None, opts: LoadOptions) -> AnyPredictor:
    task = opts.task
    if path is None:
        path = _default_path(task)
    files = find_model(path, opts.tokenizer_dir)
    asked = ModelConfig(
        task=task,
        labels=opts.labels,
        max_seq_length=opts.max_seq_length,
        pooling=opts.pooling,
        normalize=opts.normalize,
        multi_label=opts.multi_label,
        strict_bio=opts.strict,
        decode=opts.decode,
    )
    config = files.config.merged(asked)
    if config.task is None:
        raise UnknownTaskError(
            f"Cannot tell the task of {path}: pass task= (--task_name) one of {', '.join(TASKS)}."
        )
    length = config.max_seq_length
    if length is None:
        length = DEFAULT_MAX_SEQ_LENGTH
    elif opts.max_seq_length is None:
        length = min(length, MAX_DEFAULT_LENGTH)
    tokenizer = Tokenizer.from_dir(files.tokenizer_dir)
    if length <= tokenizer.num_special_tokens(config.task == "rerank"):
        raise ConfigError(f"max_seq_length {length} leaves no room for text: use at least 8.")
    model = load_model(
        files.onnx_path,
        RuntimeConfig(
            device=opts.device,
            intra_op_threads=opts.threads,
            fp16=opts.fp16,
            batch_size=opts.batch_size,  # the TensorRT shape profile covers what the engine sends
            max_seq_length=length,
            allow_spinning=opts.spinning,
        ),
    )
    check_model(model, config, length)
    engine = Engine(model, tokenizer, length, opts.batch_size)
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
            top_k=opts.top_k,
            multi_label=bool(config.multi_label),
            truncate=opts.truncate,
        )
    if config.task == "embedding":
        return Embedder(
            engine,
            pooling=config.pooling,  # None: CLS, and Embedder warns that it guessed
            normalize=True if config.normalize is None else config.normalize,
            truncate=opts.truncate,
            prompts=dict(config.prompts or ()),
            prompt_name=opts.prompt_name or config.default_prompt_name,
        )
    return Reranker(engine, truncate=opts.truncate)


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
