"""Models shipped inside the package: found by name, listed with the numbers their cards record.

Each bundled model is a model directory under `ernie_deploy/models/<name>/` (`model.onnx`,
`vocab.txt`, `ernie_deploy.json`, a `README.md` model card) plus `bundle.json`:
`{"summary": ..., "metrics": {...}, "export": {...}}`, where `export` records the parity with
the Paddle checkpoint measured when it was converted and `export_check.npz` holds that probe
batch (input ids and Paddle's logits) so the check can be repeated without Paddle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ernie_deploy.errors import ConfigError

# The model infer.py and `load(task=...)` use when no model is named.
DEFAULTS = {"token_cls": "ner-zh-e5", "seq_cls": "sentiment-zh-e5"}
BUNDLE_FILE = "bundle.json"


@dataclass(frozen=True)
class BundledModel:
    """One shipped model: where it is, what it does, and what it scored."""

    name: str
    path: Path
    task: str
    labels: tuple[str, ...]
    size_mb: float
    summary: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)


def bundled_root() -> Path:
    """The directory holding the bundled model directories."""
    return Path(str(resources.files("ernie_deploy") / "models"))


def bundled_models() -> list[BundledModel]:
    """Every bundled model present in this installation, by name."""
    root = bundled_root()
    if not root.is_dir():
        return []
    return [_read(d) for d in sorted(root.iterdir()) if (d / "model.onnx").is_file()]


def bundled_path(name: str) -> Path | None:
    """The directory of the bundled model called `name`, or None."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    path = bundled_root() / name
    return path if (path / "model.onnx").is_file() else None


def default_model(task: str) -> Path | None:
    """The bundled model used for `task` when none is named (None: no default ships)."""
    name = DEFAULTS.get(task)
    return bundled_path(name) if name else None


def bundled_names() -> list[str]:
    return [m.name for m in bundled_models()]


def _read(directory: Path) -> BundledModel:
    own = _json(directory / "ernie_deploy.json")
    bundle = _json(directory / BUNDLE_FILE)
    size = sum(p.stat().st_size for p in directory.iterdir() if p.is_file()) / 1e6
    return BundledModel(
        name=directory.name,
        path=directory,
        task=str(own.get("task", "")),
        labels=tuple(own.get("labels", ())),
        size_mb=size,
        summary=str(bundle.get("summary", "")),
        metrics=dict(bundle.get("metrics", {})),
        export=dict(bundle.get("export", {})),
    )


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"The bundled file {path} is unreadable ({exc}): reinstall ernie-deploy."
        ) from exc
    return data if isinstance(data, dict) else {}
