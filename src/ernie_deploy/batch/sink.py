"""Batch outputs written chunk by chunk, in input order, so a stopped job resumes where it stopped.

- `.jsonl`: one file; every chunk is appended with one write, then flushed and fsynced. On a
  re-run, a last line cut short by a crash is removed and its row done again.
- `.parquet`: a folder of part files `part-<first row>-<end row>.parquet`, one per chunk,
  each written to a temporary name and renamed, so a part is there whole or not at all. When
  the job finishes, the parts are merged into files of up to `ROWS_PER_FILE` rows (read the
  folder with pandas / pyarrow / Ray / Spark as one dataset).

Beside the output, a manifest (`OUT.jsonl.batch.json`, or `_batch.json` inside the parquet
folder) records the settings the rows were made with; a re-run with other settings is refused.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from ernie_deploy.errors import ErnieDeployError, InputError, OutputExistsError
from ernie_deploy.textio import json_line

ROWS_PER_FILE = 1_000_000
MANIFEST_VERSION = 1
_PART = re.compile(r"^part-(\d{12})-(\d{12})\.parquet$")


class Sink(Protocol):
    path: Path
    before_first_write: Callable[[], None] | None

    def done(self) -> int:
        """Rows already written (a prefix of the input); repairs what a crash left half-written."""

    def write(self, start: int, rows: Sequence[dict[str, Any]], lines: Sequence[str]) -> None:
        """Write rows `start ...` (as dicts, and the same rows as JSON lines)."""

    def finish(self) -> None:
        """Called once every row is written."""


def open_sink(path: str | Path, result_types: dict[str, Any] | None = None) -> Sink:
    """The writer for OUTPUT by its suffix: `.jsonl` (a file) or `.parquet` (a folder)."""
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return JsonlSink(path)
    if suffix == ".parquet":
        return ParquetSink(path, result_types or {})
    raise InputError(
        f"Output {path} is neither .jsonl nor .parquet: end its name with one of them."
    )


def manifest_path(path: Path) -> Path:
    """Where the manifest of output `path` lives."""
    if path.suffix.lower() == ".parquet":
        return path / "_batch.json"
    return path.with_name(path.name + ".batch.json")


def check_manifest(path: Path, settings: dict[str, Any], overwrite: bool) -> dict[str, Any] | None:
    """The manifest of an existing output made with the same `settings`, or None for a new one.

    With `overwrite` it is None and nothing is removed here: the old output stays until the new
    job has rows to write (`remove_output`, called from the sink's first write). An output made
    with other settings, or not by `batch`, raises OutputExistsError naming the fix.
    """
    mpath = manifest_path(path)
    exists = path.exists()
    if overwrite:
        return None
    if not exists:
        mpath.unlink(missing_ok=True)
        return None
    try:
        old = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise OutputExistsError(
            f"{path} exists and was not written by `ernie-deploy batch`: pass --overwrite to "
            "replace it, or choose another output path."
        ) from None
    before = old.get("settings", {})
    changed = [k for k in {**before, **settings} if before.get(k) != settings.get(k)]
    if changed:
        raise OutputExistsError(
            f"{path} was written with other settings ({', '.join(changed)}): pass --overwrite "
            "to start again, or choose another output path."
        )
    return dict(old)


def remove_output(path: Path) -> None:
    """Remove an output (file or parquet folder) and its manifest, for --overwrite."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    manifest_path(path).unlink(missing_ok=True)


def write_manifest(path: Path, settings: dict[str, Any], rows: int | None) -> None:
    """Record the settings (and, once finished, the number of rows) beside the output."""
    mpath = manifest_path(path)
    mpath.parent.mkdir(parents=True, exist_ok=True)
    body = {"version": MANIFEST_VERSION, "settings": settings, "complete_rows": rows}
    tmp = mpath.with_name(mpath.name + ".tmp")
    tmp.write_text(json.dumps(body, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, mpath)


class _FirstWrite:
    """`before_first_write`, when set, runs once before the sink first writes or finishes: with
    --overwrite it removes the old output then, so a job that fails before its first row (a model
    that will not load, bad labels) leaves the old output as it was."""

    before_first_write: Callable[[], None] | None = None

    def _first_write(self) -> None:
        hook, self.before_first_write = self.before_first_write, None
        if hook is not None:
            hook()


class JsonlSink(_FirstWrite):
    """Appends JSON lines; `done()` counts complete lines and drops a cut-off last line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def done(self) -> int:
        if not self.path.exists():
            return 0
        count, good = 0, 0
        with self.path.open("rb") as fh:
            for line in fh:
                if not line.endswith(b"\n"):
                    break
                count += 1
                good += len(line)
        if good != self.path.stat().st_size:
            with self.path.open("r+b") as fh:
                fh.truncate(good)
        return count

    def write(self, start: int, rows: Sequence[dict[str, Any]], lines: Sequence[str]) -> None:
        self._first_write()
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write("".join(line + "\n" for line in lines))
            fh.flush()
            os.fsync(fh.fileno())

    def finish(self) -> None:
        self._first_write()


class ParquetSink(_FirstWrite):
    """Part files per chunk, merged into larger files at the end (see the module docstring)."""

    def __init__(self, path: Path, result_types: dict[str, Any]) -> None:
        self.path = path
        self.result_types = result_types

    def _parts(self) -> list[tuple[int, int, Path]]:
        parts = []
        for p in self.path.iterdir():
            m = _PART.match(p.name)
            if m:
                parts.append((int(m.group(1)), int(m.group(2)), p))
        return sorted(parts, key=lambda x: (x[0], -x[1]))

    def done(self) -> int:
        if not self.path.exists():
            return 0
        if not self.path.is_dir():
            raise OutputExistsError(
                f"{self.path} is a file, but parquet output is a folder of part files: pass "
                "--overwrite to replace it, or choose another output path."
            )
        for p in self.path.glob("*.tmp"):
            p.unlink()
        end = 0
        for first, last, p in self._parts():
            if last <= end:  # a part already merged into a bigger file before a crash
                p.unlink()
                continue
            if first != end:
                raise OutputExistsError(
                    f"{self.path} misses rows {end} to {first - 1} between its part files: pass "
                    "--overwrite to start again."
                )
            end = last
        return end

    def write(self, start: int, rows: Sequence[dict[str, Any]], lines: Sequence[str]) -> None:
        pq = _pq()
        table = self._table(rows, start)
        self._first_write()
        self.path.mkdir(parents=True, exist_ok=True)
        final = self.path / f"part-{start:012d}-{start + len(rows):012d}.parquet"
        tmp = final.with_name(final.name + ".tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, final)

    def _table(self, rows: Sequence[dict[str, Any]], start: int) -> Any:
        import pyarrow as pa

        names: dict[str, None] = {}
        for row in rows:
            names.update(dict.fromkeys(row))
        columns = {}
        for name in names:
            values = [row.get(name) for row in rows]
            try:
                columns[name] = pa.array(values, type=self.result_types.get(name))
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
                raise InputError(
                    f"Column {name!r} of rows {start} to {start + len(rows) - 1} mixes types "
                    f"({str(exc).splitlines()[0][:120]}): parquet needs one type per column, so "
                    "fix the input or write .jsonl output."
                ) from None
        return pa.table(columns)

    def finish(self) -> None:
        """Merge the parts into files of up to ROWS_PER_FILE rows (kept as parts if impossible)."""
        import pyarrow as pa

        self._first_write()
        pq = _pq()
        parts = self._parts()
        groups: list[list[tuple[int, int, Path]]] = [[]]
        for part in parts:
            rows = sum(p[1] - p[0] for p in groups[-1])
            if groups[-1] and rows + part[1] - part[0] > ROWS_PER_FILE:
                groups.append([])
            groups[-1].append(part)
        for group in groups:
            if len(group) < 2:
                continue
            try:
                table = pa.concat_tables(
                    [pq.read_table(p[2]) for p in group], promote_options="permissive"
                )
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise ErnieDeployError(
                    f"Every row is written to {self.path}, but its part files have columns of "
                    f"different types ({str(exc).splitlines()[0][:120]}), so they were not "
                    "merged: read the folder as it is, or give the input one type per column."
                ) from None
            final = self.path / f"part-{group[0][0]:012d}-{group[-1][1]:012d}.parquet"
            tmp = final.with_name(final.name + ".tmp")
            pq.write_table(table, tmp)
            os.replace(tmp, final)
            for _, _, p in group:
                p.unlink()


def _pq() -> Any:
    from ernie_deploy.batch.source import _parquet

    return _parquet()


def result_types(task: str, prefix: str) -> dict[str, Any]:
    """Arrow types of a task's result columns, so every part file has the same schema."""
    import pyarrow as pa

    if task == "token_cls":
        entity = pa.struct(
            [
                ("text", pa.string()),
                ("label", pa.string()),
                ("start", pa.int64()),
                ("end", pa.int64()),
                ("score", pa.float64()),
            ]
        )
        types = {"entities": pa.list_(entity)}
    elif task == "seq_cls":
        top = pa.struct([("label", pa.string()), ("score", pa.float64())])
        types = {
            "label": pa.string(),
            "score": pa.float64(),
            "top_k": pa.list_(top),
            "labels": pa.list_(pa.string()),
        }
    elif task == "embedding":
        types = {"embedding": pa.list_(pa.float32())}
    else:
        types = {}
    return {prefix + k: v for k, v in types.items()}


__all__ = ["JsonlSink", "ParquetSink", "Sink", "json_line", "open_sink", "result_types"]
