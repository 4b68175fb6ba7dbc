"""GPU plumbing: the ORT build, CUDA library preloading, the driver's CUDA version, TensorRT options.

- `import_onnxruntime` names the extra to install when no ORT build is present (core does not
  depend on one: `[cpu]`, `[gpu]` for CUDA 13, `[gpu-cu12]` for CUDA 12).
- `preload_cuda_libraries` calls `onnxruntime.preload_dlls()` (ORT >= 1.21) once per process,
  before the first CUDA / TensorRT session: `libonnxruntime_providers_cuda.so` has no RUNPATH,
  so CUDA / cuDNN from pip `nvidia-*` wheels are otherwise not found and the session silently
  lands on the CPU (ORT issues #25609, #24719). What it prints is collected, not printed.
- `placement_notice` turns "asked for CUDA / TensorRT, got something else" into one sentence that
  says why and what to install: above all which extra the driver needs (onnxruntime-gpu >= 1.27
  is built for CUDA 13, which needs driver >= 580; drivers 525-570 need `[gpu-cu12]`).
- `tensorrt_options` gives TensorRT the fp32 graph with `trt_fp16_enable`, engine and timing
  caches, min / opt / max shape profiles for every input and `trt_layer_norm_fp32_fallback`.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import warnings
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from ernie_deploy.errors import MissingDependencyError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
LIBCUDA = "libcuda.so.1"
# onnxruntime-gpu >= 1.27 targets CUDA 13; the NVIDIA driver that runs CUDA 13 is >= 580.
CUDA13_DRIVER, CUDA12_DRIVER = "580", "525"
EXTRA_FOR_CUDA = {13: "gpu", 12: "gpu-cu12"}
DEFAULT_TRT_BATCH, DEFAULT_TRT_LENGTH, TRT_OPT_LENGTH = 32, 512, 128


def import_onnxruntime() -> Any:
    """The onnxruntime module, or a MissingDependencyError naming the extras that install it."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError(
            "ONNX Runtime is not installed: pip install 'ernie-deploy[cpu]', or "
            "'ernie-deploy[gpu]' (CUDA 13, driver >= 580) / 'ernie-deploy[gpu-cu12]' (CUDA 12) "
            "for an NVIDIA GPU."
        ) from exc
    return onnxruntime


def ort_build() -> tuple[str, str, int | None]:
    """(package name, version, CUDA major it was built for or None) of the installed ORT."""
    ort = import_onnxruntime()
    cuda = str(getattr(ort, "cuda_version", "") or "")
    major = cuda.split(".")[0]
    try:
        from onnxruntime.capi import build_and_package_info as info

        package = str(info.package_name)
    except ImportError:
        package = "onnxruntime"
    return package, str(ort.__version__), int(major) if major.isdigit() else None


@cache
def preload_cuda_libraries() -> tuple[str, ...]:
    """Run `onnxruntime.preload_dlls()` once; returns what it reported (empty when all loaded)."""
    ort = import_onnxruntime()
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        _, version, _ = ort_build()
        return (f"onnxruntime {version} has no preload_dlls() (added in 1.21)",)
    printed = io.StringIO()
    try:
        # ORT >= 1.32 also re-registers its CUDA plugin EP here and warns when that fails.
        with contextlib.redirect_stdout(printed), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            preload()
    except Exception as exc:  # it raises RuntimeError for a bad directory, OSError on odd hosts
        return (f"preload_dlls() failed: {exc}",)
    lines = [line.strip() for line in printed.getvalue().splitlines()]
    lines += [str(w.message) for w in caught]
    return tuple(line for line in lines if line.startswith(("Failed", "WARNING", "\x1b[33m")))


def driver_cuda_version(library: str = LIBCUDA) -> tuple[int, int] | None:
    """The newest CUDA (major, minor) the installed NVIDIA driver runs, or None without one."""
    try:
        lib = ctypes.CDLL(library)
    except OSError:
        return None
    version = ctypes.c_int()
    if lib.cuDriverGetVersion(ctypes.byref(version)) != 0 or version.value <= 0:
        return None
    return version.value // 1000, (version.value % 1000) // 10


def extra_for_driver(driver: tuple[int, int] | None) -> str | None:
    """The ernie-deploy extra whose onnxruntime-gpu build this driver runs (None: none does)."""
    if driver is None or driver[0] < 12:
        return None
    return EXTRA_FOR_CUDA[13 if driver[0] >= 13 else 12]


def placement_notice(
    requested: str,
    used: str,
    *,
    build_cuda: int | None = None,
    driver: tuple[int, int] | None = None,
    preload_notes: Sequence[str] = (),
) -> str | None:
    """One sentence when the session's first provider is not the one asked for, else None."""
    if requested in (used, CPU):
        return None
    if requested == TENSORRT and used == CUDA:
        return (
            "TensorrtExecutionProvider was requested but ONNX Runtime placed the model on CUDA "
            "without TensorRT (libnvinfer missing or of another major version): install the "
            "TensorRT that this onnxruntime-gpu was built with, or ask for device cuda."
        )
    where = f"{requested} was requested but ONNX Runtime placed the model on the CPU"
    if driver is None:
        why = (
            "no NVIDIA driver (libcuda.so.1) was found: install the driver, or run on a host "
            "with a GPU"
        )
    elif build_cuda is not None and driver[0] < build_cuda:
        extra = extra_for_driver(driver)
        fix = (
            f"reinstall with `pip uninstall -y onnxruntime-gpu && pip install "
            f"'ernie-deploy[{extra}]'` or upgrade the driver to >= {CUDA13_DRIVER}"
            if extra
            else f"upgrade the driver to >= {CUDA12_DRIVER} (CUDA 12) or >= {CUDA13_DRIVER}"
        )
        why = (
            f"the NVIDIA driver runs CUDA up to {driver[0]}.{driver[1]} but this onnxruntime-gpu "
            f"is built for CUDA {build_cuda}: {fix}"
        )
    elif preload_notes:
        why = (
            f"CUDA / cuDNN libraries did not load ({preload_notes[0][:160]}): install them with "
            "`pip install 'onnxruntime-gpu[cuda,cudnn]'` or the CUDA toolkit and cuDNN 9"
        )
    else:
        why = (
            f"check that CUDA {build_cuda or '12/13'} and cuDNN 9 libraries are installed "
            "(`python -c 'import onnxruntime; onnxruntime.preload_dlls()'` lists what is missing)"
        )
    return f"{where} (inference will be slow): {why}."


# ---------------------------------------------------------------------------------------------
# TensorRT
# ---------------------------------------------------------------------------------------------


def shape_profiles(
    inputs: Sequence[tuple[str, Sequence[object]]],
    batch_size: int | None = None,
    max_seq_length: int | None = None,
) -> dict[str, str]:
    """TensorRT min / opt / max shapes for every [batch, length] input.

    Dims the graph fixes are kept; otherwise batch runs 1..batch_size (opt: batch_size) and
    length 1..max_seq_length (opt: min(128, max)): one engine covers every batch the
    engine layer sends, so no shape outside the profile ever triggers a rebuild.
    """
    batch = batch_size or DEFAULT_TRT_BATCH
    length = max_seq_length or DEFAULT_TRT_LENGTH
    wanted = {
        "min": (1, 1),
        "opt": (batch, min(TRT_OPT_LENGTH, length)),
        "max": (batch, length),
    }
    out: dict[str, str] = {}
    for key, dims in wanted.items():
        parts = []
        for name, shape in inputs:
            fixed = [d if isinstance(d, int) and d > 0 else None for d in list(shape)[:2]]
            fixed += [None] * (2 - len(fixed))
            picked = [f if f is not None else d for f, d in zip(fixed, dims)]
            parts.append(f"{name}:{picked[0]}x{picked[1]}")
        out[f"trt_profile_{key}_shapes"] = ",".join(parts)
    return out


def tensorrt_options(
    device_id: int,
    cache_dir: Path,
    *,
    fp16: bool,
    profiles: dict[str, str],
) -> dict[str, str]:
    """TensorRT provider options: fp16 on the fp32 graph, caches under `cache_dir`, profiles."""
    path = str(cache_dir)
    return {
        "device_id": str(device_id),
        "trt_fp16_enable": "True" if fp16 else "False",
        # LayerNorm in fp16 loses accuracy on BERT-family graphs; TensorRT keeps it fp32.
        "trt_layer_norm_fp32_fallback": "True",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": path,
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": path,
        **profiles,
    }
