"""The serve layer's configuration: server limits (ServeSettings), the models to load, TOML files.

A config file lists models and limits (every key optional; command-line values win)::

    host = "127.0.0.1"
    port = 8000
    max_batch_tokens = 8192
    max_wait_ms = 5

    [models]
    ner = "ner-zh"                       # a path, or a bundled model's name

    [models.emb]
    path = "/models/bge-m3-onnx"
    task = "embedding"
    device = "cuda:0"
    fp16 = true
    pooling = "mean"                     # any load() option: labels, decode, strict, ...
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ernie_deploy.errors import ConfigError, MissingDependencyError
from ernie_deploy.options import OPTION_NAMES, LoadOptions

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MODEL_KEYS = ("path", *OPTION_NAMES)


@dataclass(frozen=True)
class ModelSpec:
    """One model to serve.

    Args:
        name: the name requests use (`model` field, `/models/{name}`); letters, digits, `._-`.
        path: a model directory, an .onnx file or a bundled model's name (`ernie-deploy models`).
        options: how to load it: every `LoadOptions` field (task, device, fp16, labels, decode,
            strict, pooling, normalize, max_seq_length, threads, ...), settable per model in
            the config file's `[models.NAME]` table.
    """

    name: str
    path: str
    options: LoadOptions = field(default_factory=LoadOptions)

    def __post_init__(self) -> None:
        check_name(self.name)


@dataclass(frozen=True)
class ServeSettings:
    """Limits and options of the HTTP server (one object for the whole serve layer).

    Args:
        host: address to bind; 127.0.0.1 unless told otherwise.
        port: TCP port.
        api_key: when set, every route but /health needs `Authorization: Bearer KEY`.
        public_docs: serve /docs, /redoc and /openapi.json without the key and list the model
            names in /health; None (the default) means open without an api_key, closed with one.
        max_batch_tokens: a batch holds at most this many padded tokens (rows x longest row);
            a single row longer than that still runs, alone.
        max_batch_size: rows (sequences) per batch.
        max_wait_ms: how long the first waiting request may be held for others to join it,
            while other requests admitted for the model are still on their way (tokenizing, or
            waiting for a worker thread); a lone request is not held.
        hold_for_company: hold the first waiting request `max_wait_ms` even when no other
            request is on its way (the behaviour before issue 13; costs a lone request that
            long, see benchmarks/RESULTS.md).
        max_padding: a batch is cut where its padded tokens would pass this many times its
            real tokens (rows that arrive together span many lengths); at least 1. 1.1
            (smaller, tighter batches) beat 1.5 by 1.08-2x in texts/s at 64 clients on
            MiniLM and sentiment-zh (benchmarks/RESULTS.md).
        max_queue: requests per model waiting or running; more are answered 429 at once.
        max_body_bytes: request bodies above this size are answered 413.
        max_texts: texts (or documents) per request.
        max_chars: characters per text; NER windows long texts up to it, other tasks cut texts
            to it only when the request says `"truncate": true`.
        max_request_chars: characters per request, all its texts together (bounds the work and
            the answer one request may ask for).
        truncate: cut over-long texts when a request does not say (its `truncate` field wins);
            False answers them 422.
        workers: threads per model that tokenize and post-process its requests (inference has
            one more thread per model). Keep it at least max_batch_size: a batch waits (up to
            max_wait_ms) for admitted requests, and those queued behind busy workers come late.
        graceful_timeout_s: on SIGTERM, how long the requests in flight may take before being
            cut off (their queued batches are dropped) and the server exits.
        playground: serve the playground page at `GET /`; None (the default) serves it only
            when `host` is a loopback address (127.0.0.1, localhost, ::1).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = field(default=None, repr=False)
    public_docs: bool | None = None
    max_batch_tokens: int = 16384
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_padding: float = 1.1
    hold_for_company: bool = False
    max_queue: int = 256
    max_body_bytes: int = 4 * 1024 * 1024
    max_texts: int = 256
    max_chars: int = 20_000
    max_request_chars: int = 100_000
    truncate: bool = False
    workers: int = 32
    graceful_timeout_s: float = 30.0
    playground: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host.strip():
            raise ConfigError(f"host must be an address such as 127.0.0.1, got {self.host!r}.")
        port = self.port
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(f"port must be a whole number from 0 to 65535, got {port!r}.")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("api_key is empty: pass a non-empty key or none at all.")
        positive = (
            "max_batch_tokens",
            "max_batch_size",
            "max_queue",
            "max_body_bytes",
            "max_texts",
            "max_chars",
            "max_request_chars",
            "workers",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
        for name in ("max_wait_ms", "graceful_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"{name} must be a number of at least 0, got {value!r}.")
        if not isinstance(self.hold_for_company, bool):
            raise ConfigError(
                f"hold_for_company must be true or false, got {self.hold_for_company!r}."
            )
        if not isinstance(self.truncate, bool):
            raise ConfigError(f"truncate must be true or false, got {self.truncate!r}.")
        if self.public_docs is not None and not isinstance(self.public_docs, bool):
            raise ConfigError(f"public_docs must be true or false, got {self.public_docs!r}.")
        value = self.max_padding
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 1:
            raise ConfigError(
                f"max_padding must be a number of at least 1 (padded / real tokens), got {value!r}."
            )
        if self.playground is not None and not isinstance(self.playground, bool):
            raise ConfigError(f"playground must be true or false, got {self.playground!r}.")

    @property
    def playground_on(self) -> bool:
        """Whether `GET /` serves the playground page (`playground`, else: a loopback host)."""
        return is_loopback(self.host) if self.playground is None else self.playground

    def truncating(self, asked: bool | None) -> bool:
        """A request's `truncate` field, or the server's default when it gives none."""
        return self.truncate if asked is None else asked

    @property
    def docs_open(self) -> bool:
        """Whether /docs, /redoc, /openapi.json and /health's model names need no key."""
        return self.api_key is None if self.public_docs is None else self.public_docs


SETTING_KEYS = tuple(f.name for f in fields(ServeSettings))


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_name(name: str) -> str:
    """A model name usable in URLs and JSON: letters, digits, '.', '_', '-' (at most 64)."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ConfigError(
            f"Model name {name!r} is not usable: use letters, digits, '.', '_' or '-' "
            "(at most 64), e.g. ner=path/to/model."
        )
    return name


def parse_model_arg(arg: str) -> ModelSpec:
    """`name=path` or `path` (then the name is the directory's or file stem's name)."""
    name, sep, path = arg.partition("=")
    if not sep:
        name, path = "", arg
    if not path:
        raise ConfigError(f"Model argument {arg!r} has no path: use NAME=PATH or PATH.")
    if not name:
        p = Path(path.rstrip("/\\"))
        name = p.stem if p.suffix == ".onnx" else p.name
    return ModelSpec(name=name, path=path)


def merge_models(*groups: list[ModelSpec]) -> list[ModelSpec]:
    """All specs in order; a name used twice is a ConfigError naming both paths."""
    seen: dict[str, ModelSpec] = {}
    for spec in (s for group in groups for s in group):
        if spec.name in seen:
            raise ConfigError(
                f"Two models are named {spec.name!r} ({seen[spec.name].path} and {spec.path}): "
                "give one of them another name with NAME=PATH."
            )
        seen[spec.name] = spec
    if not seen:
        raise ConfigError("No models to serve: pass MODEL arguments (NAME=PATH) or --config FILE.")
    return list(seen.values())


def read_config(path: str | Path) -> tuple[dict[str, Any], list[ModelSpec]]:
    """(setting overrides, models) from a TOML file; unknown keys are ConfigErrors."""
    path = Path(path)
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError as exc:
            raise MissingDependencyError(
                "Reading a TOML config needs Python 3.11+ or the tomli package: pip install tomli."
            ) from exc
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"Cannot read config {path} ({exc.strerror}): check the path.") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Config {path} is not valid UTF-8 TOML ({exc}): fix it.") from exc
    models_table = data.pop("models", {})
    unknown = sorted(set(data) - set(SETTING_KEYS))
    if unknown:
        raise ConfigError(
            f"Config {path} has unknown keys {', '.join(unknown)}: use [models] and "
            f"{', '.join(k for k in SETTING_KEYS if k != 'api_key')}."
        )
    if "api_key" in data:
        raise ConfigError(
            f"Config {path} holds api_key: keep secrets out of config files, pass --api-key "
            "or set ERNIE_DEPLOY_API_KEY."
        )
    if not isinstance(models_table, Mapping):
        raise ConfigError(f"Config {path}: [models] must be a table of NAME = PATH entries.")
    return data, [_model_entry(path, name, v) for name, v in models_table.items()]


def _model_entry(path: Path, name: str, value: object) -> ModelSpec:
    if isinstance(value, str):
        return ModelSpec(name=name, path=_beside(path, value))
    if not isinstance(value, Mapping) or not isinstance(value.get("path"), str):
        raise ConfigError(
            f'Config {path}: models.{name} must be a path string or a table with path = "...".'
        )
    unknown = sorted(set(value) - set(MODEL_KEYS))
    if unknown:
        raise ConfigError(
            f"Config {path}: models.{name} has unknown keys {', '.join(unknown)}: "
            f"use {', '.join(MODEL_KEYS)}."
        )
    values = dict(value)
    model_path = _beside(path, values.pop("path"))
    where = f"Config {path}: models.{name}"
    return ModelSpec(name=name, path=model_path, options=LoadOptions.from_mapping(values, where))


def _beside(config: Path, model: str) -> str:
    """A relative model path is read from the config file's folder when it exists there (as a
    `--config /etc/...` service expects), else as given (a bundled name, or from the cwd)."""
    given = Path(model).expanduser()
    near = config.parent / given
    return str(near) if not given.is_absolute() and near.exists() else model


def build_settings(file_values: Mapping[str, Any], **overrides: Any) -> ServeSettings:
    """ServeSettings from config-file values, then the non-None overrides (command line)."""
    values = {**file_values, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return replace(ServeSettings(), **values)
    except TypeError as exc:
        raise ConfigError(f"Invalid server setting ({exc}): check the config file.") from exc
