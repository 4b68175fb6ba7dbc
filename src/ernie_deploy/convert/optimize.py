"""`optimize`: ONNX Runtime graph optimisations and transformer fusions, verified, in a new model dir.

Levels (the meaning optimum gives them):
- O1: ORT's basic graph optimisations (constant folding, redundant node elimination), written
  offline; standard ONNX ops only, no transformer-specific fusions.
- O2: O1, then ORT's transformer fusions (`onnxruntime.transformers`, model_type "bert"):
  EmbedLayerNormalization, Attention, SkipLayerNormalization, BiasGelu / Gelu. paddle2onnx
  ERNIE graphs are first rewritten (`convert.fusion`) so that Attention fuses too.
- O3: O2 with GELU replaced by its tanh approximation (FastGelu).

ORT's own extended / layout optimisations are not written into the file: they depend on the
execution provider, and the runtime applies them when it loads the graph. The fusions run with
`opt_level=0` (pure Python, so torch is not imported) and a raw 2-D attention mask, which is
right for left and right padding alike. The optimised graph keeps the source's inputs and outputs.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ernie_deploy.convert.fusion import RewriteReport, rewrite_attention
from ernie_deploy.convert.outdir import (
    check_loads,
    check_output,
    copy_model_files,
    model_input,
    staged_dir,
)
from ernie_deploy.convert.verify import (
    ParityReport,
    check_tolerance,
    compare,
    probe_features,
    run_onnx,
)
from ernie_deploy.errors import (
    ConfigError,
    MissingDependencyError,
    ModelLoadError,
    UnsupportedGraphError,
    VerificationError,
    first_line,
)
from ernie_deploy.runtime.checks import read_graph
from ernie_deploy.runtime.fp16_graph import FUSED_OPS, quiet_fusion_logs
from ernie_deploy.runtime.model_dir import ModelFiles, find_model
from ernie_deploy.runtime.session import RuntimeConfig
from ernie_deploy.tasks.tokenization import Tokenizer

LEVELS = ("O1", "O2", "O3")
# O3's tanh GELU differs from erf GELU by up to 4.7e-4 per activation (at |x| ~ 2.7). Measured on
# 12-layer BERT-base-shaped graphs whose pre-GELU activations have std ~0.5 / 1.4 / 2.8, the
# outputs moved by 3.5e-4 / 2.1e-3 / 3.4e-3 (O2: <= 4e-5). 1e-2 leaves ~3x room for trained
# weights and still fails a broken fusion: on a 6-layer ERNIE, Attention without its mask moved
# the logits by 0.6, and a q scale of 0.2 instead of 1/8 by 0.045.
DEFAULT_TOLERANCES = {"O1": 1e-4, "O2": 1e-4, "O3": 1e-2}
_HINTS = {
    "O1": "keep the source graph (ORT applies these optimisations itself when it loads it)",
    "O2": "try --level O1, which writes no transformer fusions",
    "O3": "try --level O2 (exact GELU), or pass a looser --tolerance if this accuracy will do",
}
_PROBE_LENGTH = 128
_PROTO_LIMIT = 2**31 - 2**20  # protobuf cannot serialise 2 GiB; leave room for the graph


@dataclass(frozen=True)
class OptimizeReport:
    """What `optimize_model` wrote and how closely it matches the source graph.

    Args:
        level: "O1", "O2" or "O3".
        source: the source .onnx file.
        out: the new model directory (model.onnx + the source's tokenizer / config files).
        fused: op type -> how many more of them the output has than the source.
        nodes_before: node count of the source graph.
        nodes_after: node count of the optimised graph.
        rewrite: what the paddle2onnx attention rewrite changed (None below O2).
        parity: the optimised graph against the source graph on the probe batch.
    """

    level: str
    source: Path
    out: Path
    fused: dict[str, int]
    nodes_before: int
    nodes_after: int
    rewrite: RewriteReport | None
    parity: ParityReport

    @property
    def onnx_path(self) -> Path:
        return self.out / "model.onnx"

    def lines(self) -> list[str]:
        """What the CLI prints."""
        fused = ", ".join(f"{op} {n}" for op, n in self.fused.items()) or "none"
        out = [
            f"optimised ({self.level}) {self.source} -> {self.onnx_path}",
            f"nodes {self.nodes_before} -> {self.nodes_after}; fused ops: {fused}",
        ]
        if self.rewrite is not None and self.rewrite.changed:
            out.append(
                f"paddle attention rewrite: {self.rewrite.scales_moved} q scalings moved after "
                f"QK, {self.rewrite.masks_rebuilt} masks rebuilt from input_ids "
                f"(pad id {self.rewrite.pad_id})"
            )
        if self.level != "O1" and not self.fused.get("Attention"):
            out.append("note: Attention did not fuse; the other fusions still apply")
        return out + self.parity.lines() + [f"load it with: ernie-deploy predict {self.out} TEXT"]


def optimize_model(
    model: str | Path,
    out: str | Path,
    level: str = "O2",
    *,
    tolerance: float | None = None,
    overwrite: bool = False,
    tokenizer_dir: str | Path | None = None,
) -> OptimizeReport:
    """Optimise a model's graph into a new model directory, verified against the source graph.

    Args:
        model: a model directory, or an .onnx file inside one.
        out: the new model directory; it appears whole, or not at all when verification fails.
        level: "O1", "O2" or "O3" (see the module docstring).
        tolerance: largest max-abs difference from the source graph's outputs on the probe
            batch; None uses DEFAULT_TOLERANCES[level].
        overwrite: replace `out` if it exists.
        tokenizer_dir: where the tokenizer is, when not beside the model (for the probe batch).

    Raises:
        VerificationError: the optimised graph's outputs differ beyond the tolerance, or it does
            not load on ONNX Runtime's CPU provider (nothing is written).
        OutputExistsError: `out` exists and `overwrite` is false.
    """
    level = _check_level(level)
    bound = DEFAULT_TOLERANCES[level] if tolerance is None else check_tolerance(tolerance)
    files = find_model(model, tokenizer_dir)
    check_output(out, overwrite, [model_input(model, files.onnx_path.parent)], [tokenizer_dir])
    onnx = _require("onnx")
    source_graph = read_graph(files.onnx_path)
    external = _has_external_data(source_graph)
    with tempfile.TemporaryDirectory(prefix="ernie_deploy_optimize_") as tmp:
        basic = Path(tmp) / "basic.onnx"
        _ort_basic(files.onnx_path, basic, external)
        graph = onnx.load(str(basic))
        rewrite = None
        if level != "O1":
            heads, hidden = _attention_shape(files)
            rewrite = rewrite_attention(graph, hidden // heads if heads else None)
            graph = _fuse(graph, level, heads, hidden)
        with staged_dir(out, overwrite) as stage:
            _copy_files(files, stage)
            target = stage / "model.onnx"
            _save(graph, target, external)
            parity = _verify(files, target, level, bound)
            parity.require(_HINTS[level])
            check_loads(stage, Path(out).expanduser())
    return OptimizeReport(
        level=level,
        source=files.onnx_path,
        out=Path(out).expanduser(),
        fused=_fused_counts(source_graph, graph),
        nodes_before=len(source_graph.graph.node),
        nodes_after=len(graph.graph.node),
        rewrite=rewrite,
        parity=parity,
    )


def _check_level(level: str) -> str:
    normal = str(level).strip().upper()
    if normal not in LEVELS:
        raise ConfigError(f"Unknown optimisation level {level!r}: use one of {', '.join(LEVELS)}.")
    return normal


def _require(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"Graph optimisation needs {module}, which is not installed: pip install {module}."
        ) from exc


def _ort_basic(src: Path, dst: Path, external_data: bool) -> None:
    """ORT's basic (provider-independent) optimisations, written to `dst`."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(dst)
    opts.log_severity_level = 3
    if external_data:
        opts.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", dst.name + "_data"
        )
    try:
        # ConstantSharing off, as onnxruntime.transformers does: shared scalars hide patterns.
        ort.InferenceSession(
            str(src),
            opts,
            providers=["CPUExecutionProvider"],
            disabled_optimizers=["ConstantSharing"],
        )
    except Exception as exc:  # ORT raises several unrelated exception types
        raise ModelLoadError(
            f"ONNX Runtime cannot load {src} ({first_line(exc)}): re-export the model and check the "
            "file is complete."
        ) from exc


def _has_external_data(graph: Any) -> bool:
    from onnx.external_data_helper import uses_external_data

    return any(uses_external_data(t) for t in graph.graph.initializer)


def _attention_shape(files: ModelFiles) -> tuple[int, int]:
    """(num_heads, hidden_size) from config.json (HF and PaddleNLP name them alike), else (0, 0)."""
    for directory in (files.onnx_path.parent, files.tokenizer_dir):
        path = directory / "config.json"
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # find_model already reads it; the graph is the authority here anyway
        if not isinstance(data, dict):
            continue
        heads, hidden = data.get("num_attention_heads"), data.get("hidden_size")
        if isinstance(heads, int) and isinstance(hidden, int) and heads > 0 and hidden % heads == 0:
            return heads, hidden
    return 0, 0


def _fuse(graph: Any, level: str, heads: int, hidden: int) -> Any:
    """ORT's Python transformer fusions (no ORT session, so no torch import)."""
    try:
        from onnxruntime.transformers.fusion_options import FusionOptions
        from onnxruntime.transformers.optimizer import optimize_model as ort_optimize
    except ImportError as exc:
        raise MissingDependencyError(
            f"ONNX Runtime's transformer optimiser cannot be imported ({exc}): "
            "pip install sympy (needed by its shape inference)."
        ) from exc
    options = FusionOptions("bert")
    options.use_raw_attention_mask(True)
    options.enable_gelu_approximation = level == "O3"
    try:
        with quiet_fusion_logs():  # one quieter, shared with the fp16 path
            fused = ort_optimize(
                graph,
                model_type="bert",
                num_heads=heads,
                hidden_size=hidden,
                optimization_options=options,
                opt_level=0,
            )
    except Exception as exc:  # the fusion code asserts on graphs it does not expect
        raise UnsupportedGraphError(
            f"ONNX Runtime's transformer fusions failed on this graph ({type(exc).__name__}: "
            f"{str(exc)[:200]}): use --level O1."
        ) from exc
    return fused.model


def _save(graph: Any, target: Path, external: bool) -> None:
    """Write the graph; weights go to `model.onnx_data` as in the source, or past 2 GB.

    ORT stamps every domain it knows (ai.onnx.ml 5, training, ...) into the opset imports;
    only the domains the nodes use are kept, so older runtimes load the file too.
    """
    onnx = _require("onnx")
    used = {node.domain for node in graph.graph.node} | {""}
    kept = [o for o in graph.opset_import if o.domain in used or o.domain == "ai.onnx"]
    del graph.opset_import[:]
    graph.opset_import.extend(kept)
    if not external and graph.ByteSize() < _PROTO_LIMIT:
        onnx.save(graph, str(target))
        return
    onnx.save(
        graph,
        str(target),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=target.name + "_data",
    )


def _copy_files(files: ModelFiles, stage: Path) -> None:
    """The source directory's tokenizer / config files, then any the tokenizer dir adds."""
    copy_model_files(files.onnx_path.parent, stage)
    if files.tokenizer_dir.resolve() == files.onnx_path.parent.resolve():
        return
    with tempfile.TemporaryDirectory(dir=stage, prefix=".tokenizer-") as tmp:
        copy_model_files(files.tokenizer_dir, Path(tmp))
        for item in Path(tmp).iterdir():
            if not (stage / item.name).exists():
                shutil.move(str(item), str(stage / item.name))


def _verify(files: ModelFiles, target: Path, level: str, tolerance: float) -> ParityReport:
    """The source graph, as exported (no ORT optimisation), against the optimised one on the CPU."""
    task = files.config.task
    length = min(files.config.max_seq_length or _PROBE_LENGTH, _PROBE_LENGTH)
    features = probe_features(
        Tokenizer.from_dir(files.tokenizer_dir), pairs=task == "rerank", max_seq_length=length
    )
    reference_config = RuntimeConfig(device="cpu", graph_optimization="disable")
    _, reference = run_onnx(files.onnx_path, features, reference_config)
    try:
        _, candidate = run_onnx(target, features)
    except ModelLoadError as exc:
        raise VerificationError(
            f"The {level} graph does not load on ONNX Runtime's CPU provider ({exc}): "
            f"{_HINTS[level]}."
        ) from exc
    return compare(
        list(reference.values()),
        list(candidate.values()),
        features["attention_mask"],
        names=list(reference),
        classify=task != "embedding",
        tolerance=tolerance,
        labels=(f"optimised graph ({level})", "source graph"),
    )


def _fused_counts(source: Any, optimised: Any) -> dict[str, int]:
    before = Counter(node.op_type for node in source.graph.node)
    after = Counter(node.op_type for node in optimised.graph.node)
    # counted where the output has more of them than the source
    return {op: after[op] - before[op] for op in FUSED_OPS if after[op] > before[op]}
