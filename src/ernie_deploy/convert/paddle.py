"""`convert paddle`: a Paddle static model or PaddleNLP checkpoint → a verified ONNX model directory.

Sources:
- a static inference model: `inference.json` (PIR, paddle >= 3) or `inference.pdmodel` (paddle
  2.x) + `inference.pdiparams`, as `paddle.jit.save` / PaddleNLP's `export_model.py` write it;
  pass the directory or the program file. The reference is Paddle Inference on the same files.
- a PaddleNLP dygraph save dir (`model_state.pdparams` or `model.safetensors` + `config.json` +
  tokenizer files, what `save_pretrained` / the Trainer write). It is exported with
  `paddle.jit.save` first (input_spec `input_ids`, `token_type_ids`, int64, `[None, None]`); the
  reference is the dygraph model itself. The pickle is read without running code from it
  (paddle_weights) unless `trust_pickle` is given.

paddle2onnx runs with the checker on and without letting polygraphy install anything: it sets
`POLYGRAPHY_AUTOINSTALL_DEPS=1` itself, which we undo around the call.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from ernie_deploy.convert.common import (
    TOKENIZER_FILES,
    ConvertReport,
    check_labels,
    check_task,
    file_mb,
    graph_opset,
    parse_labels,
    require,
)
from ernie_deploy.convert.outdir import (
    check_loads,
    check_output,
    copy_model_files,
    staged_dir,
)
from ernie_deploy.convert.paddle_source import PaddleSource, find_source
from ernie_deploy.convert.paddle_weights import loadable_checkpoint
from ernie_deploy.convert.verify import (
    DEFAULT_TOLERANCE,
    check_tolerance,
    compare,
    probe_features,
    run_onnx,
)
from ernie_deploy.errors import (
    ConfigError,
    ModelLoadError,
    ModelNotFoundError,
    TokenizerNotFoundError,
    first_line,
)
from ernie_deploy.runtime.model_dir import ModelConfig, read_config, validate, write_config
from ernie_deploy.tasks.tokenization import Tokenizer

DEFAULT_OPSET = 13
# paddle2onnx 2.1.0 writes 11 for anything lower (while saying it wrote what was asked) and
# aborts the process above 21.
MIN_OPSET, MAX_OPSET = 11, 21
_AUTO_CLASSES = {
    "token_cls": "AutoModelForTokenClassification",
    "seq_cls": "AutoModelForSequenceClassification",
    "rerank": "AutoModelForSequenceClassification",
    "embedding": "AutoModel",
}

# (features keyed by name the graph declares) -> outputs in the program's order
Reference = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


def check_opset(opset: int) -> int:
    """An opset paddle2onnx writes as asked (it aborts the process above MAX_OPSET)."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ConfigError(
            f"--opset {opset} is outside what paddle2onnx writes: use {MIN_OPSET} to {MAX_OPSET} "
            f"({DEFAULT_OPSET} by default; 17 keeps LayerNormalization whole)."
        )
    return opset


# paddle2onnx runs in a child process: a native abort in it (seen on opsets it cannot write)
# becomes one sentence here, and the staged OUT is still removed. polygraphy is imported first
# and told not to install anything (paddle2onnx sets POLYGRAPHY_AUTOINSTALL_DEPS=1 itself).
_PADDLE2ONNX = """
import sys
try:
    import polygraphy.config as polygraphy_config
    polygraphy_config.AUTOINSTALL_DEPS = False
except ImportError:
    pass
import paddle2onnx
paddle2onnx.export(model_filename=sys.argv[1], params_filename=sys.argv[2],
                   save_file=sys.argv[3], opset_version=int(sys.argv[4]), enable_onnx_checker=True)
"""


def run_paddle2onnx(program: Path, params: Path, save_file: Path, opset: int) -> None:
    """paddle2onnx with the checker on, and polygraphy kept from installing packages."""
    check_opset(opset)
    require("paddle2onnx", "paddle")
    env = {**os.environ, "POLYGRAPHY_AUTOINSTALL_DEPS": "0"}
    args = [str(program), str(params), str(save_file), str(opset)]
    run = subprocess.run(
        [sys.executable, "-c", _PADDLE2ONNX, *args], capture_output=True, text=True, env=env
    )
    if run.returncode != 0:
        raise ModelLoadError(
            f"paddle2onnx could not convert {program} ({_failure(run)}): try another "
            f"--opset ({MIN_OPSET}-{MAX_OPSET}) or re-export the model with paddle.jit.save."
        )
    if not save_file.is_file():  # it logs some failures instead of raising
        raise ModelLoadError(
            f"paddle2onnx wrote no model for {program} ({_failure(run)}): try another --opset "
            "or re-export the model."
        )


def _failure(run: subprocess.CompletedProcess[str]) -> str:
    """The last line of the child's log that names an error, or how it died."""
    if run.returncode < 0:
        return f"it was killed by {signal.Signals(-run.returncode).name}"
    lines = [line.strip() for line in (run.stderr + run.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if "rror" in line or "abort" in line.lower()]
    return ((errors or lines or [f"exit status {run.returncode}"])[-1])[:300]


def _inference_reference(source: PaddleSource) -> Reference:
    """Paddle Inference on the static files: what a Paddle deployment would answer."""
    paddle_inference = require("paddle.inference", "paddle")
    config = paddle_inference.Config(str(source.program), str(source.params))
    config.disable_gpu()
    config.disable_glog_info()
    try:
        predictor = paddle_inference.create_predictor(config)
    except Exception as exc:  # Paddle raises RuntimeError / ValueError for damaged files
        raise ModelLoadError(
            f"Paddle cannot read {source.program} with {source.params.name if source.params else ''}"
            f" ({first_line(exc, 200)}): the files are damaged or do not belong together; "
            "export them again with paddle.jit.save."
        ) from exc

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        for name in predictor.get_input_names():
            if name not in feeds:
                raise ModelLoadError(
                    f"The Paddle program takes an input {name!r} the ONNX graph does not: "
                    "re-export it with input_ids and token_type_ids."
                )
            handle = predictor.get_input_handle(name)
            handle.reshape(feeds[name].shape)
            handle.copy_from_cpu(np.ascontiguousarray(feeds[name]))
        predictor.run()
        return [predictor.get_output_handle(n).copy_to_cpu() for n in predictor.get_output_names()]

    return run


def _load_dygraph(source: PaddleSource, task: str | None, weights: Path) -> tuple[Any, str]:
    """The PaddleNLP model class named by config.json's architectures (or the task's Auto class),
    loaded from `weights` (the save dir, or its safetensors copy: paddle_weights)."""
    require("paddle", "paddle")
    transformers = require("paddlenlp.transformers", "paddle")
    config, _ = read_config(source.directory)
    arch = _architecture(source.directory)
    task = task or config.task
    if arch and hasattr(transformers, arch):
        cls = getattr(transformers, arch)
    elif task in _AUTO_CLASSES:
        cls = getattr(transformers, _AUTO_CLASSES[task])
    else:
        raise ConfigError(
            f"{source.directory} names no model class (config.json 'architectures'): pass --task."
        )
    try:
        model = cls.from_pretrained(str(weights))
    except Exception as exc:  # paddlenlp raises many types for a bad checkpoint
        raise ModelLoadError(
            f"PaddleNLP cannot load {source.directory} with {cls.__name__} "
            f"({first_line(exc)}): check config.json and the weights file."
        ) from exc
    model.eval()
    return model, cls.__name__


def _architecture(directory: Path) -> str | None:
    import json

    for name in ("config.json", "model_config.json"):
        file = directory / name
        if file.is_file():
            try:
                archs = json.loads(file.read_text("utf-8")).get("architectures") or []
            except (ValueError, AttributeError):
                return None
            return str(archs[0]) if archs else None
    return None


def _export_dygraph(model: Any, weights: Path) -> tuple[Path, Path]:
    """paddle.jit.save a reloaded copy (to_static converts the layer in place)."""
    import paddle

    exported = type(model).from_pretrained(str(weights))
    exported.eval()
    spec = [
        paddle.static.InputSpec([None, None], "int64", name="input_ids"),
        paddle.static.InputSpec([None, None], "int64", name="token_type_ids"),
    ]
    prefix = Path(tempfile.mkdtemp(prefix="ernie_deploy_jit_")) / "inference"
    static = paddle.jit.to_static(exported, input_spec=spec, full_graph=True)
    paddle.jit.save(static, str(prefix))
    program = prefix.with_suffix(".json")
    if not program.is_file():
        program = prefix.with_suffix(".pdmodel")
    return program, prefix.with_suffix(".pdiparams")


def _dygraph_reference(model: Any) -> Reference:
    import paddle

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with paddle.no_grad():
            out = model(
                paddle.to_tensor(feeds["input_ids"]), paddle.to_tensor(feeds["token_type_ids"])
            )
        outs = out if isinstance(out, (tuple, list)) else [out]
        return [np.asarray(o.numpy()) for o in outs]

    return run


def convert_paddle(
    src: str | Path,
    out: str | Path,
    *,
    task: str | None = None,
    labels: str | Sequence[str] | None = None,
    tokenizer_dir: str | Path | None = None,
    opset: int = DEFAULT_OPSET,
    tolerance: float = DEFAULT_TOLERANCE,
    max_seq_length: int | None = None,
    overwrite: bool = False,
    trust_pickle: bool = False,
) -> ConvertReport:
    """Convert, verify against Paddle, and write OUT whole (or nothing, if verification fails).

    Args:
        src: static model dir / program file, or a PaddleNLP save dir.
        out: the model directory to write (model.onnx, tokenizer files, ernie_deploy.json).
        task: token_cls, seq_cls, embedding or rerank; None reads config.json's architectures.
        labels: comma-separated names, a label file, or a list; None reads the source's.
        tokenizer_dir: where vocab.txt / tokenizer.json are when SRC has none.
        opset: ONNX opset for paddle2onnx (13 by default; 17 keeps LayerNormalization whole).
        tolerance: largest max-abs-diff of the outputs accepted.
        max_seq_length: recorded in the config (None: the loader's default).
        overwrite: replace an existing OUT (only once the new one is verified).
        trust_pickle: let paddle.load unpickle model_state.pdparams (runs any code the file
            names); by default only numpy arrays are rebuilt from it (paddle_weights).
    """
    check_opset(opset)
    check_tolerance(tolerance)
    validate(ModelConfig(max_seq_length=max_seq_length), "the arguments")
    out = check_output(out, overwrite, [src], [tokenizer_dir, labels])  # labels: maybe a file
    require("paddle", "paddle")
    source = find_source(src)
    src_config, _ = read_config(source.directory)
    if tokenizer_dir is not None and Path(tokenizer_dir).is_dir():  # e.g. the PaddleNLP save dir
        src_config = read_config(Path(tokenizer_dir))[0].merged(src_config)
    final_task = check_task(task or src_config.task, Path(src))
    asked_labels = parse_labels(labels)
    with ExitStack() as stack:
        weights = None
        if source.kind == "dygraph":
            weights = stack.enter_context(loadable_checkpoint(source.directory, trust_pickle))
        dygraph = _load_dygraph(source, task, weights) if weights is not None else None
        stage = stack.enter_context(staged_dir(out, overwrite))
        copy_model_files(source.directory, stage)
        if tokenizer_dir is not None:
            _copy_tokenizer(Path(tokenizer_dir), stage)
        tokenizer = _tokenizer(stage, source)
        if dygraph is not None:
            program, params = _export_dygraph(dygraph[0], weights or source.directory)
            reference = _dygraph_reference(dygraph[0])
        else:
            program, params = source.static_files
            reference = _inference_reference(source)
        try:
            run_paddle2onnx(program, params, stage / "model.onnx", opset)
        finally:
            if dygraph is not None:
                shutil.rmtree(program.parent, ignore_errors=True)
        features = probe_features(
            tokenizer, pairs=final_task == "rerank", max_seq_length=max_seq_length or 128
        )
        model, ort_out = run_onnx(stage / "model.onnx", features)
        feeds = {spec.name: features[spec.feature] for spec in model.inputs}
        ref_out = reference(feeds)
        final_labels = check_labels(
            final_task, asked_labels or src_config.labels, list(ort_out.values()), Path(src)
        )
        parity = compare(
            ref_out,
            list(ort_out.values()),
            features["attention_mask"],
            names=list(ort_out),
            classify=final_task != "embedding",
            tolerance=tolerance,
            labels=("ONNX Runtime", "Paddle"),
        )
        parity.require(
            "raise --tolerance only if the difference is expected, else try --opset 17 or "
            "report the model to paddle2onnx."
        )
        write_config(
            stage,
            ModelConfig(task=final_task, labels=final_labels, max_seq_length=max_seq_length),
        )
        check_loads(stage, out, max_seq_length=max_seq_length)
        size = file_mb(stage / "model.onnx")
        written = graph_opset(stage / "model.onnx")
    return ConvertReport(
        out, source.label, final_task, final_labels, written, parity, size, asked_opset=opset
    )


def _tokenizer(stage: Path, source: PaddleSource) -> Tokenizer:
    try:
        return Tokenizer.from_dir(stage)
    except TokenizerNotFoundError:
        raise TokenizerNotFoundError(
            f"No tokenizer (vocab.txt or tokenizer.json) in {source.directory}: pass "
            "--tokenizer DIR, e.g. the PaddleNLP save dir the model was exported from."
        ) from None


def _copy_tokenizer(tokenizer_dir: Path, stage: Path) -> None:
    if not tokenizer_dir.is_dir():
        raise ModelNotFoundError(
            f"Tokenizer directory {tokenizer_dir} does not exist: pass the directory holding "
            "vocab.txt or tokenizer.json."
        )
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copy2(tokenizer_dir / name, stage / name)
