"""Input files (txt one text per line, or jsonl) read lazily, and jsonl results written as they come."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

from ernie_deploy.errors import EmptyInputError, ErnieDeployError, InputEncodingError, InputError
from ernie_deploy.tasks.batching import check_unicode


class Line(NamedTuple):
    """One input: the text to predict and the record it came from (kept as it was)."""

    text: str
    record: dict[str, Any]


def text_lines(texts: list[str]) -> Iterator[Line]:
    """Texts given on the command line, as the records a txt file would give."""
    return (Line(t, {"text": t}) for t in texts)


def iter_records(
    path: str | Path, text_field: str = "text", text_flag: str = "--text-field"
) -> Iterator[Line]:
    """Yield one Line per input text.

    `.txt` (or another suffix): one text per line, blank lines skipped; a file of another
    suffix whose first line starts with '{' is read as JSON lines. `.jsonl` / `.ndjson` /
    `.json`: JSON lines, each an object with `text_field`. `.csv` / `.parquet`: rows with a
    `text_field` column, read as `ernie-deploy batch` reads them. Errors name the line and how
    to fix it (`text_flag`: the option naming the text field), and are raised only when that
    line is reached, so earlier results are kept.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"Input file {path} does not exist: pass the path of a .txt, .jsonl, .csv or "
            ".parquet file."
        )
    suffix = path.suffix.lower()
    if suffix in (".csv", ".parquet"):
        yield from _table_records(path, text_field, text_flag)
        return
    jsonl = suffix in (".jsonl", ".json", ".ndjson")
    seen = False
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise InputEncodingError(
                    f"{path} line {line_no} is not valid UTF-8 (byte {raw[exc.start]:#04x}): "
                    "re-save the file as UTF-8 (e.g. `iconv -f GBK -t UTF-8`)."
                ) from None
            if line_no == 1:
                line = line.removeprefix("\ufeff")
                jsonl = jsonl or (suffix != ".txt" and line.lstrip().startswith("{"))
            if not line.strip():
                continue
            seen = True
            yield (
                _json_record(line, path, line_no, text_field, text_flag)
                if jsonl
                else Line(line, {"text": line})
            )
    if not seen:
        raise EmptyInputError(f"{path} holds no texts: put one text per line (or jsonl records).")


def _table_records(path: Path, text_field: str, text_flag: str) -> Iterator[Line]:
    from ernie_deploy.batch.source import open_source

    source = open_source(path, text_field, text_flag=text_flag)
    for row in source.rows():
        record = dict(row.record)
        if source.id_generated:  # batch numbers rows; predict keeps the columns as they are
            record.pop(source.id_column, None)
        yield Line(row.text, record)


def _json_record(line: str, path: Path, line_no: int, text_field: str, text_flag: str) -> Line:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path} line {line_no} is not valid JSON ({exc.msg}): fix that line."
        ) from None
    if not isinstance(record, dict):
        raise InputError(
            f'{path} line {line_no} is not a JSON object: write each line as {{"{text_field}": ...}}.'
        )
    text = record.get(text_field)
    if not isinstance(text, str):
        raise InputError(
            f"{path} line {line_no} has no string field {text_field!r}: add it, or name the field "
            f"that holds the text ({text_flag})."
        )
    if not text.strip():
        raise EmptyInputError(
            f"{path} line {line_no} has an empty {text_field!r}: remove that line."
        )
    if not text.isascii():
        check_unicode(text, f"{path} line {line_no}")
    return Line(text, record)


def chunked(records: Iterator[Line], size: int) -> Iterator[list[Line]]:
    """Group records; when reading fails, the records read so far are yielded before the error."""
    buf: list[Line] = []
    try:
        for record in records:
            buf.append(record)
            if len(buf) == size:
                yield buf
                buf = []
    except ErnieDeployError:
        if buf:
            yield buf
        raise
    if buf:
        yield buf


PREFIX_FIX = "pass --result-prefix (e.g. pred_) to name the result columns apart"


def result_record(
    record: dict[str, Any], result: Any, prefix: str = "", fix: str = PREFIX_FIX
) -> dict[str, Any]:
    """One output row: the input `record` with the fields of `result.to_dict()` beside it.

    The result's own `text` is left out (the record already holds the text); the other fields
    are named `prefix + field`. An input column of the same name (a gold `label`, say) is never
    replaced: InputError names it and `fix`. `predict`, `infer.py` and `batch` write their rows
    with this, so the commands (and both batch engines) give the same row for the same input.
    """
    fields = result.to_dict()
    fields.pop("text", None)
    named = {prefix + key: value for key, value in fields.items()}
    clash = [name for name in named if name in record]
    if clash:
        raise InputError(
            f"The input already has a column {clash[0]!r}, which the results would replace: "
            f"{fix}, or rename that column."
        )
    return {**record, **named}


def json_line(record: dict[str, Any]) -> str:
    """`record` as one line of JSON (UTF-8 kept as is; dates and other values as strings).

    A value holding a lone surrogate (which UTF-8 cannot encode) is written \\u-escaped, so an
    input column carried into the output is kept exactly instead of stopping the run.
    """
    line = json.dumps(record, ensure_ascii=False, default=_json_default)
    if not line.isascii():
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:
            return json.dumps(record, ensure_ascii=True, default=_json_default)
    return line


def _json_default(value: Any) -> Any:
    iso = getattr(value, "isoformat", None)
    return iso() if callable(iso) else str(value)


class JsonlWriter:
    """Writes one JSON object per line and flushes it, so a later failure loses nothing written."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.count = 0

    def write(self, record: dict[str, Any]) -> None:
        self.stream.write(json_line(record) + "\n")
        self.stream.flush()
        self.count += 1
