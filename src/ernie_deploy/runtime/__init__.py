"""Runtime layer: ONNX Runtime sessions, devices, and model-directory loading."""

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
    FP16_CPU_NOTICE,
    FallbackWarning,
    OnnxModel,
    RuntimeConfig,
    load_model,
)

__all__ = [
    "CONFIG_NAME",
    "FP16_CPU_NOTICE",
    "TASKS",
    "Device",
    "FallbackWarning",
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
