"""Device probing: usable CPUs, execution providers, CUDA compute capability."""

from __future__ import annotations

import ctypes
import math
import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ernie_deploy.errors import ConfigError, ProviderNotAvailableError

DEVICES = ("auto", "cpu", "cuda[:N]", "tensorrt[:N]")

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"


@dataclass(frozen=True)
class Device:
    """A parsed device request: `kind` is "auto", "cpu", "cuda" or "tensorrt"; `index` the GPU id."""

    kind: str
    index: int = 0

    @property
    def is_gpu(self) -> bool:
        return self.kind in ("cuda", "tensorrt")


def parse_device(spec: str) -> Device:
    """Parse "auto", "cpu", "cuda", "cuda:1", "gpu", "tensorrt[:N]" (case-insensitive)."""
    text = spec.strip().lower()
    kind, _, index = text.partition(":")
    if kind == "gpu":
        kind = "cuda"
    if kind not in ("auto", "cpu", "cuda", "tensorrt") or (index and kind in ("auto", "cpu")):
        raise ConfigError(f"Unknown device {spec!r}: use one of {', '.join(DEVICES)}.")
    if index and not index.isdigit():
        raise ConfigError(f"Bad GPU index in device {spec!r}: write it as cuda:0, cuda:1, ...")
    return Device(kind, int(index) if index else 0)


def available_providers() -> list[str]:
    from ernie_deploy.runtime.gpu import import_onnxruntime

    return list(import_onnxruntime().get_available_providers())


def resolve_providers(device: Device) -> list[tuple[str, dict[str, str]]]:
    """The provider list (with options) for a device; an explicit GPU request must be installable."""
    have = available_providers()
    if device.kind == "cpu":
        return [(CPU, {})]
    if device.kind == "auto":
        if CUDA in have:
            return [(CUDA, _cuda_options(device.index)), (CPU, {})]
        return [(CPU, {})]
    wanted = TENSORRT if device.kind == "tensorrt" else CUDA
    if wanted not in have:
        raise ProviderNotAvailableError(
            f"Device {device.kind} needs {wanted}, which this onnxruntime build lacks "
            f"(it has {', '.join(have)}): install the GPU build with "
            "`pip uninstall -y onnxruntime && pip install 'ernie-deploy[gpu]'` (CUDA 13, driver "
            ">= 580; 'ernie-deploy[gpu-cu12]' for older drivers; or `make gpu`)."
        )
    providers: list[tuple[str, dict[str, str]]] = []
    if device.kind == "tensorrt":
        providers.append((TENSORRT, {"device_id": str(device.index)}))
    providers.append((CUDA, _cuda_options(device.index)))
    providers.append((CPU, {}))
    return providers


def _cuda_options(index: int) -> dict[str, str]:
    # kSameAsRequested keeps the arena from doubling on every new (batch, length) shape.
    return {"device_id": str(index), "arena_extend_strategy": "kSameAsRequested"}


def reference_providers(index: int) -> list[tuple[str, dict[str, str]]]:
    """CUDA with TF32 off (ORT turns it on for Ampere+): the true fp32 that fp16 is checked against."""
    return [(CUDA, {**_cuda_options(index), "use_tf32": "0"}), (CPU, {})]


def usable_cpus() -> int:
    """CPUs this process may actually use: affinity mask, capped by a cgroup CPU quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = _cgroup_cpu_limit()
    if quota is not None:
        count = min(count, max(1, math.floor(quota)))
    return max(1, count)


def _cgroup_cpu_limit() -> float | None:
    """CPU limit from cgroup v2 `cpu.max` or v1 `cpu.cfs_quota_us`; None when unlimited."""
    v2 = Path("/sys/fs/cgroup/cpu.max")
    try:
        if v2.exists():
            quota, period = v2.read_text().split()[:2]
            if quota != "max":
                return int(quota) / int(period)
            return None
        q = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
        p = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
        if q.exists() and p.exists():
            quota_us = int(q.read_text())
            if quota_us > 0:
                return quota_us / int(p.read_text())
    except (OSError, ValueError):
        return None
    return None


@cache
def compute_capability(index: int = 0) -> tuple[int, int] | None:
    """(major, minor) of CUDA device `index`, probed without paddle or torch; None if unknown.

    `index` counts the GPUs this process sees, as CUDA and ONNX Runtime's `device_id` do: after
    `CUDA_VISIBLE_DEVICES` (read when probing, never at import) has picked and reordered them.
    The driver API applies it itself; `nvidia-smi` does not, so the entry is looked up first.
    """
    cc = _cc_from_driver(index)
    return cc if cc is not None else _cc_from_nvidia_smi(index)


def _cc_from_driver(index: int, library: str = "libcuda.so.1") -> tuple[int, int] | None:
    try:
        lib = ctypes.CDLL(library)
    except OSError:
        return None
    major, minor, dev = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, _MINOR = 76
    if lib.cuInit(0) != 0 or lib.cuDeviceGet(ctypes.byref(dev), index) != 0:
        return None
    if lib.cuDeviceGetAttribute(ctypes.byref(major), 75, dev) != 0:
        return None
    if lib.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev) != 0:
        return None
    return major.value, minor.value


def visible_gpu(index: int) -> str | None:
    """What `nvidia-smi --id` must be given for the index-th GPU this process sees (None: none).

    CUDA_VISIBLE_DEVICES lists indices, UUIDs (GPU-...) or MIG ids; nvidia-smi takes all three.
    Unset means every GPU in nvidia-smi's order; empty or an invalid entry hides the rest.
    """
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return str(index)
    entries = []
    for entry in (e.strip() for e in listed.split(",")):
        if not entry or (entry.lstrip("-").isdigit() and int(entry) < 0):
            break  # CUDA stops at the first invalid entry
        entries.append(entry)
    return entries[index] if 0 <= index < len(entries) else None


def _cc_from_nvidia_smi(index: int) -> tuple[int, int] | None:
    exe = shutil.which("nvidia-smi")
    gpu = visible_gpu(index)
    if exe is None or gpu is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=compute_cap", "--format=csv,noheader", f"--id={gpu}"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        major, minor = out.splitlines()[0].strip().split(".")
        return int(major), int(minor)
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
