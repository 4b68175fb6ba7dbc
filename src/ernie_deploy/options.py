"""The one options object: what `load()` accepts, built alike by the API, the CLIs, the server and batch jobs.

`LoadOptions` is a frozen dataclass, checked when it is made, so a bad value is refused with
one sentence wherever it came from (a keyword argument, a command-line flag, a TOML key). A new
option is one field here; `load()`, `ernie-deploy serve`'s config file and batch jobs take every
field by name without another edit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from ernie_deploy.errors import ConfigError
from ernie_deploy.runtime.device import parse_device
from ernie_deploy.runtime.model_dir import ModelConfig, validate

# Options that do not change what a model answers (a resumed batch job may change them).
_NOT_RESULTS = ("device", "tokenizer_dir", "batch_size", "threads", "spinning")


@dataclass(frozen=True)
class LoadOptions:
    """How to load a model and run its task head.

    Args:
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
        spinning: whether ONNX Runtime's CPU threads spin between operators; None: ORT's
            default (on) in the library; `ernie-deploy serve` turns it off unless a model's
            config says otherwise (the server's own threads need the cores between runs).
        prompt_name: embedding: the prompt (a named prefix such as E5's "query: ") put before
            every text unless a call names another; None: the model's default_prompt_name.
    """

    task: str | None = None
    device: str = "auto"
    fp16: bool = False
    labels: tuple[str, ...] | None = None
    tokenizer_dir: str | None = None
    max_seq_length: int | None = None
    batch_size: int = 32
    threads: int | None = None
    truncate: bool = False
    strict: bool | None = None
    top_k: int = 1
    multi_label: bool | None = None
    pooling: str | None = None
    normalize: bool | None = None
    decode: str | None = None
    spinning: bool | None = None
    prompt_name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.device, str):
            raise ConfigError(f"device must be a string such as 'cpu', got {self.device!r}.")
        parse_device(self.device)
        for name in ("fp16", "truncate"):
            _flag(name, getattr(self, name), optional=False)
        for name in ("strict", "multi_label", "normalize", "spinning"):
            _flag(name, getattr(self, name), optional=True)
        _count("batch_size", self.batch_size, optional=False)
        _count("top_k", self.top_k, optional=False)
        _count("threads", self.threads, optional=True)
        _count("max_seq_length", self.max_seq_length, optional=True)
        validate(
            ModelConfig(
                task=self.task,
                pooling=self.pooling,
                decode=self.decode,
                max_seq_length=self.max_seq_length,
            ),
            "the options",
        )
        if self.prompt_name is not None and not (
            isinstance(self.prompt_name, str) and self.prompt_name
        ):
            raise ConfigError(f"prompt_name must be a prompt's name, got {self.prompt_name!r}.")
        if self.labels is not None:
            object.__setattr__(self, "labels", parse_labels(self.labels))
        if self.tokenizer_dir is not None:
            if not isinstance(self.tokenizer_dir, (str, Path)):
                raise ConfigError(
                    f"tokenizer_dir must be a directory path, got {self.tokenizer_dir!r}."
                )
            object.__setattr__(self, "tokenizer_dir", str(self.tokenizer_dir))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], where: str) -> LoadOptions:
        """Options from a mapping (a TOML table); unknown keys are refused, naming the known ones."""
        return cls().updated(where=where, **values)

    def updated(self, where: str = "load()", **changes: Any) -> LoadOptions:
        """A copy with `changes`; an unknown name is a ConfigError listing every option."""
        unknown = sorted(set(changes) - set(OPTION_NAMES))
        if unknown:
            raise ConfigError(
                f"{where} got unknown option(s) {', '.join(unknown)}: use "
                f"{', '.join(OPTION_NAMES)}."
            )
        return replace(self, **changes) if changes else self

    def results_settings(self) -> dict[str, Any]:
        """The options that change answers, as JSON values (what a resumed batch job must keep)."""
        settings = {k: v for k, v in asdict(self).items() if k not in _NOT_RESULTS}
        if settings["labels"] is not None:
            settings["labels"] = list(settings["labels"])
        return settings


OPTION_NAMES = tuple(f.name for f in fields(LoadOptions))


def parse_labels(value: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """--labels: "O,B-PER,I-PER", a file with one label per line, or a list."""
    if value is None:
        return None
    if not isinstance(value, (str, Iterable)) or isinstance(value, (bytes, Mapping)):
        raise ConfigError(
            f"labels must be comma-separated names (O,B-PER,I-PER), a label file or a list of "
            f"names, got {value!r}."
        )
    if not isinstance(value, str):
        labels = tuple(str(v).strip() for v in value)
    elif Path(value).is_file():
        try:
            lines = Path(value).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"Cannot read the label file {value} ({exc}): save it as UTF-8, one label per line."
            ) from exc
        labels = tuple(line.strip() for line in lines if line.strip())
    elif "," not in value and _looks_like_a_file(value):
        raise ConfigError(
            f"The label file {value} does not exist: pass its path, or the labels themselves "
            "separated by commas (O,B-PER,I-PER)."
        )
    else:
        labels = tuple(part.strip() for part in value.split(","))
    if not labels or not all(labels):
        raise ConfigError(
            f"--labels {value!r} names an empty label: give comma-separated names "
            "(O,B-PER,I-PER) or a file with one label per line."
        )
    if len(set(labels)) != len(labels):
        raise ConfigError(f"--labels {value!r} repeats a label: each label must be unique.")
    return labels


def _looks_like_a_file(value: str) -> bool:
    """A path separator or a file suffix (labels.txt): no one names a single label like that."""
    return "/" in value or "\\" in value or Path(value).suffix.lower() in (".txt", ".json", ".csv")


def _flag(name: str, value: object, optional: bool) -> None:
    if not (isinstance(value, bool) or (optional and value is None)):
        raise ConfigError(f"{name} must be true or false, got {value!r}.")


def _count(name: str, value: object, optional: bool) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
