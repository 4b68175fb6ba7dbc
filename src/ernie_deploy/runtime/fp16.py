"""fp16 sessions: the GPU gate, a content-keyed cache of converted graphs, a parity check vs fp32.

`load_model` asks `fp16_gate` (CUDA/TensorRT and compute capability >= 7.0), then calls
`prepare_fp16`, which is provider-agnostic (the tests run it on the CPU provider):

1. Fuse, then convert (`fp16_graph.fuse_and_convert`: ORT's GPU recipe, so LayerNorm,
   SkipLayerNorm and Attention stay fused in fp16; `convert_to_fp16` on the unfused graph only
   when the fusions fail), unless the cache already holds the result.
2. The cache key is a sha256 of the model bytes (external data included), the block list,
   FORMAT_VERSION and the onnxruntime version (its fuser and converter write the graph):
   `<model dir>/.ernie_deploy_cache/<stem>.fp16-<hash16>.onnx`, or
   `RuntimeConfig.cache_dir`, or ~/.cache/ernie_deploy when the model's directory is not
   writable or is the working directory (nothing is ever written into the working directory).
   Files are written under a temporary name and `os.replace`d, so concurrent loads never see
   half a file. Graphs past protobuf's 2 GB limit keep their weights in a `.data` file beside.
3. Run fp32 and fp16 on real-text probes made with the model's own tokenizer (runtime/probes.py;
   random ids only when there is none); on CUDA the fp32 reference runs with TF32 off (ORT turns
   it on for Ampere+, so "fp32" would be TF32). NaN/Inf, or argmax agreement below
   `RuntimeConfig.fp16_min_agreement`, falls back to fp32 with an Fp16FallbackWarning; when fp16
   is kept the fp32 session is dropped, freeing its GPU memory.

Agreement (default 0.98): a position agrees when fp16's argmax is fp32's, or when fp32 scores
the two within 1% of the output's scale (a tie that fp16 rounding may break either way). The
text probe is 16 sentences (~400 real tokens); the fallback 8 rows of lengths 32..2. A healthy
fp16 model flips none (measured: 100% on every test graph); an overflowing one agreed on 17-24%.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ernie_deploy.errors import ConfigError
from ernie_deploy.runtime.checks import external_data_files
from ernie_deploy.runtime.device import CUDA, TENSORRT
from ernie_deploy.runtime.probes import PROBE_TEXTS, random_probe, text_probe
from ernie_deploy.runtime.session import (
    DEFAULT_FP16_BLOCK_OPS,
    FP16_CPU_NOTICE,
    Fp16FallbackWarning,
    InputSpec,
    RuntimeConfig,
    input_specs,
)

__all__ = [
    "DEFAULT_FP16_BLOCK_OPS",
    "FP16_PROVIDERS",
    "Fp16Gate",
    "Fp16Outcome",
    "ParityReport",
    "compare_outputs",
    "fp16_gate",
    "fp16_model_path",
    "prepare_fp16",
    "probe_feeds",
]

FP16_PROVIDERS = (CUDA, TENSORRT)
MIN_CAPABILITY = (7, 0)
FORMAT_VERSION = "3"  # 2: fused before conversion; 3: quantized ops kept fp32
CACHE_DIRNAME = ".ernie_deploy_cache"
TIE_TOLERANCE = 0.01  # relative to the output's largest magnitude (at least 1)
_PROTO_LIMIT = 2**31 - 2**26  # protobuf's 2 GiB cap, less a margin for the graph itself
_NEED = "fp16 needs a GPU of compute capability >= 7.0 (T4, A10, A100, H100)"


@dataclass(frozen=True)
class Fp16Gate:
    """The gate's verdict: convert to fp16, or stay fp32 with a notice (a warning when `warn`)."""

    enabled: bool
    notice: str | None = None
    warn: bool = False


def fp16_gate(provider: str, capability: tuple[int, int] | None, gpu: str = "cuda:0") -> Fp16Gate:
    """fp16 only for a CUDA/TensorRT session on a GPU of compute capability >= 7.0."""
    if provider not in FP16_PROVIDERS:
        return Fp16Gate(False, FP16_CPU_NOTICE)
    if capability is None:
        found = f"the compute capability of {gpu} could not be read (no libcuda.so.1 or nvidia-smi)"
        return Fp16Gate(False, f"{_NEED}; {found}: running fp32.", warn=True)
    if tuple(capability) < MIN_CAPABILITY:
        found = f"{gpu} has {capability[0]}.{capability[1]}"
        return Fp16Gate(False, f"{_NEED}; {found}: running fp32.", warn=True)
    return Fp16Gate(True)


@dataclass(frozen=True)
class Fp16Outcome:
    """What `prepare_fp16` settled on: the session to use, whether it is fp16, and why."""

    session: Any
    fp16_active: bool
    notices: tuple[str, ...]


def prepare_fp16(
    path: Path,
    fp32_session: Any,
    make_session: Callable[[Path], Any],
    config: RuntimeConfig,
) -> Fp16Outcome:
    """Convert (or reuse the cached) fused fp16 graph, check it against fp32, pick the session.

    `fp32_session` is the reference: on CUDA, `load_model` builds it with TF32 off. When fp16
    is kept, this function holds no reference to it, so the caller's drop frees it.
    """
    notes: list[str] = []

    def fall_back(reason: str, hint: str = "") -> Fp16Outcome:
        message = f"{reason}: running fp32{hint}."
        warnings.warn(message, Fp16FallbackWarning, stacklevel=4)  # load_model's caller
        return Fp16Outcome(fp32_session, False, (*notes, message))

    try:
        fp16_path, converter_notes = fp16_model_path(path, config.fp16_block_ops, config.cache_dir)
    except ConfigError:
        raise
    except Exception as exc:  # the converter and onnx raise many unrelated types
        return fall_back(f"fp16 conversion of {path.name} failed ({_first_line(exc)})")
    notes.extend(converter_notes)
    try:
        fp16_session = make_session(fp16_path)
    except Exception as exc:
        return fall_back(
            f"ONNX Runtime cannot load the fp16 graph {fp16_path} ({_first_line(exc)})"
        )
    failure, report = check_parity(fp16_session, fp32_session, path, config.fp16_min_agreement)
    if failure is not None:
        del fp16_session
        return fall_back(failure, _HINT)
    assert report is not None
    notes.append(
        f"fp16 active ({fp16_path}): max abs diff {report.max_abs_diff:.2g} vs fp32 "
        f"(TF32 off) on {report.probe}, argmax agreement {report.agreement:.1%}."
    )
    return Fp16Outcome(fp16_session, True, tuple(notes))


_HINT = " (keep more op types in fp32 with RuntimeConfig(fp16_block_ops=...))"


def check_parity(
    candidate: Any, reference: Any, path: Path, min_agreement: float
) -> tuple[str | None, ParityReport | None]:
    """Run both sessions on the probe batch; (why fp16 must not be used, or None; the report)."""
    specs = input_specs(reference, path)
    feeds, mask, probe = probe_feeds(reference, specs, path.parent)
    names = [o.name for o in reference.get_outputs()]
    try:
        expected = dict(zip(names, reference.run(names, feeds)))
        got = dict(zip(names, candidate.run(names, feeds)))
    except Exception as exc:
        return f"fp16 could not be checked on a probe batch ({_first_line(exc)})", None
    report = compare_outputs(expected, got, mask)
    report = ParityReport(report.max_abs_diff, report.agreement, report.problem, probe)
    if report.problem:
        return f"fp16 gave {report.problem} on the probe batch", report
    if report.agreement < min_agreement:
        return (
            f"fp16 agreed with fp32 on only {report.agreement:.1%} of probe argmaxes "
            f"(< {min_agreement * 100:g}%)",
            report,
        )
    return None, report


# ---------------------------------------------------------------------------------------------
# parity
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParityReport:
    """fp16 vs fp32 on one batch: largest |difference|, argmax agreement, first hard failure."""

    max_abs_diff: float
    agreement: float
    problem: str | None = None
    probe: str = "a probe batch"


def probe_feeds(
    session: Any, specs: Sequence[InputSpec], model_dir: Path | None = None
) -> tuple[dict[str, np.ndarray], np.ndarray, str]:
    """The probe batch for the inputs the graph declares, its real-token mask, and what it is.

    Real sentences tokenized with the tokenizer in `model_dir` (see runtime/probes.py) when the
    graph's input shape is dynamic; else random ids (static dims honoured).
    """
    shapes = {node.name: list(node.shape) for node in session.get_inputs()}
    ids_name = next(spec.name for spec in specs if spec.feature == "input_ids")
    shape = shapes.get(ids_name, [])
    dynamic = not any(isinstance(d, int) and d > 0 for d in shape[:2])
    features = text_probe(model_dir) if model_dir is not None and dynamic else None
    what = f"{len(PROBE_TEXTS)} real-text probes"
    if features is None:
        features, what = random_probe(shape), "a random-id probe batch (no tokenizer found)"
    feeds = {s.name: np.ascontiguousarray(features[s.feature], dtype=s.dtype) for s in specs}
    return feeds, features["attention_mask"].astype(bool), what


def compare_outputs(
    reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray], mask: np.ndarray
) -> ParityReport:
    """Compare outputs by name; argmax over the last axis, real tokens only for [B, T, ...]."""
    worst, agreed, counted = 0.0, 0, 0
    for name, ref in reference.items():
        ref, got = np.asarray(ref), np.asarray(candidate[name])
        if got.shape != ref.shape:
            return ParityReport(
                float("inf"), 0.0, f"shape {got.shape} for {name!r} (not {ref.shape})"
            )
        if ref.dtype.kind == "f":
            ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
            finite = np.isfinite(ref64)
            if (~np.isfinite(got64) & finite).any():
                return ParityReport(float("inf"), 0.0, f"NaN/Inf in output {name!r}")
            if finite.any():
                worst = max(worst, float(np.abs(ref64 - got64)[finite].max()))
            if ref.ndim < 2 or ref.shape[-1] < 2:
                continue
            scale = max(1.0, float(np.abs(ref64[finite]).max())) if finite.any() else 1.0
            picked = np.take_along_axis(ref64, got64.argmax(-1)[..., None], -1)[..., 0]
            same = (ref64.argmax(-1) == got64.argmax(-1)) | (
                ref64.max(-1) - picked <= TIE_TOLERANCE * scale
            )
        else:
            same = ref == got
        if same.ndim >= 2 and same.shape[:2] == mask.shape:
            same = same[mask]
        agreed, counted = agreed + int(same.sum()), counted + same.size
    return ParityReport(worst, agreed / counted if counted else 1.0)


# ---------------------------------------------------------------------------------------------
# cache
# ---------------------------------------------------------------------------------------------


def fp16_model_path(
    source: Path,
    block_ops: Sequence[str] = DEFAULT_FP16_BLOCK_OPS,
    cache_dir: str | Path | None = None,
) -> tuple[Path, tuple[str, ...]]:
    """The cached fp16 graph for `source`, converting (and caching) it on a miss; plus notices."""
    import onnx

    source = Path(source).resolve()
    model = onnx.load(str(source), load_external_data=False)
    name = f"{source.stem}.fp16-{_digest(source, model, block_ops)[:16]}.onnx"
    dirs = _cache_dirs(source, cache_dir)
    for directory in dirs:
        if (directory / name).is_file():
            return directory / name, ()
    from ernie_deploy.runtime import fp16_graph

    try:
        converted, notes = fp16_graph.fuse_and_convert(source, block_ops)
    except ConfigError:
        raise
    except Exception as exc:  # the fusions assert on graphs they do not expect
        converted, notes = fp16_graph.convert_to_fp16(model, block_ops, source.parent)
        notes = (f"transformer fusion failed ({_first_line(exc)}): converted unfused", *notes)
    for directory in dirs:
        if _writable(directory):
            try:
                _atomic_save(converted, directory / name)
                return directory / name, notes
            except OSError:
                continue
    if cache_dir is not None:
        raise ConfigError(f"Cannot write the fp16 cache in {dirs[0]}: pass a writable cache_dir.")
    raise OSError(
        f"no writable fp16 cache directory among {', '.join(map(str, dirs))}; pass cache_dir"
    )


def tensorrt_cache_dir(source: Path, cache_dir: str | Path | None = None) -> Path:
    """Where TensorRT keeps engines and its timing cache for `source`: `trt/` in the first
    writable fp16 cache directory (engines are keyed by TensorRT itself, per graph and GPU)."""
    dirs = _cache_dirs(Path(source).resolve(), cache_dir)
    for directory in dirs:
        if _writable(directory / "trt"):
            return directory / "trt"
    raise ConfigError(f"Cannot write the TensorRT cache in {dirs[0]}: pass a writable cache_dir.")


def _cache_dirs(source: Path, cache_dir: str | Path | None) -> list[Path]:
    """Where the converted graph may live, in order; never the current working directory."""
    if cache_dir is not None:
        return [Path(cache_dir).expanduser().resolve()]
    user = Path.home() / ".cache" / "ernie_deploy"
    if source.parent == Path.cwd().resolve():
        return [user]
    return [source.parent / CACHE_DIRNAME, user]


def _writable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(directory, os.W_OK | os.X_OK)


def _digest(source: Path, model: Any, block_ops: Sequence[str]) -> str:
    """Model bytes (external data too), block list, recipe version, and the ORT version: its
    fusions and converter write the graph, so another ORT may write another one."""
    from ernie_deploy.runtime.gpu import import_onnxruntime

    ort_version = import_onnxruntime().__version__
    ops = ",".join(sorted(set(block_ops)))
    key = f"ernie-deploy fp16 v{FORMAT_VERSION}\0ort {ort_version}\0{ops}\0"
    digest = hashlib.sha256(key.encode())
    locations = sorted(external_data_files(model))
    for file in [source, *(source.parent / loc for loc in locations)]:
        with file.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _atomic_save(model: Any, target: Path) -> None:
    """Write to a temporary folder beside `target`, then os.replace: readers never see half."""
    import onnx

    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        staged = staging / target.name
        if _too_big(model):
            data = f"{target.name}.data"
            onnx.save_model(model, str(staged), save_as_external_data=True, location=data)
            os.replace(staging / data, target.parent / data)
        else:
            staged.write_bytes(model.SerializeToString())
        os.replace(staged, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _too_big(model: Any) -> bool:
    try:
        return int(model.ByteSize()) > _PROTO_LIMIT
    except Exception:  # protobuf refuses to size messages past 2 GiB on some builds
        return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]
