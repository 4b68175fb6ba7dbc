"""Model-directory loading: find the ONNX graph, the tokenizer and the config in the layouts users have.

Layouts loaded as they are:
- our own directory: `model.onnx`, tokenizer files and `ernie_deploy.json` (CONFIG_NAME);
- a PaddleNLP save dir: `vocab.txt`, `tokenizer_config.json`, `config.json` or
  `model_config.json`, plus the `.onnx` written by paddle2onnx;
- an optimum export dir: `model.onnx`, `config.json` (with id2label), `tokenizer.json`,
  and for sentence-transformers models `1_Pooling/config.json`, `modules.json` and
  `sentence_bert_config.json` (its `max_seq_length`);
- a bare `.onnx` file plus a tokenizer directory (infer.py's --model_path + --model_name_or_path).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ernie_deploy.errors import (
    ConfigError,
    ModelNotFoundError,
    TokenizerNotFoundError,
    UnknownTaskError,
)

CONFIG_NAME = "ernie_deploy.json"
TASKS = ("token_cls", "seq_cls", "embedding", "rerank")
POOLINGS = ("cls", "mean")
DECODES = ("argmax", "viterbi")  # token_cls tag decoding; the same tuple as tasks.viterbi.DECODES
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")
_ONNX_NAMES = ("model.onnx", "inference.onnx")
_ARCH_TASKS = {
    "ForTokenClassification": "token_cls",
    "ForSequenceClassification": "seq_cls",
    "Model": "embedding",
}


@dataclass(frozen=True)
class ModelConfig:
    """What a model directory says about itself; written as CONFIG_NAME by our tools.

    Args:
        task: one of TASKS.
        labels: class names in output order (token_cls / seq_cls; two-class rerank).
        max_seq_length: tokens per sequence including special tokens.
        pooling: "cls" or "mean" (embedding).
        normalize: L2-normalise embeddings.
        multi_label: seq_cls scores each label with a sigmoid instead of one softmax.
        strict_bio: token_cls drops I-X tags that do not continue an X entity.
        decode: token_cls tag decoding, "argmax" (each word's best tag) or "viterbi" (the
            best tag sequence the BIO / BIOES rules allow).
        prompts: embedding: named prefixes put before a text (E5's "query: " / "passage: "),
            as sentence-transformers' config_sentence_transformers.json names them.
        default_prompt_name: embedding: the prompt used when a call names none.
    """

    task: str | None = None
    labels: tuple[str, ...] | None = None
    max_seq_length: int | None = None
    pooling: str | None = None
    normalize: bool | None = None
    multi_label: bool | None = None
    strict_bio: bool | None = None
    decode: str | None = None
    prompts: tuple[tuple[str, str], ...] | None = None
    default_prompt_name: str | None = None

    def merged(self, other: ModelConfig) -> ModelConfig:
        """Fields set in `other` win over ours."""
        values = {k: v for k, v in asdict(other).items() if v is not None}
        return ModelConfig(**{**asdict(self), **values})

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if v is not None}
        if "labels" in data:
            data["labels"] = list(data["labels"])
        if "prompts" in data:
            data["prompts"] = dict(data["prompts"])
        return data


@dataclass(frozen=True)
class ModelFiles:
    """Where a model's parts are, and the config read from its directory."""

    onnx_path: Path
    tokenizer_dir: Path
    config: ModelConfig
    sources: tuple[str, ...] = field(default=())


def find_model(
    path: str | Path, tokenizer_dir: str | Path | None = None, *, need_tokenizer: bool = True
) -> ModelFiles:
    """Resolve a model directory, a bare .onnx file (plus optional tokenizer directory), or the
    name of a bundled model (`ernie-deploy models`); an existing path wins over a name.

    `need_tokenizer=False` (inspect): a missing tokenizer is left for the caller to report, and
    `tokenizer_dir` is the folder where one was looked for."""
    path = Path(path).expanduser()
    if not path.exists():
        from ernie_deploy.runtime.bundled import bundled_names, bundled_path

        bundled = bundled_path(str(path))
        if bundled is None:
            names = ", ".join(bundled_names()) or "none installed"
            raise ModelNotFoundError(
                f"Model path {path} does not exist: pass an .onnx file, a model directory, "
                f"or a bundled model name ({names})."
            )
        path = bundled
    if path.is_dir():
        onnx_path = _find_onnx(path)
        model_dir = path
    else:
        if path.suffix != ".onnx":
            raise ModelNotFoundError(
                f"{path} is not an .onnx file: pass the .onnx file written by paddle2onnx or "
                "the exporter, or its directory."
            )
        onnx_path, model_dir = path, path.parent
    try:
        tok_dir = _find_tokenizer(model_dir, tokenizer_dir)
    except TokenizerNotFoundError:
        if need_tokenizer:
            raise
        tok_dir = Path(tokenizer_dir).expanduser() if tokenizer_dir else model_dir
    config, sources = read_config(model_dir)
    if tok_dir != model_dir and tok_dir.is_dir():
        tok_config, tok_sources = read_config(tok_dir)
        config, sources = tok_config.merged(config), tok_sources + sources
    return ModelFiles(onnx_path, tok_dir, config, sources)


def _find_onnx(directory: Path) -> Path:
    for name in _ONNX_NAMES:
        if (directory / name).is_file():
            return directory / name
    found = sorted(directory.glob("*.onnx"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise ModelNotFoundError(
            f"No .onnx file in {directory}: convert the model first (paddle2onnx, "
            "`optimum-cli export onnx` or `ernie-deploy convert`)."
        )
    names = ", ".join(p.name for p in found)
    raise ModelNotFoundError(
        f"{directory} holds several .onnx files ({names}): pass the one to use as the model path."
    )


def _find_tokenizer(model_dir: Path, tokenizer_dir: str | Path | None) -> Path:
    candidates = [Path(tokenizer_dir).expanduser()] if tokenizer_dir else [model_dir]
    for directory in candidates:
        if directory.is_dir() and any((directory / n).is_file() for n in TOKENIZER_FILES):
            return directory
    where = candidates[0]
    flags = "--tokenizer; infer.py: --model_name_or_path; Python: tokenizer_dir="
    hint = (
        f"name a directory that has one ({flags})"
        if tokenizer_dir
        else f"copy the tokenizer files beside the model, or name their directory ({flags})"
    )
    if tokenizer_dir and not where.exists():
        raise TokenizerNotFoundError(
            f"Tokenizer directory {where} does not exist (model hubs are not reached): {hint}."
        )
    raise TokenizerNotFoundError(f"No tokenizer.json or vocab.txt in {where}: {hint}.")


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"Cannot read {path} ({exc}): fix or delete the file.") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a JSON object: fix or delete the file.")
    return data


def read_config(directory: Path) -> tuple[ModelConfig, tuple[str, ...]]:
    """Read every config file a known layout has; later (more specific) sources win."""
    config = ModelConfig()
    sources: list[str] = []
    for name, reader in (
        ("model_config.json", _from_paddle_model_config),
        ("config.json", _from_hf_config),
        ("tokenizer_config.json", _from_tokenizer_config),
        ("sentence_bert_config.json", _from_st_config),
        ("config_sentence_transformers.json", _from_st_prompts),
        ("1_Pooling/config.json", _from_st_pooling),
        ("modules.json", _from_st_modules),
        ("labels.txt", _from_label_file),
        ("label.txt", _from_label_file),
        (CONFIG_NAME, _from_own_config),
    ):
        file = directory / name
        if file.is_file():
            config = config.merged(reader(file))
            sources.append(name)
    return config, tuple(sources)


def _task_from_arch(arch: str) -> str | None:
    for suffix, task in _ARCH_TASKS.items():
        if arch.endswith(suffix):
            return task
    return None


def _id2label(raw: Any) -> tuple[str, ...] | None:
    if not isinstance(raw, dict) or not raw:
        return None
    try:
        items = sorted((int(k), str(v)) for k, v in raw.items())
    except ValueError:
        return None
    if [i for i, _ in items] != list(range(len(items))):
        return None
    return tuple(label for _, label in items)


def _from_hf_config(file: Path) -> ModelConfig:
    data = _load_json(file)
    archs = data.get("architectures") or []
    task = _task_from_arch(str(archs[0])) if archs else None
    labels = _id2label(data.get("id2label"))
    if task == "seq_cls" and labels is not None and len(labels) == 1:
        task = "rerank"  # one-logit sequence classifiers are cross-encoders (bge-reranker)
    if task == "seq_cls" and data.get("problem_type") == "multi_label_classification":
        return ModelConfig(task=task, labels=labels, multi_label=True)
    if task == "token_cls" or task == "seq_cls":
        return ModelConfig(task=task, labels=labels)
    return ModelConfig(task=task)


def _from_paddle_model_config(file: Path) -> ModelConfig:
    data = _load_json(file)
    init_class = str(data.get("init_class") or "")
    return ModelConfig(task=_task_from_arch(init_class) if init_class else None)


def _from_tokenizer_config(file: Path) -> ModelConfig:
    value = _load_json(file).get("model_max_length")
    if isinstance(value, int) and 0 < value <= 8192:
        return ModelConfig(max_seq_length=value)
    return ModelConfig()


def _from_st_config(file: Path) -> ModelConfig:
    """sentence-transformers' own sequence limit (all-MiniLM: 256, below its tokenizer's 512)."""
    value = _load_json(file).get("max_seq_length")
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 8192:
        return ModelConfig(max_seq_length=value)
    return ModelConfig()


def _from_st_prompts(file: Path) -> ModelConfig:
    """sentence-transformers' named prompts (`prompts`, `default_prompt_name`)."""
    data = _load_json(file)
    return ModelConfig(
        prompts=_prompts(data.get("prompts"), file),
        default_prompt_name=_prompt_name(data.get("default_prompt_name"), file),
    )


def _prompts(raw: Any, file: Path) -> tuple[tuple[str, str], ...] | None:
    if raw is None or raw == {}:
        return None
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in raw.items()
    ):
        raise ConfigError(
            f'"prompts" in {file} must map prompt names to prefixes, e.g. {{"query": "query: "}}.'
        )
    return tuple(raw.items())


def _prompt_name(raw: Any, file: Path) -> str | None:
    if raw is None or (isinstance(raw, str) and raw):
        return raw
    raise ConfigError(f'"default_prompt_name" in {file} must be a prompt name or null.')


def _from_st_pooling(file: Path) -> ModelConfig:
    data = _load_json(file)
    if data.get("pooling_mode_cls_token"):
        return ModelConfig(task="embedding", pooling="cls")
    if data.get("pooling_mode_mean_tokens"):
        return ModelConfig(task="embedding", pooling="mean")
    modes = [k for k, v in data.items() if k.startswith("pooling_mode") and v]
    raise ConfigError(
        f"{file} asks for pooling {', '.join(modes) or 'none'}: only CLS and mean pooling "
        f'are supported; set "pooling" to one of {", ".join(POOLINGS)} in {CONFIG_NAME}.'
    )


def _from_st_modules(file: Path) -> ModelConfig:
    try:
        modules = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"Cannot read {file} ({exc}): fix or delete the file.") from exc
    types = {str(m.get("type", "")) for m in modules if isinstance(m, dict)}
    return ModelConfig(normalize=any(t.endswith("Normalize") for t in types))


def _from_label_file(file: Path) -> ModelConfig:
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"Cannot read {file} ({exc}): save it as UTF-8, one label per line."
        ) from exc
    labels = tuple(line.strip() for line in lines if line.strip())
    return ModelConfig(labels=labels or None)


def _from_own_config(file: Path) -> ModelConfig:
    data = _load_json(file)
    known = set(ModelConfig.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"{file} has unknown keys {', '.join(unknown)}: the keys are {', '.join(sorted(known))}."
        )
    if "labels" in data:
        labels = data["labels"]
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise ConfigError(f'"labels" in {file} must be a list of strings.')
        data["labels"] = tuple(labels)
    if "prompts" in data:
        data["prompts"] = _prompts(data["prompts"], file)
    if "default_prompt_name" in data:
        data["default_prompt_name"] = _prompt_name(data["default_prompt_name"], file)
    return validate(ModelConfig(**data), str(file))


def validate(config: ModelConfig, where: str) -> ModelConfig:
    """Check each value's type, and values that have a fixed set of choices; return the config
    unchanged. A JSON "false" (a string) is refused, never read as true."""
    for name in ("normalize", "multi_label", "strict_bio"):
        value = getattr(config, name)
        if value is not None and not isinstance(value, bool):
            raise ConfigError(f"{name} in {where} must be true or false, got {value!r}.")
    for name in ("task", "pooling", "decode"):
        value = getattr(config, name)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{name} in {where} must be a string, got {value!r}.")
    length = config.max_seq_length
    if length is not None and (isinstance(length, bool) or not isinstance(length, int)):
        raise ConfigError(f"max_seq_length in {where} must be a whole number, got {length!r}.")
    if config.task is not None and config.task not in TASKS:
        raise UnknownTaskError(
            f"Unknown task {config.task!r} in {where}: use one of {', '.join(TASKS)}."
        )
    if config.pooling is not None and config.pooling not in POOLINGS:
        raise ConfigError(
            f"Unknown pooling {config.pooling!r} in {where}: use one of {', '.join(POOLINGS)}."
        )
    if config.decode is not None and config.decode not in DECODES:
        raise ConfigError(
            f"Unknown decode {config.decode!r} in {where}: use one of {', '.join(DECODES)}."
        )
    if config.max_seq_length is not None and config.max_seq_length < 4:
        raise ConfigError(f"max_seq_length in {where} must be at least 4 tokens.")
    return config


def write_config(directory: str | Path, config: ModelConfig) -> Path:
    """Write CONFIG_NAME into a model directory (used by the conversion tools)."""
    path = Path(directory) / CONFIG_NAME
    path.write_text(json.dumps(config.to_json(), ensure_ascii=False, indent=2) + "\n", "utf-8")
    return path
