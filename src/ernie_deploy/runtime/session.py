"""The one place that builds onnxruntime.InferenceSession objects and feeds them by name."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ernie_deploy.errors import (
    ConfigError,
    ErnieDeployError,
    ModelLoadError,
    ModelNotFoundError,
    ModelRunError,
    UnsupportedGraphError,
    first_line,
)
from ernie_deploy.runtime import device as _device
from ernie_deploy.runtime import gpu as _gpu
from ernie_deploy.runtime.device import CPU, CUDA, TENSORRT, parse_device, resolve_providers
from ernie_deploy.runtime.device import usable_cpus as _usable_cpus
from ernie_deploy.runtime.gpu import import_onnxruntime

# Inputs we know how to produce, and the other names exporters give them.
FEEDABLE = ("input_ids", "token_type_ids", "attention_mask", "position_ids")
_ALIASES = {
    "segment_ids": "token_type_ids",
    "input_mask": "attention_mask",
    "pos_ids": "position_ids",
    "ids": "input_ids",
}
_ORT_DTYPES: dict[str, type[np.integer]] = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}
_OPT_LEVELS = ("disable", "basic", "extended", "all")

FP16_CPU_NOTICE = "use_fp16 only takes effect when deploying on gpu ..."
# Op types kept in fp32 by the fp16 conversion (beyond the converter's own list): the
# measurements behind the choice are in fp16_graph.py.
DEFAULT_FP16_BLOCK_OPS: tuple[str, ...] = ("Pow", "ReduceMean")
DEFAULT_FP16_MIN_AGREEMENT = 0.98

CapabilityProbe = Callable[[int], tuple[int, int] | None]


class FallbackWarning(RuntimeWarning):
    """A GPU session was asked for but ONNX Runtime placed the graph on the CPU."""


class Fp16FallbackWarning(FallbackWarning):
    """fp16 was asked for but the session runs fp32 (GPU too old, conversion or parity failed)."""


@dataclass(frozen=True)
class RuntimeConfig:
    """How to build a session.

    Args:
        device: "auto" (CUDA when installed, else CPU), "cpu", "cuda[:N]" or "tensorrt[:N]".
        intra_op_threads: threads inside one operator; None sizes it from the CPUs this
            process may use (affinity and cgroup quota), not the host's core count.
        inter_op_threads: threads across independent operators (sequential execution: 1).
        graph_optimization: "disable", "basic", "extended" or "all".
        fp16: ask for fp16; only honoured on CUDA/TensorRT with compute capability >= 7.0, and
            only when the converted graph passes a parity check against fp32 (else fp32 + warning).
        cpu_mem_arena: keep ORT's CPU arena (faster; grows to the largest batch seen).
        allow_spinning: whether ORT's intra-op threads spin waiting for work between operators
            (`session.intra_op.allow_spinning`); None keeps ORT's default (on). Off gives the
            cores back to other threads between runs, what a server doing Python work wants.
        fp16_block_ops: op types the fp16 conversion keeps in fp32 (default: Pow and ReduceMean,
            the variance of exported LayerNorms, where fp16 overflows; see runtime/fp16_graph.py).
        fp16_min_agreement: the share of probe-batch argmaxes fp16 must share with fp32 (0..1).
        cache_dir: where converted fp16 graphs (and TensorRT engines, under `trt/`) are cached;
            None: `.ernie_deploy_cache/` beside the model, or ~/.cache/ernie_deploy when that is
            not writable (never the working directory).
        batch_size: the largest batch the TensorRT shape profile covers (None: 32).
        max_seq_length: the longest sequence the TensorRT shape profile covers (None: 512).
        io_binding: bind inputs and outputs (one copy each way, outputs in ORT's arena); None
            turns it on for CUDA / TensorRT sessions, where it saves copies and allocations.
    """

    device: str = "auto"
    intra_op_threads: int | None = None
    inter_op_threads: int = 1
    graph_optimization: str = "all"
    fp16: bool = False
    cpu_mem_arena: bool = True
    allow_spinning: bool | None = None
    fp16_block_ops: tuple[str, ...] = DEFAULT_FP16_BLOCK_OPS
    fp16_min_agreement: float = DEFAULT_FP16_MIN_AGREEMENT
    cache_dir: str | Path | None = None
    batch_size: int | None = None
    max_seq_length: int | None = None
    io_binding: bool | None = None

    def __post_init__(self) -> None:
        parse_device(self.device)
        if isinstance(self.fp16_block_ops, str) or not all(
            isinstance(op, str) and op for op in self.fp16_block_ops
        ):
            raise ConfigError(
                "fp16_block_ops must be a sequence of op type names, e.g. ('Pow', 'ReduceMean')."
            )
        object.__setattr__(self, "fp16_block_ops", tuple(self.fp16_block_ops))
        if "Cast" in self.fp16_block_ops:
            raise ConfigError(
                "fp16_block_ops cannot contain 'Cast' (the converter never finishes); Cast-to-float "
                "nodes are kept in fp32 by name already: remove it."
            )
        if not 0.0 <= self.fp16_min_agreement <= 1.0:
            raise ConfigError("fp16_min_agreement must be between 0 and 1 (default 0.98).")
        if self.graph_optimization not in _OPT_LEVELS:
            raise ConfigError(
                f"Unknown graph optimisation level {self.graph_optimization!r}: "
                f"use one of {', '.join(_OPT_LEVELS)}."
            )
        if self.intra_op_threads is not None and self.intra_op_threads < 1:
            raise ConfigError("intra_op_threads must be at least 1 (or None to size it).")
        for name in ("batch_size", "max_seq_length"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a whole number of at least 1 (or None).")


@dataclass(frozen=True)
class InputSpec:
    """One graph input: its declared name, the feature it takes, and its integer dtype."""

    name: str
    feature: str
    dtype: type[np.integer]


@dataclass
class OnnxModel:
    """A loaded ONNX graph: feeds the inputs it declares, returns outputs by name."""

    path: Path
    config: RuntimeConfig
    session: object = field(repr=False)
    inputs: tuple[InputSpec, ...]
    outputs: tuple[str, ...]
    output_shapes: dict[str, list[object]]
    providers: tuple[str, ...]
    fp16_active: bool = False
    notices: tuple[str, ...] = ()
    bind_io: bool = False

    @property
    def on_gpu(self) -> bool:
        return self.providers[0] in (CUDA, TENSORRT)

    @property
    def features(self) -> frozenset[str]:
        """The features (input_ids, token_type_ids, ...) this graph takes."""
        return frozenset(spec.feature for spec in self.inputs)

    def run(
        self, feeds: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run on features keyed by FEEDABLE names; only the declared inputs are fed."""
        ort_feeds = {}
        for spec in self.inputs:
            value = feeds.get(spec.feature)
            if value is None:
                raise UnsupportedGraphError(
                    f"The graph needs input {spec.name!r} ({spec.feature}) but the caller "
                    f"provided only {', '.join(sorted(feeds))}."
                )
            ort_feeds[spec.name] = np.ascontiguousarray(value, dtype=spec.dtype)
        names = list(output_names) if output_names is not None else list(self.outputs)
        run = self._run_bound if self.bind_io else self.session.run  # type: ignore[attr-defined]
        try:
            values = run(names, ort_feeds)
        except Exception as exc:  # ORT raises several unrelated types: wrapped here, once
            shape = "x".join(str(n) for n in next(iter(ort_feeds.values())).shape)
            raise ModelRunError(
                f"ONNX Runtime failed running {self.path.name} on a {shape} batch "
                f"({first_line(exc)}): check that the model was exported for this task and "
                "these input lengths."
            ) from exc
        return dict(zip(names, values))

    def _run_bound(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """`session.run` through IO binding: each input copied to the device once, outputs left
        in ORT's arena on the device and copied back once. A binding per call (thread-safe)."""
        session: Any = self.session
        binding = session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, value)
        where = "cuda" if self.on_gpu else "cpu"
        index = parse_device(self.config.device).index if self.on_gpu else 0
        for name in names:
            binding.bind_output(name, where, index)
        session.run_with_iobinding(binding)
        return list(binding.copy_outputs_to_cpu())


def build_session_options(config: RuntimeConfig) -> object:
    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = config.intra_op_threads or _usable_cpus()
    opts.inter_op_num_threads = config.inter_op_threads
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[config.graph_optimization]
    # Shapes change with every batch: memory patterns only pay off for fixed shapes.
    opts.enable_mem_pattern = False
    opts.enable_cpu_mem_arena = config.cpu_mem_arena
    opts.log_severity_level = 3
    if config.allow_spinning is not None:
        opts.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if config.allow_spinning else "0"
        )
    return opts


def load_model(
    path: str | Path,
    config: RuntimeConfig | None = None,
    *,
    capability_probe: CapabilityProbe | None = None,
) -> OnnxModel:
    """Build the session for one .onnx file; every InferenceSession in the package comes from here.

    `capability_probe(gpu_index)` returns the GPU's (major, minor) compute capability or None;
    it defaults to `device.compute_capability` and is only called when fp16 is asked for on a GPU.
    GPU sessions: `onnxruntime.preload_dlls()` runs first; a session that lands on another
    provider than asked is reported (FallbackWarning + notice); TensorRT gets the fp32 graph
    with its own fp16 flag, caches and shape profiles (runtime/gpu.py); CUDA fp16 gets the fused
    fp16 graph (runtime/fp16.py).
    """
    ort = import_onnxruntime()
    config = config or RuntimeConfig()
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(
            f"Model file {path} does not exist: pass the path of an .onnx file or a model directory."
        )
    device = parse_device(config.device)
    providers = resolve_providers(device)
    requested = providers[0][0]
    preload_notes = _gpu.preload_cuda_libraries() if requested != CPU else ()
    probe = capability_probe or _device.compute_capability
    trt_fp16 = False
    if requested == TENSORRT:
        from ernie_deploy.runtime import fp16

        if config.fp16:
            trt_fp16 = fp16.fp16_gate(TENSORRT, probe(device.index), f"cuda:{device.index}").enabled
        profiles = _gpu.shape_profiles(
            _declared_inputs(path), config.batch_size, config.max_seq_length
        )
        cache = fp16.tensorrt_cache_dir(path, config.cache_dir)
        trt = _gpu.tensorrt_options(device.index, cache, fp16=trt_fp16, profiles=profiles)
        providers[0] = (TENSORRT, trt)
    if config.fp16:
        # The session fp16 is checked against, and the one kept when fp16 falls back, is true
        # fp32: TF32 off (ORT turns it on for Ampere+); under TensorRT, CUDA runs what it rejects.
        providers = [(n, {**o, "use_tf32": "0"} if n == CUDA else o) for n, o in providers]
    options = build_session_options(config)

    def make_session(
        model_path: Path, chosen: list[tuple[str, dict[str, str]]] | None = None
    ) -> Any:
        chosen = providers if chosen is None else chosen
        try:
            return ort.InferenceSession(
                str(model_path),
                sess_options=options,
                providers=[name for name, _ in chosen],
                provider_options=[opts for _, opts in chosen],
            )
        except Exception as exc:  # ORT raises several unrelated exception types
            missing = _missing_external_data(Path(model_path))
            if missing:
                raise ModelLoadError(
                    f"{model_path} keeps its weights in {', '.join(missing)}, "
                    f"{'which are' if len(missing) > 1 else 'which is'} not beside it: copy "
                    f"{'them' if len(missing) > 1 else 'it'} into {Path(model_path).parent}."
                ) from exc
            raise ModelLoadError(
                f"ONNX Runtime cannot load {model_path} ({first_line(exc)}): re-export the model "
                "(e.g. with paddle2onnx or `ernie-deploy convert`) and check the file is complete."
            ) from exc

    session = make_session(path)
    inputs = input_specs(session, path)
    notices: list[str] = []
    used = tuple(session.get_providers())
    if used[0] != requested:
        message = _gpu.placement_notice(
            requested,
            used[0],
            build_cuda=_gpu.ort_build()[2],
            driver=_gpu.driver_cuda_version(),
            preload_notes=preload_notes,
        )
        if message:
            warnings.warn(message, FallbackWarning, stacklevel=2)
            notices.append(message)
    fp16_active = False
    if config.fp16 and used[0] == TENSORRT and trt_fp16:
        from ernie_deploy.runtime import fp16

        reference = make_session(path, _device.reference_providers(device.index))
        failure, report = fp16.check_parity(session, reference, path, config.fp16_min_agreement)
        del reference
        if failure is None and report is not None:
            fp16_active = True
            notices.append(
                f"fp16 active (TensorRT trt_fp16_enable on the fp32 graph): max abs diff "
                f"{report.max_abs_diff:.2g} vs fp32 (TF32 off) on {report.probe}, argmax "
                f"agreement {report.agreement:.1%}."
            )
        else:
            message = f"{failure}: running fp32."
            warnings.warn(message, Fp16FallbackWarning, stacklevel=2)
            notices.append(message)
            del session
            providers[0] = (TENSORRT, {**providers[0][1], "trt_fp16_enable": "False"})
            session = make_session(path)
    elif config.fp16:
        from ernie_deploy.runtime import fp16

        capability = probe(device.index) if used[0] in fp16.FP16_PROVIDERS else None
        gate = fp16.fp16_gate(used[0], capability, f"cuda:{device.index}")
        if gate.enabled:
            outcome = fp16.prepare_fp16(path, session, make_session, config)
            session, fp16_active = outcome.session, outcome.fp16_active
            notices.extend(outcome.notices)
            del outcome  # when fp16 is kept nothing holds the fp32 session now: it is freed
        elif gate.notice:
            if gate.warn:
                warnings.warn(gate.notice, Fp16FallbackWarning, stacklevel=2)
            notices.append(gate.notice)
    on_gpu = used[0] in (CUDA, TENSORRT)
    return OnnxModel(
        path=path,
        config=config,
        session=session,
        inputs=inputs,
        outputs=tuple(o.name for o in session.get_outputs()),
        output_shapes={o.name: list(o.shape) for o in session.get_outputs()},
        providers=used,
        fp16_active=fp16_active,
        notices=tuple(notices),
        bind_io=config.io_binding if config.io_binding is not None else on_gpu,
    )


def _declared_inputs(path: Path) -> list[tuple[str, list[object]]]:
    """(name, dims) of the graph's inputs, read without loading its weights."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    return [
        (
            i.name,
            [
                d.dim_value if d.HasField("dim_value") else d.dim_param
                for d in i.type.tensor_type.shape.dim
            ],
        )
        for i in graph.input
        if i.name not in weights
    ]


def input_specs(session: object, path: Path) -> tuple[InputSpec, ...]:
    """The graph's inputs as InputSpecs; an input that cannot be fed is an UnsupportedGraphError."""
    specs = []
    for node in session.get_inputs():  # type: ignore[attr-defined]
        feature = node.name if node.name in FEEDABLE else _ALIASES.get(node.name)
        dtype = _ORT_DTYPES.get(node.type)
        if feature is None or dtype is None:
            raise UnsupportedGraphError(
                f"Graph {path.name} has input {node.name!r} of type {node.type}, which cannot be "
                f"fed: inputs must be int32/int64 and named one of {', '.join(FEEDABLE)}; "
                "re-export the model with those inputs."
            )
        specs.append(InputSpec(node.name, feature, dtype))
    if not any(spec.feature == "input_ids" for spec in specs):
        raise UnsupportedGraphError(
            f"Graph {path.name} has no input_ids input: re-export it with the token ids as an input."
        )
    return tuple(specs)


def _missing_external_data(model_path: Path) -> list[str]:
    """The external-data files the graph names that are not beside it (read after a failed load)."""
    from ernie_deploy.runtime.checks import external_data_files, read_graph

    try:
        graph = read_graph(model_path)
    except ErnieDeployError:  # the graph itself is unreadable: the caller's message says so
        return []
    return [n for n in external_data_files(graph) if not (model_path.parent / n).is_file()]
