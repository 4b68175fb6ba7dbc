"""The GPU check's measurements: fp16 / TensorRT fp16 against fp32 with TF32 off, and timings.

Accuracy: each candidate session runs beside a CUDA session with `use_tf32=0` (ORT turns TF32
on for Ampere+, so its default "fp32" is TF32; that row is reported too) on the runtime's
real-text probes (runtime/probes.py, tokenized with each model's vocabulary): max abs diff and
argmax agreement over real tokens. Timing: ms per `OnnxModel.run` (median of up to 30 runs
after 2 warm-ups, ~0.3 s a cell), plain `session.run` vs IO binding, on the
ERNIE-3.0-medium-shaped graph of _gpu_model.py.
"""

from __future__ import annotations

import dataclasses
import gc
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _gpu_model
import numpy as np
from _models import ERNIE_BUNDLED

from ernie_deploy.runtime import device as device_mod
from ernie_deploy.runtime import fp16, gpu
from ernie_deploy.runtime.bundled import bundled_path
from ernie_deploy.runtime.session import OnnxModel, RuntimeConfig, load_model

BATCHES, LENGTHS = (1, 8, 32), (32, 128, 512)
TRT_BUILD_SECONDS = 150  # leave at least this much for a TensorRT engine build


@dataclass
class Bench:
    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def _reference(path: Path, allow_cpu: bool) -> Any:
    ort = gpu.import_onnxruntime()
    chosen = [(gpu.CPU, {})] if allow_cpu else device_mod.reference_providers(0)
    return ort.InferenceSession(
        str(path), providers=[n for n, _ in chosen], provider_options=[o for _, o in chosen]
    )


def _variants(allow_cpu: bool, trt: bool, cache: Path) -> dict[str, RuntimeConfig]:
    dev = "cpu" if allow_cpu else "cuda"
    out = {
        "fp32 (TF32 on, ORT default)": RuntimeConfig(device=dev),
        "fp16 (fused)": RuntimeConfig(device=dev, fp16=True, cache_dir=cache),
    }
    if trt and not allow_cpu:
        out["TensorRT fp16"] = RuntimeConfig(
            device="tensorrt", fp16=True, batch_size=32, max_seq_length=512, cache_dir=cache
        )
    return out


def _expect(name: str, model: OnnxModel, allow_cpu: bool) -> list[str]:
    if allow_cpu:
        return []
    bad = []
    if name.startswith("TensorRT") and model.providers[0] != gpu.TENSORRT:
        bad.append(f"{name} landed on {model.providers[0]}")
    if not name.startswith("TensorRT") and model.providers[0] != gpu.CUDA:
        bad.append(f"{name} landed on {model.providers[0]}")
    if "fp16" in name and not model.fp16_active:
        bad.append(f"{name} is not fp16 ({' | '.join(model.notices)[:300]})")
    return bad


def _feeds(model: OnnxModel, batch: int, length: int, vocab: int) -> dict[str, np.ndarray]:
    ids = np.random.default_rng(batch * 1000 + length).integers(100, vocab, (batch, length))
    return {
        "input_ids": ids,
        "token_type_ids": np.zeros_like(ids),
        "attention_mask": np.ones_like(ids),
        "position_ids": np.broadcast_to(np.arange(length), ids.shape),
    }


def _time(model: OnnxModel, feeds: dict[str, np.ndarray]) -> float:
    for _ in range(2):
        model.run(feeds)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 30 and time.perf_counter() - start < 0.3:
        t0 = time.perf_counter()
        model.run(feeds)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def run(*, allow_cpu: bool, trt: bool, deadline: float, work: Path) -> Bench:
    bench = Bench()
    shape = _gpu_model.TINY if allow_cpu else _gpu_model.MEDIUM
    if allow_cpu:  # let the CPU provider stand in for CUDA, so the fp16 path itself runs
        fp16.FP16_PROVIDERS = (gpu.CPU, gpu.CUDA, gpu.TENSORRT)
        device_mod.compute_capability = lambda index=0: (8, 0)  # type: ignore[assignment]
    medium = work / f"ernie-{shape.layers}l{shape.hidden}h"
    if not (medium / "model.onnx").is_file():
        t0 = time.time()
        _gpu_model.build(medium, shape)
        print(f"built {medium} ({shape.describe()}) in {time.time() - t0:.0f} s", flush=True)
    models = {"ERNIE-3.0-medium shape": medium / "model.onnx"}
    for task in ("token_cls", "seq_cls"):
        found = bundled_path(ERNIE_BUNDLED[task])  # fp32 ERNIE: fp16 / TensorRT start from fp32
        if found is not None:
            models[found.name] = found / "model.onnx"
    cache = work / "cache"
    accuracy = ["| model | variant | provider | max abs diff vs fp32 (TF32 off) | argmax agreement | load s |",
                "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    timings: dict[str, dict[tuple[int, int], float]] = {}
    trt_missing = ""
    for model_name, path in models.items():
        reference = _reference(path, allow_cpu)
        for name, config in _variants(allow_cpu, trt, cache).items():
            is_trt = name.startswith("TensorRT")
            left = deadline - time.time()
            if is_trt and left < TRT_BUILD_SECONDS or left < 20:
                accuracy.append(
                    f"| {model_name} | {name} | skipped: {left:.0f} s of the budget left | | | |"
                )
                continue
            if is_trt and trt_missing:
                accuracy.append(f"| {model_name} | {name} | skipped: {trt_missing} | | | |")
                continue
            t0 = time.time()
            model = load_model(path, config)
            load_s = time.time() - t0
            if is_trt and model.providers[0] != gpu.TENSORRT:
                # TensorRT's libraries are not on this machine: not a fault of the runtime.
                trt_missing = f"TensorRT did not load ({' | '.join(model.notices)[:200]})"
                accuracy.append(f"| {model_name} | {name} | skipped: {trt_missing} | | | |")
                del model
                continue
            bench.failures += [f"{model_name}: {b}" for b in _expect(name, model, allow_cpu)]
            failure, report = fp16.check_parity(model.session, reference, path, 0.0)
            if report is None:
                bench.failures.append(f"{model_name} {name}: {failure}")
                continue
            accuracy.append(
                f"| {model_name} | {name} | {model.providers[0]} | {report.max_abs_diff:.3g} | "
                f"{report.agreement:.2%} | {load_s:.1f} |"
            )
            if (
                "fp16" in name
                and report.agreement < 0.999
                and model_name != "ERNIE-3.0-medium shape"
            ):
                bench.failures.append(
                    f"{model_name} {name}: agreement {report.agreement:.2%} < 99.9%"
                )
            if model_name.startswith("ERNIE-3.0-medium"):
                for bind in (False, True):
                    row = timings.setdefault(f"{name}, {'IO binding' if bind else 'plain run'}", {})
                    bound = dataclasses.replace(model, bind_io=bind)
                    for b in BATCHES if not allow_cpu else BATCHES[:2]:
                        for n in LENGTHS if not allow_cpu else LENGTHS[:2]:
                            if time.time() < deadline:
                                row[(b, n)] = _time(bound, _feeds(model, b, n, shape.vocab))
            del model
            gc.collect()
        del reference
        gc.collect()
    bench.lines += [
        "Accuracy on the runtime's 16 real-text probes (runtime/probes.py):",
        "",
        *accuracy,
        "",
    ]
    cells = [(b, n) for b in BATCHES for n in LENGTHS]
    bench.lines += [
        f"ms per batch (median), {shape.describe()}, random weights; cells batch × length:",
        "",
        "| variant | " + " | ".join(f"{b}×{n}" for b, n in cells) + " |",
        "| --- | " + " | ".join("---" for _ in cells) + " |",
    ]
    for name, row in timings.items():
        values = [f"{row[c]:.2f}" if c in row else "–" for c in cells]
        bench.lines.append(f"| {name} | " + " | ".join(values) + " |")
    return bench
