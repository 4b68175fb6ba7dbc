"""GPU plumbing without a GPU: fake libcuda / nvidia-smi, fake providers over real CPU sessions.

What a GPU machine proves is in benchmarks/gpu_check.py; here: the compute-capability probe
(driver API and nvidia-smi, CUDA_VISIBLE_DEVICES honoured), preload_dlls before the first GPU
session, the fallback sentences, TensorRT's options (fp16 flag, caches, profiles), the TF32-off
fp32 reference, freeing it, IO binding, and the fp16 cache key's ORT version.
"""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
import types
import warnings
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest

from ernie_deploy import errors
from ernie_deploy.runtime import device as device_mod
from ernie_deploy.runtime import fp16, gpu
from ernie_deploy.runtime.bundled import bundled_path
from ernie_deploy.runtime.session import (
    FallbackWarning,
    Fp16FallbackWarning,
    RuntimeConfig,
    load_model,
)
from tests.runtime.test_fp16 import tagger

CPU, CUDA, TRT = gpu.CPU, gpu.CUDA, gpu.TENSORRT

# ---------------------------------------------------------------------------------------------
# compute capability and driver version: a fake libcuda.so and a fake nvidia-smi
# ---------------------------------------------------------------------------------------------

FAKE_LIBCUDA = r"""
#include <stdlib.h>
#include <string.h>
/* Three GPUs: 6.1, 8.6, 9.0. Like the real driver, device ordinals count the GPUs that
   CUDA_VISIBLE_DEVICES leaves visible (integers only here). */
static int caps[3][2] = {{6, 1}, {8, 6}, {9, 0}};
static int visible[3]; static int n_visible = -1;
int cuInit(unsigned flags) {
    const char *env = getenv("CUDA_VISIBLE_DEVICES");
    n_visible = 0;
    if (!env) { for (int i = 0; i < 3; i++) visible[n_visible++] = i; return 0; }
    char buf[256]; strncpy(buf, env, 255); buf[255] = 0;
    for (char *tok = strtok(buf, ","); tok && n_visible < 3; tok = strtok(NULL, ",")) {
        int d = atoi(tok); if (d < 0 || d > 2) break; visible[n_visible++] = d;
    }
    return 0;
}
int cuDeviceGet(int *dev, int ordinal) {
    if (ordinal < 0 || ordinal >= n_visible) return 101; /* CUDA_ERROR_INVALID_DEVICE */
    *dev = visible[ordinal]; return 0;
}
int cuDeviceGetAttribute(int *value, int attribute, int dev) {
    if (attribute == 75) { *value = caps[dev][0]; return 0; }
    if (attribute == 76) { *value = caps[dev][1]; return 0; }
    return 1;
}
int cuDriverGetVersion(int *version) { *version = 12040; return 0; }
"""

FAKE_SMI = """#!/bin/sh
# nvidia-smi ignores CUDA_VISIBLE_DEVICES: --id is a physical index or a UUID.
for arg in "$@"; do
  case "$arg" in
    --id=0) echo "7.5"; exit 0;;
    --id=1) echo "8.0"; exit 0;;
    --id=GPU-1234) echo "9.0"; exit 0;;
    --id=*) echo "No devices were found" >&2; exit 6;;
  esac
done
printf '7.5\\n8.0\\n'
"""


@pytest.fixture(scope="module")
def fake_libcuda(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the fake libcuda.so")
    d = tmp_path_factory.mktemp("libcuda")
    (d / "fake.c").write_text(FAKE_LIBCUDA)
    subprocess.run(
        [cc, "-shared", "-fPIC", "-o", str(d / "libcuda.so.1"), str(d / "fake.c")], check=True
    )
    return d / "libcuda.so.1"


@pytest.mark.parametrize(
    ("visible", "index", "expected"),
    [
        (None, 0, (6, 1)),
        (None, 2, (9, 0)),
        ("2,1", 0, (9, 0)),
        ("2,1", 1, (8, 6)),
        ("1", 1, None),
        ("", 0, None),
    ],
)
def test_driver_probe_reads_the_visible_gpu(
    fake_libcuda: Path, visible: str | None, index: int, expected: tuple[int, int] | None
) -> None:
    # A fresh process per case: the driver reads CUDA_VISIBLE_DEVICES once, at cuInit.
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    code = (
        "from ernie_deploy.runtime import device, gpu; "
        f"print(device._cc_from_driver({index}, {str(fake_libcuda)!r}), "
        f"gpu.driver_cuda_version({str(fake_libcuda)!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"{expected} (12, 4)"  # driver 12040: CUDA 12.4


def test_missing_libcuda_is_none(tmp_path: Path) -> None:
    assert device_mod._cc_from_driver(0, str(tmp_path / "libcuda.so.1")) is None
    assert gpu.driver_cuda_version(str(tmp_path / "libcuda.so.1")) is None


@pytest.fixture
def fake_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(FAKE_SMI)
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.parametrize(
    ("visible", "index", "expected"),
    [
        (None, 0, (7, 5)),
        (None, 1, (8, 0)),
        ("1", 0, (8, 0)),  # nvidia-smi --id=0 would be the wrong GPU
        ("1,0", 1, (7, 5)),
        ("GPU-1234", 0, (9, 0)),
        ("1", 1, None),  # only one GPU visible
        ("", 0, None),  # none visible
        ("-1,1", 0, None),  # an invalid entry hides the rest
    ],
)
def test_nvidia_smi_probe_honours_cuda_visible_devices(
    fake_smi: None,
    monkeypatch: pytest.MonkeyPatch,
    visible: str | None,
    index: int,
    expected: tuple[int, int] | None,
) -> None:
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert device_mod._cc_from_nvidia_smi(index) == expected
    monkeypatch.setattr(device_mod, "_cc_from_driver", lambda i: None)  # no libcuda.so.1
    device_mod.compute_capability.cache_clear()
    try:
        assert device_mod.compute_capability(index) == expected
    finally:
        device_mod.compute_capability.cache_clear()


# ---------------------------------------------------------------------------------------------
# ORT missing, preload_dlls, fallback sentences
# ---------------------------------------------------------------------------------------------


def test_missing_onnxruntime_names_the_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(errors.MissingDependencyError, match=r"ernie-deploy\[cpu\].*\[gpu-cu12\]"):
        gpu.import_onnxruntime()


def test_preload_runs_once_and_collects_what_it_prints(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[int] = []

    def preload_dlls() -> None:
        calls.append(1)
        print("Failed to load libcudnn.so.9: cannot open shared object file")
        warnings.warn("Failed to register bundled CUDA plugin EP from x.so: y", stacklevel=1)

    fake = types.SimpleNamespace(
        preload_dlls=preload_dlls, __version__="1.31.1", cuda_version="13.0"
    )
    monkeypatch.setattr(gpu, "import_onnxruntime", lambda: fake)
    gpu.preload_cuda_libraries.cache_clear()
    try:
        first = gpu.preload_cuda_libraries()
        assert gpu.preload_cuda_libraries() == first and calls == [1]
    finally:
        gpu.preload_cuda_libraries.cache_clear()
    assert first == (
        "Failed to load libcudnn.so.9: cannot open shared object file",
        "Failed to register bundled CUDA plugin EP from x.so: y",
    )
    assert capsys.readouterr().out == ""


def test_placement_sentences() -> None:
    assert gpu.placement_notice(CUDA, CUDA) is None and gpu.placement_notice(CPU, CPU) is None
    old_driver = gpu.placement_notice(CUDA, CPU, build_cuda=13, driver=(12, 4))
    assert old_driver is not None and "runs CUDA up to 12.4" in old_driver
    assert "built for CUDA 13" in old_driver and "'ernie-deploy[gpu-cu12]'" in old_driver
    assert old_driver.count(". ") == 0 and old_driver.endswith(".")  # one sentence
    ancient = gpu.placement_notice(CUDA, CPU, build_cuda=12, driver=(11, 8))
    assert ancient is not None and ">= 525" in ancient
    no_driver = gpu.placement_notice(CUDA, CPU, build_cuda=13, driver=None)
    assert no_driver is not None and "libcuda.so.1" in no_driver
    libs = gpu.placement_notice(
        CUDA, CPU, build_cuda=13, driver=(13, 0), preload_notes=["Failed x"]
    )
    assert libs is not None and "onnxruntime-gpu[cuda,cudnn]" in libs and "Failed x" in libs
    trt = gpu.placement_notice(TRT, CUDA)
    assert trt is not None and trt.startswith("TensorrtExecutionProvider was requested")
    assert gpu.extra_for_driver((13, 0)) == "gpu" and gpu.extra_for_driver((12, 2)) == "gpu-cu12"


# ---------------------------------------------------------------------------------------------
# load_model with fake GPU providers over real CPU sessions
# ---------------------------------------------------------------------------------------------


class FakeGpu:
    """Stands in for onnxruntime.InferenceSession: records providers, runs on the CPU."""

    real = onnxruntime.InferenceSession
    calls: list[tuple[list[str], list[dict[str, str]]]] = []
    alive: list[weakref.ref[Any]] = []
    lands_on: dict[str, str] = {}  # requested first provider -> what the session reports

    def __init__(
        self,
        path: str,
        sess_options: Any = None,
        providers: Any = None,
        provider_options: Any = None,
    ) -> None:
        FakeGpu.calls.append((list(providers), [dict(o) for o in provider_options]))
        FakeGpu.alive.append(weakref.ref(self))
        self._session = FakeGpu.real(path, sess_options=sess_options, providers=[CPU])
        self._first = FakeGpu.lands_on.get(providers[0], providers[0])

    def get_providers(self) -> list[str]:
        return [self._first, CPU]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> type[FakeGpu]:
    monkeypatch.setattr(device_mod, "available_providers", lambda: [TRT, CUDA, CPU])
    monkeypatch.setattr(onnxruntime, "InferenceSession", FakeGpu)
    preloads: list[int] = []
    monkeypatch.setattr(gpu, "preload_cuda_libraries", lambda: preloads.append(1) or ())
    monkeypatch.setattr(fp16, "FP16_PROVIDERS", (CUDA, TRT))
    FakeGpu.calls, FakeGpu.alive, FakeGpu.lands_on = [], [], {}
    FakeGpu.preloads = preloads  # type: ignore[attr-defined]
    return FakeGpu


def _cap(cc: tuple[int, int] | None) -> Any:
    return lambda index: cc


def test_tensorrt_gets_fp16_flag_caches_and_profiles(
    fake_gpu: type[FakeGpu], tmp_path: Path
) -> None:
    source = tagger(tmp_path / "m" / "model.onnx")
    config = RuntimeConfig(
        device="tensorrt", fp16=True, batch_size=8, max_seq_length=256, cache_dir=tmp_path / "c"
    )
    model = load_model(source, config, capability_probe=_cap((8, 6)))
    assert fake_gpu.preloads == [1]  # type: ignore[attr-defined]
    (names, options), (ref_names, ref_options) = fake_gpu.calls
    assert names == [TRT, CUDA, CPU]
    assert options[1]["use_tf32"] == "0"  # what TensorRT rejects runs true fp32 on CUDA
    trt = options[0]
    assert trt["trt_fp16_enable"] == "True" and trt["trt_layer_norm_fp32_fallback"] == "True"
    assert trt["trt_engine_cache_enable"] == trt["trt_timing_cache_enable"] == "True"
    assert (
        trt["trt_engine_cache_path"] == trt["trt_timing_cache_path"] == str(tmp_path / "c" / "trt")
    )
    assert (tmp_path / "c" / "trt").is_dir()
    assert trt["trt_profile_min_shapes"] == "input_ids:1x1"
    assert trt["trt_profile_opt_shapes"] == "input_ids:8x128"
    assert trt["trt_profile_max_shapes"] == "input_ids:8x256"
    # the fp32 graph goes to TensorRT; the parity reference is CUDA with TF32 off, then dropped
    assert ref_names == [CUDA, CPU] and ref_options[0]["use_tf32"] == "0"
    assert model.fp16_active and model.providers[0] == TRT and model.bind_io
    assert any("TensorRT trt_fp16_enable" in n for n in model.notices)
    assert not list((tmp_path / "c").glob("*.onnx"))  # no fp16 graph converted for TensorRT
    gc.collect()
    assert [r() is not None for r in fake_gpu.alive] == [True, False]


def test_load_gives_tensorrt_the_engine_batch_and_length(fake_gpu: type[FakeGpu]) -> None:
    import ernie_deploy

    ner = ernie_deploy.load("ner-zh", device="tensorrt", batch_size=4, max_seq_length=96)
    assert ner.model.providers[0] == TRT
    ((_, options),) = fake_gpu.calls
    assert options[0]["trt_profile_max_shapes"] == "input_ids:4x96,token_type_ids:4x96"
    assert options[0]["trt_profile_opt_shapes"] == "input_ids:4x96,token_type_ids:4x96"


def test_tensorrt_profiles_keep_static_dims_and_every_input() -> None:
    profiles = gpu.shape_profiles(
        [("input_ids", ["b", 64]), ("token_type_ids", [4, "s"])], None, None
    )
    assert profiles["trt_profile_min_shapes"] == "input_ids:1x64,token_type_ids:4x1"
    assert profiles["trt_profile_max_shapes"] == "input_ids:32x64,token_type_ids:4x512"


def test_tensorrt_on_an_old_gpu_builds_fp32_and_says_so(
    fake_gpu: type[FakeGpu], tmp_path: Path
) -> None:
    source = tagger(tmp_path / "model.onnx")
    config = RuntimeConfig(device="tensorrt", fp16=True, cache_dir=tmp_path / "c")
    with pytest.warns(Fp16FallbackWarning, match="has 6.1"):
        model = load_model(source, config, capability_probe=_cap((6, 1)))
    ((_, options),) = fake_gpu.calls
    assert options[0]["trt_fp16_enable"] == "False" and not model.fp16_active


def test_tensorrt_falling_back_to_cuda_is_reported(fake_gpu: type[FakeGpu], tmp_path: Path) -> None:
    fake_gpu.lands_on[TRT] = CUDA
    with pytest.warns(FallbackWarning, match="TensorrtExecutionProvider was requested .* on CUDA"):
        model = load_model(tagger(tmp_path / "model.onnx"), RuntimeConfig(device="tensorrt"))
    assert model.providers[0] == CUDA and any("TensorRT" in n for n in model.notices)


def test_cuda_fallback_names_the_extra_the_driver_needs(
    fake_gpu: type[FakeGpu], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_gpu.lands_on[CUDA] = CPU
    monkeypatch.setattr(gpu, "driver_cuda_version", lambda: (12, 2))
    monkeypatch.setattr(gpu, "ort_build", lambda: ("onnxruntime-gpu", "1.31.1", 13))
    with pytest.warns(FallbackWarning, match=r"ernie-deploy\[gpu-cu12\]"):
        model = load_model(tagger(tmp_path / "model.onnx"), RuntimeConfig(device="cuda"))
    assert not model.on_gpu and not model.bind_io and fake_gpu.preloads == [1]  # type: ignore[attr-defined]


def test_cuda_fp16_reference_is_tf32_off_and_freed(fake_gpu: type[FakeGpu], tmp_path: Path) -> None:
    source = tagger(tmp_path / "m" / "model.onnx")
    config = RuntimeConfig(device="cuda", fp16=True, cache_dir=tmp_path / "c")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        model = load_model(source, config, capability_probe=_cap((7, 5)))
    (fp32_names, fp32_opts), (half_names, _) = fake_gpu.calls
    assert fp32_names == [CUDA, CPU] and fp32_opts[0]["use_tf32"] == "0"
    assert model.fp16_active and model.bind_io
    gc.collect()
    assert [r() is not None for r in fake_gpu.alive] == [False, True]  # fp32 reference freed


# ---------------------------------------------------------------------------------------------
# IO binding, cache key
# ---------------------------------------------------------------------------------------------


def test_io_binding_is_byte_identical_to_plain_run() -> None:
    ner = bundled_path("ner-zh")  # an ERNIE graph: input_ids + token_type_ids
    assert ner is not None
    plain = load_model(ner / "model.onnx", RuntimeConfig(device="cpu"))
    bound = load_model(ner / "model.onnx", RuntimeConfig(device="cpu", io_binding=True))
    assert not plain.bind_io and bound.bind_io
    rng = np.random.default_rng(0)
    for rows, length in ((1, 7), (4, 33), (3, 128)):
        ids = rng.integers(100, 5000, (rows, length))
        ids[-1, length // 2 :] = 0
        feeds = {"input_ids": ids, "token_type_ids": np.zeros_like(ids)}
        a, b = plain.run(feeds), bound.run(feeds)
        assert list(a) == list(b)
        for name in a:
            assert a[name].dtype == b[name].dtype and a[name].tobytes() == b[name].tobytes()


def test_fp16_cache_key_covers_the_ort_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tagger(tmp_path / "model.onnx")
    first, _ = fp16.fp16_model_path(source, cache_dir=tmp_path / "c")
    monkeypatch.setattr(onnxruntime, "__version__", "9.99.0")
    second, _ = fp16.fp16_model_path(source, cache_dir=tmp_path / "c")
    assert first != second and first.is_file() and second.is_file()
