"""`ernie-deploy inspect`: a model's graph signature, opset, config and execution providers as text."""

from __future__ import annotations

from pathlib import Path

from ernie_deploy.errors import ModelLoadError
from ernie_deploy.runtime.device import available_providers
from ernie_deploy.runtime.model_dir import find_model
from ernie_deploy.runtime.session import RuntimeConfig, load_model


def opsets(onnx_path: Path) -> dict[str, int]:
    """Opset per domain, read without loading the weights."""
    import onnx

    try:
        proto = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:
        raise ModelLoadError(
            f"Cannot parse {onnx_path} as ONNX ({type(exc).__name__}): re-export the model."
        ) from exc
    return {imp.domain or "ai.onnx": imp.version for imp in proto.opset_import}


def describe(path: str | Path, tokenizer_dir: str | Path | None = None) -> str:
    files = find_model(path, tokenizer_dir)
    model = load_model(files.onnx_path, RuntimeConfig(device="cpu"))
    cfg = files.config
    lines = [
        f"model:      {files.onnx_path} ({files.onnx_path.stat().st_size / 1e6:.1f} MB)",
        f"tokenizer:  {files.tokenizer_dir}",
        f"config:     {', '.join(files.sources) or '(none)'}",
        f"task:       {cfg.task or '(unknown: pass --task)'}",
        f"labels:     {', '.join(cfg.labels) if cfg.labels else '(none)'}",
        f"max length: {cfg.max_seq_length or '(default 128)'}",
    ]
    if cfg.task == "embedding":
        pooling = cfg.pooling or "cls (guessed: nothing here says; pass --pooling)"
        lines.append(f"pooling:    {pooling}, normalize={cfg.normalize is not False}")
    ops = ", ".join(f"{d} {v}" for d, v in opsets(files.onnx_path).items())
    lines.append(f"opset:      {ops}")
    lines.append("inputs:")
    for node in model.session.get_inputs():  # type: ignore[attr-defined]
        lines.append(f"  {node.name:<24} {node.type:<16} {node.shape}")
    lines.append("outputs:")
    for node in model.session.get_outputs():  # type: ignore[attr-defined]
        lines.append(f"  {node.name:<24} {node.type:<16} {node.shape}")
    lines.append(f"providers:  available {', '.join(available_providers())}")
    return "\n".join(lines)
