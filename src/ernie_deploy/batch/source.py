"""Batch inputs: a jsonl / csv / parquet file or a folder of them, read lazily as numbered rows.

Rows are numbered from 0 across the files of a folder (sorted by name). Every row keeps its
own columns as JSON values (csv cells are strings; parquet dates become ISO strings), and gets
an `id` column holding its row number when the input has no id column of its own.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ernie_deploy.errors import (
    EmptyInputError,
    InputEncodingError,
    InputError,
    MissingDependencyError,
)
from ernie_deploy.tasks.batching import check_unicode

FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
}
SUFFIXES = ", ".join(FORMATS)
DEFAULT_ID = "id"


@dataclass(frozen=True)
class Row:
    """One input row: its number (0-based across all files), its columns, and its text."""

    number: int
    record: dict[str, Any]
    text: str


@dataclass(frozen=True)
class Source:
    """The input of a batch job (see `open_source`)."""

    path: Path
    files: tuple[Path, ...]
    format: str
    text_column: str
    id_column: str
    id_generated: bool
    text_flag: str = "--text-column"  # the option that names the text column, for messages

    def fingerprint(self) -> list[list[Any]]:
        """[file name, size, content hash] of each input file: a resumed job checks its input
        did not change (an edit that keeps the size too), so old rows are never mixed in."""
        return [[p.name, p.stat().st_size, _content_hash(p)] for p in self.files]

    def count(self) -> int:
        """The number of rows (parquet: from the metadata; jsonl / csv: one pass over the files)."""
        return sum(_count(p, self.format) for p in self.files)

    def rows(self, start: int = 0) -> Iterator[Row]:
        """Rows `start`, `start + 1`, ... in order; a bad row raises when it is reached."""
        number = 0
        for path in self.files:
            skip = 0
            if start > number:
                n = _count(path, self.format)
                if number + n <= start:  # a file wholly done: not parsed again
                    number += n
                    continue
                skip = start - number
                number = start
            for record in _records(path, self.format, skip):
                yield self._row(number, record, path)
                number += 1
        if number == 0:
            raise EmptyInputError(f"{self.path} holds no rows: give it at least one row of text.")

    def _row(self, number: int, record: dict[str, Any], path: Path) -> Row:
        text = record.get(self.text_column)
        where = f"{path.name} {record.pop(_LINE, f'row {number + 1}')}"
        if text is None:
            raise InputError(
                f"{where} has no {self.text_column!r} value: fill it in or remove that row."
            )
        if not isinstance(text, str):
            raise InputError(
                f"{where}: {self.text_column!r} is a {type(text).__name__}, not a string: name the "
                f"column holding the text with {self.text_flag}."
            )
        if not text.strip():
            raise EmptyInputError(f"{where} has an empty {self.text_column!r}: remove that row.")
        if not text.isascii():
            check_unicode(text, where)
        if self.id_generated:
            record = {self.id_column: number, **record}
        return Row(number, record, text)


def _content_hash(path: Path) -> str:
    """BLAKE2b of the file's bytes (about 1 s per GB: one more pass next to the model's)."""
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_LINE = "\0line"  # "line N" / "row N": where a record is in its file, removed before use


def open_source(
    path: str | Path,
    text_column: str = "text",
    id_column: str | None = None,
    text_flag: str = "--text-column",
) -> Source:
    """Check an input file or folder and its columns; the text column must exist.

    `id_column` None means `id`: kept when the input has it, else added (the row number). A
    named id column must exist in the input. `text_flag` is the option messages name for the
    text column (`predict` calls it --text-field).
    """
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in FORMATS)
        if not files:
            raise InputError(
                f"Input folder {path} holds no {SUFFIXES} files: put the input files there."
            )
        kinds = {FORMATS[p.suffix.lower()] for p in files}
        if len(kinds) > 1:
            raise InputError(
                f"Input folder {path} mixes {' and '.join(sorted(kinds))} files: keep one format "
                "per folder."
            )
    elif path.is_file():
        if path.suffix.lower() not in FORMATS:
            raise InputError(
                f"Input {path} is not a {SUFFIXES} file: convert it, or rename it if it is one."
            )
        files = [path]
    else:
        raise InputError(f"Input {path} does not exist: pass a {SUFFIXES} file or a folder.")
    fmt = FORMATS[files[0].suffix.lower()]
    columns = _columns(files[0], fmt)
    if text_column not in columns:
        hint = f" (it has {', '.join(map(repr, columns[:12]))})" if columns else ""
        raise InputError(
            f"{files[0].name} has no column {text_column!r}{hint}: name the column holding the "
            f"text with {text_flag}."
        )
    wanted = id_column or DEFAULT_ID
    if id_column is not None and id_column not in columns:
        raise InputError(
            f"{files[0].name} has no id column {id_column!r}: name an existing column with "
            f"--id-column, or leave it out to number the rows in a new {DEFAULT_ID!r} column."
        )
    return Source(path, tuple(files), fmt, text_column, wanted, wanted not in columns, text_flag)


def _columns(path: Path, fmt: str) -> list[str]:
    """The column names of a file: parquet's schema, csv's header, jsonl's first record."""
    if fmt == "parquet":
        pq = _parquet()
        try:
            return list(pq.read_schema(path).names)
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise InputError(f"{path} is not a readable parquet file ({exc}): check it.") from exc
    for record in _records(path, fmt):
        record.pop(_LINE, None)
        return list(record)
    raise EmptyInputError(f"{path} holds no rows: give it at least one row of text.")


def _records(path: Path, fmt: str, skip: int = 0) -> Iterator[dict[str, Any]]:
    if fmt == "jsonl":
        yield from _jsonl(path, skip)
    elif fmt == "csv":
        yield from _csv(path, skip)
    else:
        yield from _parquet_records(path, skip)


def _jsonl(path: Path, skip: int) -> Iterator[dict[str, Any]]:
    seen = 0
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            seen += 1
            if seen <= skip:
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputEncodingError(
                    f"{path} line {line_no} is not valid UTF-8 (byte {raw[exc.start]:#04x}): "
                    "re-save the file as UTF-8."
                ) from None
            try:
                record = json.loads(line.removeprefix("\ufeff"))
            except json.JSONDecodeError as exc:
                raise InputError(
                    f"{path} line {line_no} is not valid JSON ({exc.msg}): fix that line."
                ) from None
            if not isinstance(record, dict):
                raise InputError(
                    f"{path} line {line_no} is not a JSON object: write one object per line."
                )
            record[_LINE] = f"line {line_no}"
            yield record


def _raise_csv_field_limit() -> None:
    """csv's default cell limit (131,072 characters) is no limit of ours: a long document in
    one cell is a valid input (NER windows it). The limit is process-wide and only raised."""
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        csv.field_size_limit(_CSV_FIELD_LIMIT)


_CSV_FIELD_LIMIT = 2**31 - 1


def _csv(path: Path, skip: int) -> Iterator[dict[str, Any]]:
    _raise_csv_field_limit()
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            for i, record in enumerate(reader):
                if i < skip:
                    continue
                if None in record:
                    raise InputError(
                        f"{path} row {reader.line_num} has more cells than the header: quote "
                        "cells that contain commas."
                    )
                out: dict[str, Any] = dict(record)
                out[_LINE] = f"line {reader.line_num}"
                yield out
    except UnicodeDecodeError as exc:
        raise InputEncodingError(
            f"{path} is not valid UTF-8 (at byte {exc.start}): re-save the file as UTF-8."
        ) from None
    except csv.Error as exc:
        raise InputError(f"{path} is not valid CSV ({exc}): fix the file.") from None


def _parquet_file(path: Path) -> Any:
    try:
        return _parquet().ParquetFile(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise _unreadable_parquet(path, exc) from None


def _unreadable_parquet(path: Path, exc: Exception) -> InputError:
    reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
    return InputError(
        f"{path} is not a readable parquet file ({reason}): re-write it, or move it out of the "
        "input folder."
    )


def _parquet_records(path: Path, skip: int) -> Iterator[dict[str, Any]]:
    pf = _parquet_file(path)
    number = 0
    for group in range(pf.num_row_groups):
        n = pf.metadata.row_group(group).num_rows
        if number + n <= skip:
            number += n
            continue
        try:
            rows = pf.read_row_group(group).to_pylist()
        except (OSError, ValueError) as exc:
            raise _unreadable_parquet(path, exc) from None
        for record in rows:
            number += 1
            if number <= skip:
                continue
            out = {k: _json_value(v) for k, v in record.items()}
            out[_LINE] = f"row {number}"
            yield out


def _json_value(value: Any) -> Any:
    """A parquet value as JSON has it: dates as ISO strings, bytes as text, others unchanged."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    iso = getattr(value, "isoformat", None)
    return iso() if callable(iso) else str(value)


def _count(path: Path, fmt: str) -> int:
    if fmt == "parquet":
        return int(_parquet_file(path).metadata.num_rows)
    if fmt == "jsonl":
        with path.open("rb") as fh:
            return sum(1 for line in fh if line.strip())
    _raise_csv_field_limit()
    with path.open("r", encoding="utf-8-sig", newline="", errors="replace") as fh:
        try:
            return sum(1 for _ in csv.DictReader(fh))
        except csv.Error as exc:
            raise InputError(f"{path} is not valid CSV ({exc}): fix the file.") from None


def _parquet() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise MissingDependencyError(
            "Parquet files need pyarrow, which is not installed: pip install pyarrow "
            "(or 'ernie-deploy[ray]', which brings it)."
        ) from exc
    return pq
