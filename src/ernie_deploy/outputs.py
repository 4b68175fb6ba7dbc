"""Output paths that never harm an input: checked before work starts, written beside the target, renamed.

Every command that writes a file the user names (`predict -o`, `infer.py --output_file`,
`batch`, the model-building commands) checks the path here first, so the same bad path gets
the same sentence everywhere, before a model is loaded:

- an output that is one of the inputs (after resolving links, or the same file through a hard
  link), or lies inside an input folder, is refused;
- an output that is a directory where a file is expected, whose directory is missing, or
  where this process cannot create a file, is refused, naming the fix;
- an existing output is replaced only when the caller asked (`--overwrite`).

`atomic_text` writes to a hidden temporary file beside the target and renames it into place,
so a reader never sees a half-written line; on an error after some results, the whole lines
written so far are kept (renamed into place) and the error says how far the run got.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from ernie_deploy.errors import InputError, OutputExistsError


def same_path(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name the same file or folder (links resolved, hard links compared)."""
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.resolve() == pb.resolve():
        return True
    try:
        return os.path.samefile(pa, pb)
    except OSError:
        return False


def check_output(
    out: str | Path,
    inputs: Sequence[str | Path] = (),
    *,
    flag: str = "the output",
    overwrite: bool = False,
    exists_ok: bool = False,
    directory: bool = False,
) -> Path:
    """Refuse an output path that would harm an input or cannot be written; return it.

    Args:
        out: the output path.
        inputs: the files and folders the command reads; the output may be none of them, nor
            lie inside an input folder.
        flag: how the user gave the path (e.g. "--output_file"), for the message.
        overwrite: an existing output may be replaced.
        exists_ok: an existing output is expected (a job resuming into it).
        directory: the output is a folder (else a file).
    """
    path = Path(out).expanduser()
    for given in inputs:
        source = Path(given).expanduser()
        if same_path(path, source):
            raise InputError(
                f"{flag} {path} is also the input: choose another output path (an input is "
                "never written over)."
            )
        if source.is_dir() and path.resolve().is_relative_to(source.resolve()):
            raise InputError(
                f"{flag} {path} is inside the input folder {source}: choose a path outside it."
            )
        if directory and source.exists() and source.resolve().is_relative_to(path.resolve()):
            raise InputError(
                f"{flag} {path} holds the input {source}: choose another output folder (an "
                "input is never written over)."
            )
    if path.is_dir() and not directory:
        raise InputError(
            f"{flag} {path} is a directory: give a file path, e.g. {path / 'results.jsonl'}."
        )
    if path.exists() and directory and not path.is_dir():
        raise InputError(
            f"{flag} {path} is a file: give the path of a folder (a new one, or one to replace)."
        )
    parent = path.resolve().parent
    if not parent.is_dir():
        raise InputError(
            f"The folder of {flag} {path} does not exist: create it first (mkdir -p {parent}) "
            "or choose another path."
        )
    _check_writable(parent, flag)
    if path.exists() and not (overwrite or exists_ok):
        raise OutputExistsError(
            f"{flag} {path} exists: pass --overwrite to replace it, or choose another path."
        )
    return path


def _check_writable(folder: Path, flag: str) -> None:
    """Create and remove a temporary file there: the real test (read-only mounts, ACLs, root)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".ernie-deploy-check-", dir=folder)
    except OSError as exc:
        raise InputError(
            f"Cannot write into {folder} for {flag} ({exc.strerror}): choose a writable folder."
        ) from None
    os.close(fd)
    os.unlink(name)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_text(path: Path) -> Iterator[IO[str]]:
    """A UTF-8 text stream whose file appears at `path` only as whole lines, by rename.

    On success the file is renamed into place. On an error, what was written is renamed into
    place too when it holds at least one line (results are never thrown away); an empty
    temporary file is removed and `path` is left as it was.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # what open() would have given the file
    stream = os.fdopen(fd, "w", encoding="utf-8", newline="\n")
    done = False
    try:
        yield stream
        done = True
    finally:
        stream.flush()
        os.fsync(stream.fileno())
        stream.close()
        if done or os.path.getsize(tmp) > 0:
            os.replace(tmp, path)
        else:
            os.unlink(tmp)
