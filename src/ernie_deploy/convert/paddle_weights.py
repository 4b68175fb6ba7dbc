"""A PaddleNLP checkpoint's weights read without running code from the file.

`model_state.pdparams` is a pickle (`paddle.save`), and `paddle.load` unpickles it: a crafted
file runs whatever callable it names. Here it is read with an unpickler that rebuilds numpy
arrays (all that `paddle.save` writes for a state dict) and refuses any other callable; the
arrays are handed to PaddleNLP as `model.safetensors` beside a copy of the config. A checkpoint
that has `model.safetensors` already (`save_pretrained(..., safe_serialization=True)`) is used as
it is. `trust_pickle=True` (`--trust-pickle`) lets `paddle.load` read the file instead, as
transformers' `weights_only=False` does.
"""

from __future__ import annotations

import pickle
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ernie_deploy.errors import ModelLoadError, UntrustedPickleError, first_line

PICKLED_WEIGHTS = "model_state.pdparams"
SAFE_WEIGHTS = "model.safetensors"
_CONFIG_FILES = ("config.json", "model_config.json", "generation_config.json")
# What paddle.save (numpy 1.x and 2.x) writes for a state dict of tensors, and nothing that runs.
_ALLOWED = frozenset(
    {
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
    }
)
_NAME_TABLE = "StructuredToParameterName@@"  # paddle.save's structured-name -> parameter map


class _Refused(Exception):
    pass


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise _Refused(f"{module}.{name}")


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """The numpy arrays of a `paddle.save`d state dict, or a refusal naming the callable asked for."""
    try:
        with path.open("rb") as f:
            state = _ArraysOnly(f, encoding="latin1").load()
    except _Refused as exc:
        raise UntrustedPickleError(
            f"{path} asks to run {exc} when unpickled, which a weights file never needs: re-save "
            "the model with save_pretrained(..., safe_serialization=True), or pass --trust-pickle "
            "(trust_pickle=True) only if you trust where the file came from."
        ) from None
    except Exception as exc:  # truncated or not a pickle at all
        raise ModelLoadError(
            f"Cannot read {path} ({type(exc).__name__}: {first_line(exc, 200)}): copy the "
            "checkpoint again, it looks truncated or is not a paddle.save file."
        ) from exc
    arrays = state if isinstance(state, dict) else {}
    arrays = {k: v for k, v in arrays.items() if k != _NAME_TABLE}
    if not arrays or not all(
        isinstance(k, str) and isinstance(v, np.ndarray) and v.dtype.kind in "fiub"
        for k, v in arrays.items()
    ):
        raise ModelLoadError(
            f"{path} is not a state dict of numeric tensors: pass the model_state.pdparams that "
            "save_pretrained wrote."
        )
    return arrays


@contextmanager
def loadable_checkpoint(directory: Path, trust_pickle: bool = False) -> Iterator[Path]:
    """A directory PaddleNLP's `from_pretrained` loads without unpickling (unless trusted)."""
    if trust_pickle or (directory / SAFE_WEIGHTS).is_file():
        yield directory
        return
    from safetensors.numpy import save_file

    state = read_state_dict(directory / PICKLED_WEIGHTS)
    with tempfile.TemporaryDirectory(prefix="ernie_deploy_weights_") as tmp:
        for name in _CONFIG_FILES:
            if (directory / name).is_file():
                shutil.copy2(directory / name, Path(tmp) / name)
        save_file(
            {k: np.ascontiguousarray(v) for k, v in state.items()},
            str(Path(tmp) / SAFE_WEIGHTS),
            metadata={"format": "np"},
        )
        yield Path(tmp)
