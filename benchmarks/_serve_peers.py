"""The servers serve_load.py drives: ours (optionally a second source tree for A/B) and Infinity.

Infinity (`infinity-emb` 0.0.78, its optimum / ONNX Runtime engine) runs in its own virtual
environment, `.cache/infinity-venv` (`make infinity` creates it; FIELD-NOTES.md has the recipe
and the pins), on the same `model.onnx` as ours: it is started from inside our converted
all-MiniLM-L6-v2 directory (its ONNX lookup wants a path relative to the model directory),
offline, on 127.0.0.1 only.
"""

from __future__ import annotations

import os
from pathlib import Path

from _http_load import Server

REPO = Path(__file__).resolve().parent.parent
INFINITY_VENV = REPO / ".cache" / "infinity-venv"
INFINITY_VERSION = "0.0.78"
# what `make infinity` installs (FIELD-NOTES.md: measured to work together, CPU torch)
INFINITY_PINS = (
    f"infinity-emb[server,optimum]=={INFINITY_VERSION}",
    "optimum==2.1.0",
    "optimum-onnx[onnxruntime]==0.1.0",
    "onnxruntime==1.32.0",
    "torch==2.13.0",
)


class PeerUnavailable(RuntimeError):
    """The peer cannot run here; the message says why and how to get it."""


def infinity_binary(venv: Path = INFINITY_VENV) -> Path:
    """The `infinity_emb` script of `venv`, or PeerUnavailable naming the command that makes it."""
    script = venv / "bin" / "infinity_emb"
    if not script.is_file():
        raise PeerUnavailable(
            f"Infinity is not installed in {venv}: run `make infinity` (pip install "
            f"{' '.join(INFINITY_PINS)} into that venv)."
        )
    return script


def infinity_server(model_dir: Path, served_name: str, venv: Path = INFINITY_VENV) -> Server:
    """Infinity serving `model_dir` (an optimum-style directory holding model.onnx) under
    `served_name` at /v1/embeddings, with its defaults otherwise (batch size 32)."""
    script = infinity_binary(venv)
    argv = [
        str(script),
        "v2",
        "--model-id",
        ".",
        "--served-model-name",
        served_name,
        "--engine",
        "optimum",
        "--device",
        "cpu",
        "--pooling-method",
        "mean",
        "--onnx-disable-optimize",
        "--url-prefix",
        "/v1",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--log-level",
        "warning",
    ]
    shown = (
        f"cd MODEL_DIR && HF_HUB_OFFLINE=1 infinity_emb v2 --model-id . --served-model-name "
        f"{served_name} --engine optimum --device cpu --pooling-method mean "
        "--onnx-disable-optimize --url-prefix /v1 --host 127.0.0.1 --port PORT"
    )
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1"}
    env["INFINITY_ANONYMOUS_USAGE_STATS"] = "0"
    # its own venv, not ours: drop what our interpreter put on the path
    env["PYTHONPATH"] = ""
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    return Server(argv, cwd=model_dir, env=env, shown=shown)


def infinity_versions(venv: Path = INFINITY_VENV) -> str:
    """'infinity-emb X, onnxruntime Y, optimum Z' read from the venv's metadata."""
    found = {}
    for site in venv.glob("lib/python*/site-packages"):
        for dist in site.glob("*.dist-info"):
            name, _, version = dist.name.removesuffix(".dist-info").rpartition("-")
            key = name.lower().replace("_", "-")
            if key in ("infinity-emb", "onnxruntime", "optimum", "optimum-onnx", "torch"):
                found[key] = version
    return ", ".join(f"{k} {v}" for k, v in sorted(found.items())) or "versions unknown"
