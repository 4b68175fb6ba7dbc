"""Runtime layer: ONNX Runtime sessions (fp16 included), devices, and model-directory loading."""

from ernie_deploy.runtime.device import Device, compute_capability, parse_device, usable_cpus
from ernie_deploy.runtime.model_dir import (
    CONFIG_NAME,
    TASKS,
    ModelConfig,
    ModelFiles,
    find_model,
    write_config,
)
from ernie_deploy.runtime.session import (
    DEFAULT_FP16_BLOCK_OPS,
    FP16_CPU_NOTICE,
    FallbackWarning,
    Fp16FallbackWarning,
    OnnxModel,
    RuntimeConfig,
    load_model,
)

__all__ = [
    "CONFIG_NAME",
    "DEFAULT_FP16_BLOCK_OPS",
    "FP16_CPU_NOTICE",
    "TASKS",
    "Device",
    "FallbackWarning",
    "Fp16FallbackWarning",
    "ModelConfig",
    "ModelFiles",
    "OnnxModel",
    "RuntimeConfig",
    "compute_capability",
    "find_model",
    "load_model",
    "parse_device",
    "usable_cpus",
    "write_config",
]
