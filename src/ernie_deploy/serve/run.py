"""Start-up and shutdown of `ernie-deploy serve`: load and warm every model, then run uvicorn.

The port is taken first (`bind`: one sentence if it is in use), then a model that fails to load
or to run its warm-up batch stops start-up with one error naming the model. SIGTERM (and Ctrl+C)
stop accepting connections, let the requests already accepted finish (up to
`graceful_timeout_s`; then uvicorn cancels them and their queued rows are dropped), drain the
batch queues and exit 0.
"""

from __future__ import annotations

import errno
import logging
import signal
import socket
from collections.abc import Callable, Sequence
from typing import Any

from ernie_deploy.api import AnyPredictor
from ernie_deploy.errors import ConfigError, ErnieDeployError, ModelLoadError, first_line
from ernie_deploy.serve.settings import ModelSpec, ServeSettings

WARM_UP_TEXT = "warm up 预热"


def load_models(
    specs: Sequence[ModelSpec], notify: Callable[[str], None] = print
) -> dict[str, AnyPredictor]:
    """Load and warm each model; an error names the model and keeps its class (exit code)."""
    from ernie_deploy.api import load

    models: dict[str, AnyPredictor] = {}
    for spec in specs:
        options = spec.options
        if options.spinning is None:  # ORT's spinning threads starve the server's own (RESULTS.md)
            options = options.updated(spinning=False)
        try:
            predictor = load(spec.path, options=options)
        except ErnieDeployError as exc:
            raise type(exc)(f"Model {spec.name!r} ({spec.path}) failed to load: {exc}") from exc
        for notice in predictor.model.notices:
            notify(f"note: {spec.name}: {notice}")
        warm_up(spec.name, predictor)
        notify(
            f"loaded {spec.name}: {predictor.task} from {predictor.model.path} "
            f"on {predictor.model.providers[0]}"
        )
        models[spec.name] = predictor
    return models


def warm_up(name: str, predictor: AnyPredictor) -> None:
    """Run one tiny batch so session start-up costs (and failures) show before serving."""
    try:
        if predictor.task == "rerank":
            predictor.rerank(WARM_UP_TEXT, [WARM_UP_TEXT])  # type: ignore[union-attr]
        else:
            predictor.predict([WARM_UP_TEXT])  # type: ignore[union-attr]
    except ErnieDeployError as exc:
        raise type(exc)(f"Model {name!r} failed its warm-up run: {exc}") from exc
    except Exception as exc:  # post-processing of outputs the head did not expect
        raise ModelLoadError(
            f"Model {name!r} failed its warm-up run ({first_line(exc)}): check that it is exported for "
            "its task and that its tokenizer matches it."
        ) from exc


def bind(host: str, port: int) -> socket.socket:
    """The listening socket's address taken now (before models load), or one ConfigError."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(
            f"Cannot listen on {host!r} ({exc.strerror}): pass --host an address of this machine."
        ) from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"Port {port} on {host} is already in use: stop the program using it or pick "
                "another with --port."
            ) from exc
        raise ConfigError(
            f"Cannot listen on {host}:{port} ({exc.strerror}): pick another --host or --port."
        ) from exc
    return sock


def serve(
    models: dict[str, AnyPredictor],
    settings: ServeSettings,
    log_level: str = "info",
    sock: socket.socket | None = None,
) -> int:
    """Run the app under uvicorn until SIGTERM / Ctrl+C; the exit status (0 after draining).

    `sock`: the socket `bind` took (else it is bound here)."""
    import uvicorn

    from ernie_deploy.serve.app import create_app

    app = create_app(models, settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        timeout_graceful_shutdown=settings.graceful_timeout_s,  # type: ignore[arg-type]
        server_header=False,
    )
    server = uvicorn.Server(config)
    # uvicorn handles SIGTERM / SIGINT itself (graceful shutdown), then re-raises the signal
    # at the handlers that were installed before it: make those record it, so a drained
    # shutdown ends with status 0 instead of the default handler's kill.
    sock = sock or bind(settings.host, settings.port)
    caught: list[int] = []
    previous = _install(lambda sig, frame: caught.append(sig))
    try:
        server.run(sockets=[sock])
    except SystemExit as exc:  # uvicorn exits on a start-up failure; say it once, below
        logging.getLogger("ernie_deploy.serve").debug("uvicorn exited with %s", exc.code)
    finally:
        _restore(previous)
        sock.close()
    if not server.started:
        logging.getLogger("ernie_deploy.serve").error(
            "the server did not start (see above): check the log lines before this one"
        )
        return 1
    return 0


def _install(handler: Callable[[int, Any], None]) -> dict[int, Any]:
    return {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}


def _restore(previous: dict[int, Any]) -> None:
    for sig, old in previous.items():
        signal.signal(sig, old)
