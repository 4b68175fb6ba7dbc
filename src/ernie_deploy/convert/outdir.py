"""Output directories that appear whole or not at all, and the model files copied into them."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ernie_deploy import outputs
from ernie_deploy.errors import ErnieDeployError, InputError

# Files that belong to the source framework's weights, not to the ONNX model directory.
WEIGHT_SUFFIXES = (
    ".onnx",
    ".onnx_data",
    ".data",  # ONNX external data (model.onnx.data)
    ".pdparams",
    ".pdiparams",
    ".pdmodel",
    ".pdopt",
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".h5",
    ".msgpack",
    ".ckpt",
)
_SKIP_DIRS = (".ernie_deploy_cache", "__pycache__", ".git", "runs", "checkpoints")
# Records about the source's own weights (a bundled model's parity probe and scores): a new
# graph made from it would carry claims that are not about it.
_SOURCE_RECORDS = ("bundle.json", "export_check.npz")


def check_output(
    out: str | Path,
    overwrite: bool,
    inputs: Sequence[str | Path] = (),
    also: Sequence[object] = (),
) -> Path:
    """Refuse OUT before any work when it is an input (or inside one, or holds one: checked
    first, so --overwrite is never suggested for an input), a link, the current or parent
    folder, a file, in a missing or unwritable folder, or exists without `overwrite` (one
    sentence naming the fix). `inputs`: the model (or source) the command reads. `also`: other
    paths the user named (a tokenizer folder, a label or eval file; None and non-paths skipped):
    OUT may not be or hold one, but may sit inside a tokenizer folder (a working folder)."""
    out = Path(out).expanduser()
    if out.name in ("", ".", ".."):
        raise InputError(
            f"OUT {out} names an existing folder by its dots: give the new model directory's "
            "own name (e.g. ./optimized)."
        )
    if out.is_symlink():
        raise InputError(
            f"OUT {out} is a symbolic link: give the path of a real folder (a new one)."
        )
    for given in also:
        if not isinstance(given, (str, Path)) or not Path(given).expanduser().exists():
            continue
        path = Path(given).expanduser()
        same = outputs.same_path(out, path)
        if same or path.resolve().is_relative_to(out.resolve()):
            raise InputError(
                f"OUT {out} {'is' if same else 'holds'} {path}, which this command reads: choose "
                "another output folder (an input is never written over)."
            )
    return outputs.check_output(out, inputs, flag="OUT", overwrite=overwrite, directory=True)


def model_input(model: str | Path, model_dir: Path) -> Path:
    """The model as the user gave it, or, for a bundled model's name, its installed folder."""
    given = Path(model).expanduser()
    return given if given.exists() else model_dir


@contextmanager
def staged_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty directory beside `out`; it becomes `out` only if the block succeeds.

    On any exception the staging directory is removed and `out` is untouched, so a failed
    conversion never leaves a half-written model directory behind.
    """
    out = check_output(out, overwrite)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    stage.chmod(0o777 & ~umask)  # mkdtemp makes it 0700; OUT should look like any new directory
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = None
    try:
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
        stage.rename(out)
    except OSError as exc:
        if old is not None and not out.exists():
            old.rename(out)  # the previous OUT comes back as it was
        shutil.rmtree(stage, ignore_errors=True)
        raise ErnieDeployError(
            f"The new model could not be moved to {out} ({exc.strerror or exc}): nothing was "
            "written; check that folder and run again."
        ) from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_loads(
    stage: Path, out: Path, task: str | None = None, max_seq_length: int | None = None
) -> None:
    """Load the staged directory as `ernie_deploy.load` (predict, batch, serve) would, so OUT never
    becomes a model directory that load refuses. `task`: what the caller was told, for a
    directory that does not record it (a bare .onnx); when no task is known anywhere, load
    asks its user for one, and there is nothing more to check. `max_seq_length`: the value
    the user asked to record, checked as given (load clamps a recorded one to 512)."""
    from ernie_deploy.api import load
    from ernie_deploy.runtime.model_dir import find_model

    try:
        if task is None and find_model(stage).config.task is None:
            return
        load(stage, task=task, max_seq_length=max_seq_length)
    except ErnieDeployError as exc:
        message = str(exc).replace(str(stage), str(out))
        raise type(exc)(f"{out} would not load, so it was not written: {message}") from exc


def copy_model_files(src: Path, dst: Path) -> list[str]:
    """Copy tokenizer / config / label / pooling files from src to dst: not weights, graphs or
    the source's own parity / score records."""
    copied = []
    for item in sorted(src.iterdir()):
        if item.name.startswith(".") or item.name in _SKIP_DIRS + _SOURCE_RECORDS:
            continue
        if item.is_dir():
            if any(p.suffix in WEIGHT_SUFFIXES for p in item.rglob("*")):
                continue
            shutil.copytree(item, dst / item.name)
        elif not _is_weight(item) and not _is_paddle_program(item):
            shutil.copy2(item, dst / item.name)
        else:
            continue
        copied.append(item.name)
    return copied


def _is_weight(item: Path) -> bool:
    """A weights file; `.data1`, `.data2`, ... are the parts of split external data."""
    suffix = item.suffix
    return suffix in WEIGHT_SUFFIXES or (suffix.startswith(".data") and suffix[5:].isdigit())


def _is_paddle_program(item: Path) -> bool:
    """A PIR program (`inference.json`) sits beside its `inference.pdiparams`."""
    return item.suffix == ".json" and item.with_suffix(".pdiparams").exists()
