"""`tune`'s files: each variant's graph built in a scratch directory, and OUT written whole."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from ernie_deploy.convert.common import TOKENIZER_FILES
from ernie_deploy.convert.outdir import copy_model_files, staged_dir
from ernie_deploy.convert.tune_measure import TuneProgress
from ernie_deploy.convert.tune_report import REPORT_NAME, TuneReport
from ernie_deploy.errors import ErnieDeployError, InputError
from ernie_deploy.runtime.model_dir import ModelFiles

if TYPE_CHECKING:
    from ernie_deploy.convert.tune import Variant


def build_graphs(
    plan: tuple[Variant, ...],
    model: str | Path,
    files: ModelFiles,
    scratch: Path,
    preset: str,
    task: str,
    progress: TuneProgress,
) -> dict[str, Path | str]:
    """Each graph the plan needs, as a model directory under `scratch` (fp32: the source);
    a graph that cannot be built maps to the error's message."""
    from ernie_deploy.convert.optimize import optimize_model
    from ernie_deploy.convert.quantize import quantize_model

    graphs: dict[str, Path | str] = {"fp32": Path(model)}
    needed = [v.graph for v in plan]
    if "O2+int8" in needed and "O2" not in needed:
        needed.insert(needed.index("O2+int8"), "O2")
    tok = files.tokenizer_dir
    for key in dict.fromkeys(needed):
        if key in graphs:
            continue
        where = scratch / key.replace("+", "-")
        try:
            if key in ("O1", "O2", "O3"):
                optimize_model(model, where, key, tokenizer_dir=tok)
            elif key == "O2+int8":
                source = graphs["O2"]
                if isinstance(source, str):
                    raise InputError(f"needs O2, which failed: {source}")
                quantize_model(source, where, preset=preset, task=task)
            else:
                per_channel = key == "int8-per-channel"
                quantize_model(
                    model,
                    where,
                    preset=preset,
                    per_channel=per_channel,
                    task=task,
                    tokenizer_dir=tok,
                )
            graphs[key] = where
        except ErnieDeployError as exc:
            graphs[key] = str(exc)
        for v in plan:
            if v.graph == key:
                progress.step(v.name, "built")
    for v in plan:
        if v.graph == "fp32":
            progress.step(v.name, "built")
    return graphs


def graph_mb(onnx_path: Path) -> float:
    """The graph file and any external data beside it, in MB."""
    stem = onnx_path.name
    extra = [p for p in onnx_path.parent.iterdir() if p.name.startswith(stem) and p != onnx_path]
    return (onnx_path.stat().st_size + sum(p.stat().st_size for p in extra if p.is_file())) / 1e6


def write_out(
    report: TuneReport, key: str, graph: Path | str, files: ModelFiles, overwrite: bool
) -> None:
    """OUT appears whole: the winner's directory (or a copy of the fp32 source) + the report."""
    assert not isinstance(graph, str)
    with staged_dir(report.out, overwrite) as stage:
        if key == "fp32":
            _copy_source(files, stage)
        else:
            for item in graph.iterdir():
                shutil.move(str(item), str(stage / item.name))
        text = json.dumps(report.to_dict(), ensure_ascii=False, indent=1)
        (stage / REPORT_NAME).write_text(text + "\n", encoding="utf-8")


def _copy_source(files: ModelFiles, stage: Path) -> None:
    """The fp32 model as a normal model directory: its graph (+ external data), config and
    tokenizer files."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    src = files.onnx_path
    copy_model_files(src.parent, stage)
    graph = onnx.load(str(src), load_external_data=False)
    locations = {
        e.value
        for t in graph.graph.initializer
        if uses_external_data(t)
        for e in t.external_data
        if e.key == "location"
    }
    shutil.copy2(src, stage / src.name)
    for name in locations:
        (stage / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src.parent / name, stage / name)
    if files.tokenizer_dir.resolve() != src.parent.resolve():
        for name in TOKENIZER_FILES:
            if (files.tokenizer_dir / name).is_file() and not (stage / name).exists():
                shutil.copy2(files.tokenizer_dir / name, stage / name)
