"""The `serve` command: one HTTP server for NER, classification, embedding and rerank models."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from ernie_deploy.errors import ConfigError, ErnieDeployError, MissingDependencyError, exit_code
from ernie_deploy.options import parse_labels
from ernie_deploy.serve.ray_serve import RayServeOptions
from ernie_deploy.serve.settings import (
    ModelSpec,
    ServeSettings,
    build_settings,
    merge_models,
    parse_model_arg,
    read_config,
)

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")  # uvicorn's

API_KEY_ENV = "ERNIE_DEPLOY_API_KEY"

Limit = Optional[int]


def serve_cmd(
    models: Annotated[
        Optional[list[str]],
        typer.Argument(
            help="NAME=PATH or PATH (name: the directory's name); PATH may be a bundled "
            "model's name (`ernie-deploy models`).",
            show_default=False,
        ),
    ] = None,
    config: Annotated[
        Optional[Path], typer.Option(help="TOML file listing the models and limits.")
    ] = None,
    host: Annotated[Optional[str], typer.Option(help="Address to bind [127.0.0.1].")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port [8000].")] = None,
    api_key: Annotated[
        Optional[str],
        typer.Option(help=f"Require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV})."),
    ] = None,
    task: Annotated[
        Optional[list[str]],
        typer.Option(help="NAME=TASK for a model whose directory does not say its task."),
    ] = None,
    labels: Annotated[
        Optional[list[str]],
        typer.Option(
            help="NAME=LABELS: a model's labels in output order ('O,B-PER,I-PER' or a file, one "
            "per line), e.g. for a bare paddle2onnx .onnx; other options go in --config."
        ),
    ] = None,
    device: Annotated[
        Optional[str], typer.Option(help="auto, cpu, cuda[:N], tensorrt[:N] (for every model).")
    ] = None,
    fp16: Annotated[bool, typer.Option("--fp16", help="fp16 on CUDA (cc >= 7.0).")] = False,
    threads: Annotated[Limit, typer.Option(help="ONNX Runtime threads per model.")] = None,
    max_batch_tokens: Annotated[
        Limit, typer.Option(help="Padded tokens per batch [16384].")
    ] = None,
    max_batch_size: Annotated[Limit, typer.Option(help="Rows per batch [32].")] = None,
    max_wait_ms: Annotated[
        Optional[float],
        typer.Option(help="Longest wait for requests on their way to join a batch [5]."),
    ] = None,
    max_padding: Annotated[
        Optional[float],
        typer.Option(help="Cut a batch where padded tokens pass this many times real ones [1.1]."),
    ] = None,
    hold_for_company: Annotated[
        Optional[bool],
        typer.Option(
            "--hold-for-company/--no-hold-for-company",
            help="Hold even a lone request max_wait_ms for others to join it [no].",
            show_default=False,
        ),
    ] = None,
    max_queue: Annotated[
        Limit, typer.Option(help="Requests per model in flight before 429 [256].")
    ] = None,
    max_body_bytes: Annotated[Limit, typer.Option(help="Request body limit [4 MiB].")] = None,
    max_texts: Annotated[Limit, typer.Option(help="Texts per request [256].")] = None,
    max_chars: Annotated[Limit, typer.Option(help="Characters per text [20000].")] = None,
    max_request_chars: Annotated[
        Limit, typer.Option(help="Characters per request, all texts together [100000].")
    ] = None,
    public_docs: Annotated[
        Optional[bool],
        typer.Option(
            "--public-docs/--no-public-docs",
            help="Serve /docs, /openapi.json and /health's model names without the API key "
            "[open without a key, closed with one].",
            show_default=False,
        ),
    ] = None,
    truncate: Annotated[
        Optional[bool],
        typer.Option(
            "--truncate/--no-truncate",
            help="Cut over-long texts when a request does not say (its truncate field wins) "
            "[no: 422].",
            show_default=False,
        ),
    ] = None,
    graceful_timeout: Annotated[
        Optional[float],
        typer.Option(help="Seconds requests in flight may take after SIGTERM [30]."),
    ] = None,
    workers: Annotated[
        Limit, typer.Option(help="Tokenize / post-process threads per model [32].")
    ] = None,
    playground: Annotated[
        Optional[bool],
        typer.Option(
            "--playground/--no-playground",
            help="Serve the playground page at GET / (default: only on a loopback address).",
            show_default=False,
        ),
    ] = None,
    log_level: Annotated[
        str, typer.Option(help=f"uvicorn log level: {', '.join(LOG_LEVELS)}.")
    ] = "info",
    ray: Annotated[
        bool, typer.Option("--ray", help="Run replicas on Ray Serve (the ray extra).")
    ] = False,
    address: Annotated[
        Optional[str],
        typer.Option(help="--ray: the cluster (head:6379, or auto); default: start Ray locally."),
    ] = None,
    replicas: Annotated[Limit, typer.Option(help="--ray: replicas, fixed [1].")] = None,
    min_replicas: Annotated[Limit, typer.Option(help="--ray: autoscaling lower bound.")] = None,
    max_replicas: Annotated[Limit, typer.Option(help="--ray: autoscaling upper bound.")] = None,
) -> None:
    """Serve models over HTTP: /v1/ner, /v1/classify, /v1/embed, /v1/rerank, /v1/embeddings, ..."""
    try:
        _check_extra()
        if log_level.lower() not in LOG_LEVELS:
            raise ConfigError(
                f"--log-level {log_level!r} is not a level: use {', '.join(LOG_LEVELS)}."
            )
        log_level = log_level.lower()
        ray_options = _ray_options(ray, address, replicas, min_replicas, max_replicas)
        from ernie_deploy.serve.run import bind, load_models, serve

        file_values, file_models = read_config(config) if config else ({}, [])
        specs = merge_models(file_models, [parse_model_arg(m) for m in models or []])
        names = {s.name for s in specs}
        tasks = _per_model("--task", task or [], names)
        label_lists = _per_model("--labels", labels or [], names)
        specs = [
            _with_defaults(s, tasks.get(s.name), label_lists.get(s.name), device, fp16, threads)
            for s in specs
        ]
        settings = build_settings(
            file_values,
            host=host,
            port=port,
            api_key=api_key or os.environ.get(API_KEY_ENV) or None,
            max_batch_tokens=max_batch_tokens,
            max_batch_size=max_batch_size,
            max_wait_ms=max_wait_ms,
            max_padding=max_padding,
            hold_for_company=hold_for_company,
            max_queue=max_queue,
            max_body_bytes=max_body_bytes,
            max_texts=max_texts,
            max_chars=max_chars,
            max_request_chars=max_request_chars,
            public_docs=public_docs,
            truncate=truncate,
            graceful_timeout_s=graceful_timeout,
            workers=workers,
            playground=playground,
        )
        _note_open(settings.host, settings.api_key)
        if ray_options is not None:
            raise typer.Exit(_serve_on_ray(specs, settings, ray_options, log_level))
        sock = bind(settings.host, settings.port)  # a port in use is said before models load
        loaded = load_models(specs, notify=lambda line: typer.echo(line, err=True))
        # uvicorn prints no address for a socket it is handed: say it (port 0 picks one)
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        url = f"http://{host}:{sock.getsockname()[1]}"
        typer.echo(f"listening on {url}", err=True)
        if settings.playground_on:
            typer.echo(f"playground: {url}/", err=True)
    except ErnieDeployError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exit_code(exc)) from None
    raise typer.Exit(serve(loaded, settings, log_level=log_level, sock=sock))


def _note_open(host: str, api_key: str | None) -> None:
    if api_key is None and host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(
            f"note: serving on {host} without an API key: anyone who can reach it may "
            f"use it (set --api-key or ${API_KEY_ENV}).",
            err=True,
        )


def _ray_options(
    ray: bool,
    address: str | None,
    replicas: int | None,
    min_replicas: int | None,
    max_replicas: int | None,
) -> RayServeOptions | None:
    """--ray's options, checked (and Ray imported) before any model is read."""
    given = [
        flag
        for flag, value in (
            ("--address", address),
            ("--replicas", replicas),
            ("--min-replicas", min_replicas),
            ("--max-replicas", max_replicas),
        )
        if value is not None
    ]
    if not ray:
        if given:
            raise ConfigError(f"{', '.join(given)} need --ray: add it.")
        return None
    from ernie_deploy.raycluster import require_ray

    options = RayServeOptions(address, replicas, min_replicas, max_replicas)
    require_ray("serve --ray")
    return options


def _serve_on_ray(
    specs: list[ModelSpec], settings: ServeSettings, options: RayServeOptions, log_level: str
) -> int:
    """Check every model's files here (one clear error), then let each replica load them."""
    from ernie_deploy.runtime.model_dir import find_model
    from ernie_deploy.serve.ray_serve import serve_ray

    for spec in specs:
        try:
            find_model(spec.path, spec.options.tokenizer_dir)
        except ErnieDeployError as exc:
            raise type(exc)(f"Model {spec.name!r} ({spec.path}) failed to load: {exc}") from exc
    return serve_ray(
        specs, settings, options, log_level, notify=lambda line: typer.echo(line, err=True)
    )


def _per_model(flag: str, values: list[str], names: set[str]) -> dict[str, str]:
    """NAME=VALUE values of a per-model flag (--task, --labels), by model name."""
    found = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or name not in names:
            raise ConfigError(
                f"{flag} {value!r} does not name a served model: use NAME=VALUE with NAME one of "
                f"{', '.join(sorted(names))}."
            )
        found[name] = rest
    return found


def _with_defaults(
    spec: ModelSpec,
    task: str | None,
    labels: str | None,
    device: str | None,
    fp16: bool,
    threads: int | None,
) -> ModelSpec:
    """Command-line values: --task / --labels name a model; --device / --fp16 / --threads apply
    to every model not setting its own in the config file."""
    options = spec.options
    changes: dict[str, object] = {}
    if task is not None:
        changes["task"] = task
    if labels is not None:
        changes["labels"] = parse_labels(labels)
    if device is not None and options.device == "auto":
        changes["device"] = device
    if fp16 and not options.fp16:
        changes["fp16"] = True
    if threads is not None and options.threads is None:
        changes["threads"] = threads
    if not changes:
        return spec
    return replace(spec, options=options.updated(where=f"model {spec.name!r}", **changes))


def _check_extra() -> None:
    import importlib.util

    missing = [
        m
        for m in ("fastapi", "uvicorn", "prometheus_client")
        if importlib.util.find_spec(m) is None
    ]
    if missing:
        raise MissingDependencyError(
            f"Serving needs {', '.join(missing)}: pip install 'ernie-deploy[serve]'."
        )


def register(app: typer.Typer) -> None:
    """Add `serve` to the main app."""
    app.command("serve")(serve_cmd)
