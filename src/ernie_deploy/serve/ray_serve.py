"""`ernie-deploy serve --ray`: the same FastAPI app on Ray Serve, replicated, each replica loading its models.

Every replica builds the app with `create_app` (routes, schemas, error handlers, limits and
the dynamic batcher of the plain server) from models it loads and warms itself, with
CPUs-per-replica ONNX Runtime threads unless a model sets its own. Ray Serve's HTTP proxy
listens on the `--host` / `--port` of the plain server and spreads requests over the
replicas; `max_ongoing_requests` is the server's `max_queue`, so a replica answers 429 as
the plain server does. Needs the `[ray]` extra and Ray >= 2.47 (app builders in
`serve.ingress`).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ernie_deploy.errors import ConfigError, ModelLoadError
from ernie_deploy.raycluster import (
    ModelFiles,
    cpu_share,
    init_ray,
    require_ray,
    worker_model,
)
from ernie_deploy.serve.settings import ModelSpec, ServeSettings

APP_NAME = "ernie-deploy"
WHAT = "serve --ray"


@dataclass(frozen=True)
class RayServeOptions:
    """How to run the server on Ray Serve.

    Args:
        address: the cluster to join (head:6379, or "auto"); None starts a local Ray instance.
        replicas: a fixed number of replicas (default 1 when no autoscaling bounds are given).
        min_replicas: autoscaling lower bound (with `max_replicas`).
        max_replicas: autoscaling upper bound; Ray Serve adds replicas as requests queue up.
    """

    address: str | None = None
    replicas: int | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None

    def __post_init__(self) -> None:
        bounds = (self.min_replicas, self.max_replicas)
        if self.replicas is not None and any(b is not None for b in bounds):
            raise ConfigError(
                "--replicas and --min-replicas / --max-replicas exclude each other: pass a fixed "
                "number, or autoscaling bounds."
            )
        for flag, value in (
            ("--replicas", self.replicas),
            ("--max-replicas", self.max_replicas),
        ):
            if value is not None and value < 1:
                raise ConfigError(f"{flag} must be at least 1, got {value}.")
        if self.min_replicas is not None and self.min_replicas < 0:
            raise ConfigError(f"--min-replicas must be at least 0, got {self.min_replicas}.")
        if self.min_replicas is not None and self.max_replicas is None:
            raise ConfigError("--min-replicas needs --max-replicas too: add it.")
        if self.max_replicas is not None and (self.min_replicas or 0) > self.max_replicas:
            raise ConfigError(
                f"--min-replicas {self.min_replicas} is above --max-replicas {self.max_replicas}: "
                "swap them."
            )

    @property
    def most(self) -> int:
        """The most replicas that may run at once (sizes each replica's CPU share)."""
        return self.max_replicas or self.replicas or 1

    def scaling(self) -> dict[str, Any]:
        """serve.deployment's replica arguments."""
        if self.max_replicas is not None:
            low = self.min_replicas if self.min_replicas is not None else 1
            return {
                "autoscaling_config": {
                    "min_replicas": low,
                    "initial_replicas": max(low, 1),
                    "max_replicas": self.max_replicas,
                }
            }
        return {"num_replicas": self.replicas or 1}


def app_builder(
    specs: Sequence[ModelSpec],
    settings: ServeSettings,
    files: dict[str, ModelFiles],
    threads: int,
) -> Callable[[], Any]:
    """A function building the app inside a replica (Ray Serve calls it once per replica)."""
    specs = list(specs)

    def build() -> Any:
        from ernie_deploy.serve.app import create_app
        from ernie_deploy.serve.run import load_models

        keep: list[Any] = []
        local = []
        for spec in specs:
            options = spec.options.updated(threads=spec.options.threads or threads)
            if spec.name in files:
                path, tok = files[spec.name].local(keep)
                options = options.updated(tokenizer_dir=tok)
            else:
                path = spec.path
            local.append(replace(spec, path=path, options=options))
        log = logging.getLogger("ernie_deploy.serve")
        app = create_app(load_models(local, notify=log.info), settings)
        app.state.model_files = keep  # temporary copies of shipped models live as long as the app
        return app

    return build


def serve_ray(
    specs: Sequence[ModelSpec],
    settings: ServeSettings,
    options: RayServeOptions,
    log_level: str = "info",
    notify: Callable[[str], None] = print,
) -> int:
    """Deploy the app on Ray Serve and block until SIGTERM / Ctrl+C; the exit status."""
    require_ray(WHAT)
    from ray import serve

    started = init_ray(options.address, WHAT)
    deployed = False
    try:
        _, cpus = cpu_share(options.most, "--replicas" if options.replicas else "--max-replicas")
        ship = bool(options.address)  # other nodes may not have the paths
        files = {s.name: worker_model(s.path, s.options.tokenizer_dir, ship) for s in specs}
        builder = app_builder(specs, settings, files, cpus)
        serve.start(
            http_options={"host": settings.host, "port": settings.port},
            logging_config={"log_level": log_level.upper()},
        )
        deployment = serve.deployment(
            name=APP_NAME,
            ray_actor_options={"num_cpus": cpus},
            max_ongoing_requests=settings.max_queue,
            graceful_shutdown_timeout_s=settings.graceful_timeout_s,
            **options.scaling(),
        )(serve.ingress(builder)())
        try:
            serve.run(deployment.bind(), name=APP_NAME, route_prefix="/")
        except Exception as exc:  # Ray Serve reports a failed replica start as RuntimeError
            raise ModelLoadError(
                f"The Ray Serve replicas failed to start ({_last_error(exc, _status_text())}): "
                "see the replica logs above; check the models load with plain `ernie-deploy serve`."
            ) from None
        deployed = True
        notify(
            f"ray serve: {running_replicas()} replica(s) running, {cpus} CPU(s) each, on "
            f"http://{settings.host}:{settings.port} ({_scaling_text(options)})"
        )
        _wait_for_signal()
        return 0
    finally:
        _stop(serve, started, deployed)
        if started:
            import ray

            ray.shutdown()


def running_replicas() -> int:
    """Replicas of the app in state RUNNING, as Ray Serve's status says."""
    from ray import serve

    app = serve.status().applications.get(APP_NAME)
    if app is None:
        return 0
    return sum(
        int(count)
        for deployment in app.deployments.values()
        for state, count in deployment.replica_states.items()
        if str(getattr(state, "value", state)) == "RUNNING"
    )


def _scaling_text(options: RayServeOptions) -> str:
    if options.max_replicas is not None:
        low = options.min_replicas if options.min_replicas is not None else 1
        return f"autoscaling {low}-{options.max_replicas}"
    return f"{options.replicas or 1} fixed"


def _status_text() -> str:
    """Ray Serve's messages about the app (a failed replica's traceback among them)."""
    try:
        from ray import serve

        app = serve.status().applications.get(APP_NAME)
    except Exception:  # reporting an error already: never raise another
        return ""
    if app is None:
        return ""
    return "\n".join([app.message, *(d.message for d in app.deployments.values())])


def _last_error(exc: BaseException, details: str = "") -> str:
    """The most telling line of a Ray error: an ernie-deploy message when there is one."""
    lines = [line.strip() for line in f"{exc}\n{details}".splitlines() if line.strip()]
    ours = [line for line in lines if "ernie_deploy.errors." in line]
    pick = ours[-1] if ours else (lines[0] if lines else type(exc).__name__)
    return pick.split("ernie_deploy.errors.", 1)[-1][:400]


def _wait_for_signal() -> None:
    """Block until SIGTERM or SIGINT (Ctrl+C); the previous handlers are put back."""
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda s, f: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _stop(serve: Any, started: bool, deployed: bool) -> None:
    """Drain and remove the app: all of Serve on a local instance, only our app on a cluster."""
    try:
        if started:
            serve.shutdown()
        elif deployed:
            serve.delete(APP_NAME)
    except Exception as exc:  # shutting down: report, do not mask the exit status
        logging.getLogger("ernie_deploy.serve").warning("Ray Serve shutdown: %s", exc)


__all__ = ["APP_NAME", "RayServeOptions", "app_builder", "running_replicas", "serve_ray"]
