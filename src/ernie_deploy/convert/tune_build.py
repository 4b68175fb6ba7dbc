"""`tune`'s candidates: which variants this machine runs, their graphs built in scratch, OUT written whole."""

from __future__ import annotations

import json
import platform
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ernie_deploy.convert.common import TOKENIZER_FILES
from ernie_deploy.convert.outdir import copy_model_files, staged_dir
from ernie_deploy.convert.tune_measure import TuneProgress
from ernie_deploy.convert.tune_report import REPORT_NAME, TuneReport
from ernie_deploy.errors import ConfigError, ErnieDeployError, InputError
from ernie_deploy.runtime.device import CUDA, TENSORRT, available_providers
from ernie_deploy.runtime.model_dir import ModelFiles

MIN_GPU_CAPABILITY = (7, 0)


@dataclass(frozen=True)
class Variant:
    """One candidate: the graph it runs (`graph`, a directory key) and how it is loaded."""

    name: str
    graph: str  # "fp32", "O1", "O2", "O3", "int8", "int8-per-channel", "O2+int8"
    how: str
    device: str = "cpu"
    fp16: bool = False


def cpu_preset(machine: str | None = None, flags: frozenset[str] | None = None) -> str:
    """The int8 preset (convert.quantize.PRESETS) for this CPU: arm64, avx512_vnni (VNNI or
    AMX int8), avx512 (AVX-512 BW without VNNI) or avx2."""
    machine = (machine or platform.machine()).lower()
    if machine in ("arm64", "aarch64"):
        return "arm64"
    flags = cpu_flags() if flags is None else flags
    if flags & {"avx512_vnni", "avx512vnni", "amx_int8"}:
        return "avx512_vnni"
    if "avx512bw" in flags:
        return "avx512"
    return "avx2"


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def gpu_kinds(
    providers: Sequence[str] | None = None,
    capability: Callable[[int], tuple[int, int] | None] | None = None,
) -> tuple[str, ...]:
    """The GPU execution kinds worth trying: "cuda" (and "tensorrt") when ORT has the provider
    and GPU 0's compute capability is >= 7.0 (tensor cores); () otherwise."""
    from ernie_deploy.runtime.device import compute_capability

    have = available_providers() if providers is None else list(providers)
    if CUDA not in have:
        return ()
    cc = (capability or compute_capability)(0)
    if cc is None or cc < MIN_GPU_CAPABILITY:
        return ()
    return ("cuda", "tensorrt") if TENSORRT in have else ("cuda",)


def plan_variants(preset: str, gpus: Sequence[str] = ()) -> tuple[Variant, ...]:
    """Every candidate this machine can run, fp32 first."""
    int8 = f"dynamic int8, {preset} preset"
    plan = [
        Variant("fp32", "fp32", "the model as given"),
        Variant("O1", "O1", "ORT basic graph optimisations, written offline"),
        Variant("O2", "O2", "O1 + transformer fusions (Attention, SkipLayerNorm, Gelu)"),
        Variant("O3", "O3", "O2 + tanh GELU approximation"),
        Variant("int8", "int8", f"{int8}, per tensor"),
        Variant("int8-per-channel", "int8-per-channel", f"{int8}, per channel"),
        Variant(
            "int8-rows",
            "int8-rows",
            f"{int8}, per tensor, one activation scale per token row (answers do not depend "
            "on the batch)",
        ),
        Variant("O2+int8", "O2+int8", f"O2, then {int8}, per tensor"),
    ]
    if "cuda" in gpus:
        plan.append(Variant("O2+fp16@cuda", "O2", "O2, fp16 on CUDA", "cuda", True))
    if "tensorrt" in gpus:
        plan.append(Variant("fp16@tensorrt", "fp32", "TensorRT, fp16", "tensorrt", True))
    return tuple(plan)


def choose(plan: tuple[Variant, ...], names: Sequence[str] | None) -> tuple[Variant, ...]:
    """The candidates asked for (fp32 always, as the reference); unknown names are refused."""
    if names is None:
        return plan
    known = {v.name: v for v in plan}
    asked = [str(n).strip() for n in names if str(n).strip()]
    unknown = [n for n in asked if n not in known]
    if unknown:
        raise ConfigError(
            f"Unknown or unavailable tune candidate(s) {', '.join(unknown)}: choose from "
            f"{', '.join(known)} (fp16 variants need a CUDA GPU of compute capability >= 7.0)."
        )
    return tuple(v for v in plan if v.name == "fp32" or v.name in asked)


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

    graphs: dict[str, Path | str] = {"fp32": files.onnx_path}
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
                quantize_model(
                    model,
                    where,
                    preset=preset,
                    per_channel=key == "int8-per-channel",
                    row_scales=key == "int8-rows",
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
    from ernie_deploy.runtime.checks import external_data_files, read_graph

    src = files.onnx_path
    copy_model_files(src.parent, stage)
    locations = external_data_files(read_graph(src))
    shutil.copy2(src, stage / src.name)
    for name in locations:
        (stage / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src.parent / name, stage / name)
    if files.tokenizer_dir.resolve() != src.parent.resolve():
        for name in TOKENIZER_FILES:
            if (files.tokenizer_dir / name).is_file() and not (stage / name).exists():
                shutil.copy2(files.tokenizer_dir / name, stage / name)
