"""What the Paddle and Hugging Face exporters share: labels, task choice, the report, imports."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from ernie_deploy.convert.verify import ParityReport
from ernie_deploy.errors import (
    ConfigError,
    LabelMismatchError,
    MissingDependencyError,
    UnknownTaskError,
)
from ernie_deploy.options import parse_labels as parse_labels  # the exporters' --labels
from ernie_deploy.runtime.checks import read_graph
from ernie_deploy.runtime.model_dir import TASKS

LABELLED_TASKS = ("token_cls", "seq_cls")
# Tokenizer files worth carrying over from a separate tokenizer directory.
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "sentencepiece.bpe.model",
    "spm.model",
    "vocab.json",
    "merges.txt",
)


def require(module: str, extra: str) -> ModuleType:
    """Import an optional dependency or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"This command needs {module}, which is not installed: "
            f"pip install 'ernie-deploy[{extra}]'."
        ) from exc


def check_task(task: str | None, src: Path) -> str:
    if task is None:
        raise UnknownTaskError(
            f"Cannot tell the task of {src}: pass --task, one of {', '.join(TASKS)}."
        )
    if task not in TASKS:
        raise UnknownTaskError(f"Unknown task {task!r}: use one of {', '.join(TASKS)}.")
    return task


def check_labels(
    task: str, labels: tuple[str, ...] | None, outputs: Sequence[np.ndarray], src: Path
) -> tuple[str, ...] | None:
    """Labels are required for token_cls / seq_cls and must match the output size."""
    if task not in LABELLED_TASKS:
        return labels
    if not labels:
        raise ConfigError(
            f"{src} names no labels for its {task} head: pass --labels O,B-PER,I-PER,... "
            "(in output order) or --labels FILE with one label per line."
        )
    size = int(outputs[0].shape[-1])
    if size != len(labels):
        raise LabelMismatchError(
            f"The model outputs {size} classes but {len(labels)} labels were given "
            f"({', '.join(labels[:5])}{', ...' if len(labels) > 5 else ''}): "
            "pass one label per output class, in order."
        )
    return labels


@dataclass(frozen=True)
class ConvertReport:
    """What a conversion wrote and how well the ONNX graph matches the source framework."""

    out: Path
    source: str  # e.g. "Paddle static model", "PaddleNLP dygraph checkpoint", "transformers"
    task: str
    labels: tuple[str, ...] | None
    opset: int | None
    parity: ParityReport
    size_mb: float
    asked_opset: int | None = None  # what the user asked for, when the exporter wrote another

    def lines(self) -> list[str]:
        head = [
            f"converted {self.source} -> {self.out / 'model.onnx'} "
            f"({self.size_mb:.1f} MB, opset {self.opset if self.opset else 'default'})",
            f"task {self.task}"
            + (f", {len(self.labels)} labels: {', '.join(self.labels)}" if self.labels else ""),
        ]
        if self.asked_opset not in (None, self.opset):
            head.append(
                f"note: opset {self.asked_opset} was asked for; the exporter needed {self.opset}"
            )
        return head + self.parity.lines() + [f"load it with: ernie-deploy predict {self.out} TEXT"]


def graph_opset(path: Path) -> int | None:
    """The default-domain opset a written graph declares (what was written, not what was asked)."""
    graph = read_graph(path)
    return next((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), None)


def file_mb(path: Path) -> float:
    size = path.stat().st_size
    data = path.with_name(path.name + "_data")  # external data written beside big graphs
    if data.exists():
        size += data.stat().st_size
    return size / 1e6
