"""`ernie-deploy inspect`: a model's graph signature, opset, config and execution providers as text.

It also says what `load()` would refuse, through the same checks load runs (runtime.checks and
the tokenizer), so a model that inspect passes is one predict, batch and serve accept.
"""

from __future__ import annotations

from pathlib import Path

from ernie_deploy.errors import ErnieDeployError
from ernie_deploy.runtime.checks import (
    external_data_files,
    position_limit,
    problems,
    read_graph,
)
from ernie_deploy.runtime.device import available_providers
from ernie_deploy.runtime.model_dir import ModelFiles, find_model
from ernie_deploy.runtime.session import OnnxModel, RuntimeConfig, load_model


def opsets(onnx_path: Path) -> dict[str, int]:
    """Opset per domain, read without loading the weights."""
    proto = read_graph(onnx_path)
    return {imp.domain or "ai.onnx": imp.version for imp in proto.opset_import}


def describe(path: str | Path, tokenizer_dir: str | Path | None = None) -> str:
    files = find_model(path, tokenizer_dir, need_tokenizer=False)  # reported below if missing
    model = load_model(files.onnx_path, RuntimeConfig(device="cpu"))
    cfg = files.config
    graph = read_graph(files.onnx_path)
    limit = position_limit(graph)
    weights = [files.onnx_path.parent / n for n in external_data_files(graph)]
    size = sum(p.stat().st_size for p in [files.onnx_path, *weights] if p.is_file())
    parts = f", with {len(weights)} external data file(s)" if weights else ""
    lines = [
        f"model:      {files.onnx_path} ({size / 1e6:.1f} MB{parts})",
        f"tokenizer:  {files.tokenizer_dir}",
        f"config:     {', '.join(files.sources) or '(none)'}",
        f"task:       {cfg.task or '(unknown: pass --task)'}",
        f"labels:     {', '.join(cfg.labels) if cfg.labels else '(none)'}",
        f"max length: {cfg.max_seq_length or '(default 128)'}"
        + (f" (position table: {limit})" if limit else ""),
    ]
    if cfg.task == "embedding":
        pooling = cfg.pooling or "cls (guessed: nothing here says; pass --pooling)"
        lines.append(f"pooling:    {pooling}, normalize={cfg.normalize is not False}")
    ops = ", ".join(f"{imp.domain or 'ai.onnx'} {imp.version}" for imp in graph.opset_import)
    lines.append(f"opset:      {ops}")
    lines.append("inputs:")
    for node in model.session.get_inputs():  # type: ignore[attr-defined]
        lines.append(f"  {node.name:<24} {node.type:<16} {node.shape}")
    lines.append("outputs:")
    for node in model.session.get_outputs():  # type: ignore[attr-defined]
        lines.append(f"  {node.name:<24} {node.type:<16} {node.shape}")
    lines.append(f"providers:  available {', '.join(available_providers())}")
    refused = load_problems(files, model)
    lines += [f"load would refuse: {p}" for p in refused] or ["load:       ok"]
    return "\n".join(lines)


def load_problems(files: ModelFiles, model: OnnxModel) -> list[str]:
    """What load() would refuse about this directory as it is (no arguments given)."""
    from ernie_deploy.api import DEFAULT_MAX_SEQ_LENGTH, MAX_DEFAULT_LENGTH
    from ernie_deploy.tasks.tokenization import Tokenizer

    found = []
    try:
        Tokenizer.from_dir(files.tokenizer_dir)
    except ErnieDeployError as exc:
        found.append(str(exc))
    length = files.config.max_seq_length
    length = DEFAULT_MAX_SEQ_LENGTH if length is None else min(length, MAX_DEFAULT_LENGTH)
    found += [str(p) for p in problems(model, files.config, length)]
    return found
