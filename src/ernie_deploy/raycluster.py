"""Ray helpers shared by `batch --engine ray` and `serve --ray`: import, start or join, CPU shares, model shipping.

Ray is the `[ray]` extra: nothing here imports it before a function that needs it is called,
and a missing install is one `MissingDependencyError` naming `pip install 'ernie-deploy[ray]'`.
"""

from __future__ import annotations

import importlib
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ernie_deploy.errors import ConfigError, ErnieDeployError, MissingDependencyError, first_line

RAY_EXTRA = "pip install 'ernie-deploy[ray]'"


def require_ray(what: str) -> ModuleType:
    """Import ray, or raise one sentence saying that `what` needs the [ray] extra."""
    try:
        return importlib.import_module("ray")
    except ImportError as exc:
        raise MissingDependencyError(
            f"{what} needs Ray, which is not installed: {RAY_EXTRA}."
        ) from exc


def init_ray(address: str | None, what: str) -> bool:
    """Join the cluster at `address`, or start a local Ray instance; True when this call started it.

    Usage statistics stay off (offline by default) unless the environment asks for them, and no
    dashboard is started for a local instance.
    """
    ray = require_ray(what)
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING}
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(include_dashboard=False, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise ConfigError(
            f"Could not start or join {where} ({first_line(exc)}): check --address (the head's "
            "host:6379, or 'auto' on a cluster node) and that `ray status` works there."
        ) from exc
    return True


def node_cpus() -> list[int]:
    """The CPUs of each live node that has any, as Ray counts them."""
    ray = require_ray("This command")
    cpus = [
        int(n["Resources"].get("CPU", 0))
        for n in ray.nodes()
        if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) >= 1
    ]
    if not cpus:
        raise ConfigError("The Ray cluster has no CPUs to run on: add a worker node with CPUs.")
    return cpus


def cpu_share(workers: int | None, flag: str) -> tuple[int, int]:
    """(workers, CPUs per worker) so that workers x CPUs per worker fill the cluster's CPUs.

    `workers` None means one per node (with CPUs). Each worker gets the cluster's CPUs
    divided by the number of workers, at most the CPUs of the smallest node (so any node
    can hold one), at least 1; its ONNX Runtime sessions run that many intra-op threads.
    """
    cpus = node_cpus()
    total = sum(cpus)
    if workers is None:
        workers = len(cpus)
    if workers < 1:
        raise ConfigError(f"{flag} must be at least 1, got {workers}.")
    if workers > total:
        raise ConfigError(
            f"{flag} {workers} is more than the {total} CPUs the Ray cluster has: use at "
            f"most {total}, or add nodes."
        )
    return workers, max(1, min(total // workers, min(cpus)))


@dataclass(frozen=True)
class ModelFiles:
    """A model as Ray workers find it: a path they can read, or files sent through the object store.

    `shipped` is an ObjectRef of {"model": {name: bytes}, "tokenizer": {name: bytes} or None,
    "onnx": file name, "is_file": bool}; workers write the files into a temporary directory.
    """

    path: str
    tokenizer_dir: str | None = None
    shipped: Any = field(default=None, repr=False)

    def local(self, keep: list[Any]) -> tuple[str, str | None]:
        """(path, tokenizer_dir) readable on this node; temporary directories go into `keep`."""
        if self.shipped is None:
            return self.path, self.tokenizer_dir
        ray = require_ray("This command")
        payload = ray.get(self.shipped)
        tmp = tempfile.TemporaryDirectory(prefix="ernie-deploy-model-")
        keep.append(tmp)
        root = Path(tmp.name)
        model_dir = _write_files(root / "model", payload["model"])
        tok = payload["tokenizer"]
        tok_dir = str(_write_files(root / "tokenizer", tok)) if tok is not None else None
        path = model_dir / payload["onnx"] if payload["is_file"] else model_dir
        return str(path), tok_dir


def ship_model(path: str, tokenizer_dir: str | Path | None = None) -> ModelFiles:
    """Put a model's files into Ray's object store, for nodes that do not share this filesystem.

    Sent: the .onnx file used, every other plain file beside it (external weights, tokenizer,
    configs; not other .onnx files nor subdirectories), and the tokenizer directory's files
    when it is elsewhere. Errors about the model (missing, no tokenizer) are raised here.
    """
    from ernie_deploy.runtime.model_dir import find_model

    ray = require_ray("This command")
    files = find_model(path, tokenizer_dir)
    model_dir = files.onnx_path.parent
    model = _read_files(model_dir, keep=files.onnx_path.name)
    tokenizer = None
    if files.tokenizer_dir.resolve() != model_dir.resolve():
        tokenizer = _read_files(files.tokenizer_dir, keep=None)
    is_file = Path(path).expanduser().is_file()
    payload: dict[str, Any] = {
        "model": model,
        "tokenizer": tokenizer,
        "onnx": files.onnx_path.name,
        "is_file": is_file,
    }
    return ModelFiles(path, str(tokenizer_dir) if tokenizer_dir else None, ray.put(payload))


def _read_files(directory: Path, keep: str | None) -> dict[str, bytes]:
    out = {}
    for p in sorted(directory.iterdir()):
        if not p.is_file() or (p.suffix == ".onnx" and p.name != keep):
            continue
        try:
            out[p.name] = p.read_bytes()
        except OSError as exc:
            raise ErnieDeployError(
                f"Cannot read {p} to send it to the Ray workers ({exc.strerror}): check its "
                "permissions."
            ) from exc
    return out


def _write_files(directory: Path, files: dict[str, bytes]) -> Path:
    directory.mkdir(parents=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return directory


def worker_model(path: str, tokenizer_dir: str | None, ship: bool) -> ModelFiles:
    """The model as workers will load it: shipped through the object store, or by its path."""
    if ship:
        return ship_model(path, tokenizer_dir)
    return ModelFiles(_absolute(path), _absolute(tokenizer_dir) if tokenizer_dir else None)


def _absolute(path: str) -> str:
    """An existing relative path made absolute (workers need not share our working directory)."""
    p = Path(path).expanduser()
    return str(p.resolve()) if p.exists() else path
