"""Labelled evaluation files (jsonl / tsv) for NER and classification, read with line-numbered errors.

One example per line, UTF-8:
- `.jsonl` (also `.json`, `.ndjson`): token_cls
  `{"text": "...", "entities": [{"start": 0, "end": 2, "label": "PER"}, ...]}` (character
  offsets into `text`, end exclusive; an optional `"text"` per entity must equal the slice);
  seq_cls `{"text": "...", "label": "sports"}`. Other keys are ignored.
- `.tsv` / `.txt`: seq_cls only, `text<TAB>label` (split at the last tab); a first line
  `text<TAB>label` (or any first line whose last field is `label`) is a header and skipped.

Scored by `tasks.metrics` (`score_results`, `compare_results`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ernie_deploy.errors import EmptyInputError, InputEncodingError, InputError

# An entity: (start, end, label), character offsets, end exclusive.
Span = tuple[int, int, str]
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
TSV_SUFFIXES = (".tsv", ".txt")
ENTITIES_EXAMPLE = '{"text": "...", "entities": [{"start": 0, "end": 2, "label": "PER"}]}'
LABEL_EXAMPLE = '{"text": "...", "label": "..."}'


@dataclass(frozen=True)
class LabelledText:
    """One example of a labelled file: a class label (seq_cls) or gold spans (token_cls)."""

    text: str
    label: str | None = None
    entities: tuple[Span, ...] | None = None
    line: int = 0


def read_labelled(path: str | Path, task: str) -> list[LabelledText]:
    """Read a labelled file (format in the module docstring) for `task` (token_cls or seq_cls).

    Errors name the line and the expected keys.
    """
    path = Path(path)
    if task not in ("token_cls", "seq_cls"):
        raise InputError(
            f"Labelled files score token_cls and seq_cls models, not {task}: evaluate another way."
        )
    if not path.is_file():
        raise InputError(f"Labelled file {path} does not exist: pass a .jsonl or .tsv file.")
    jsonl = path.suffix in JSONL_SUFFIXES
    if not jsonl and path.suffix not in TSV_SUFFIXES:
        raise InputError(
            f"{path} is neither .jsonl nor .tsv: save it as .jsonl ({LABEL_EXAMPLE} or "
            f"{ENTITIES_EXAMPLE} per line) or as .tsv (text<TAB>label)."
        )
    if not jsonl and task == "token_cls":
        raise InputError(
            f"{path} is a .tsv file but the model does NER: write .jsonl lines such as "
            f"{ENTITIES_EXAMPLE}."
        )
    examples = []
    for line_no, line in _lines(path):
        if jsonl:
            examples.append(_json_example(line, path, line_no, task))
        elif line_no > 1 or line.rsplit("\t", 1)[-1].strip().lower() != "label":
            examples.append(_tsv_example(line, path, line_no))
    if not examples:
        raise EmptyInputError(f"{path} holds no labelled examples: add one per line.")
    return examples


def _lines(path: Path) -> Iterable[tuple[int, str]]:
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                raise InputEncodingError(
                    f"{path} line {line_no} is not valid UTF-8: re-save the file as UTF-8."
                ) from None
            line = line.removeprefix("\ufeff") if line_no == 1 else line
            if line.strip():
                yield line_no, line


def _json_example(line: str, path: Path, line_no: int, task: str) -> LabelledText:
    where = f"{path} line {line_no}"
    example = ENTITIES_EXAMPLE if task == "token_cls" else LABEL_EXAMPLE
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where} is not valid JSON ({exc.msg}): write it as {example}.") from None
    text = record.get("text") if isinstance(record, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise InputError(f'{where} has no non-empty string "text": write it as {example}.')
    if task == "seq_cls":
        label = record.get("label")
        if not isinstance(label, str) or not label:
            raise InputError(f'{where} has no string "label": write it as {example}.')
        return LabelledText(text, label=label, line=line_no)
    entities = record.get("entities")
    if not isinstance(entities, list):
        raise InputError(f'{where} has no "entities" list: write it as {example}.')
    return LabelledText(
        text, entities=tuple(_entity(e, text, where) for e in entities), line=line_no
    )


def _entity(item: Any, text: str, where: str) -> Span:
    if not isinstance(item, dict) or not all(k in item for k in ("start", "end", "label")):
        raise InputError(
            f'{where} has an entity without "start", "end" and "label": write each as '
            '{"start": 0, "end": 2, "label": "PER"} (character offsets, end exclusive).'
        )
    start, end, label = item["start"], item["end"], item["label"]
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end))
    if not ints or not 0 <= start < end <= len(text) or not isinstance(label, str):
        raise InputError(
            f"{where} has an entity {item!r} outside its text of {len(text)} characters: "
            "use integer character offsets with 0 <= start < end <= len(text) and a string label."
        )
    if "text" in item and item["text"] != text[start:end]:
        raise InputError(
            f"{where}: entity text {item['text']!r} is not text[{start}:{end}] = "
            f"{text[start:end]!r}: fix the offsets (end is exclusive)."
        )
    return start, end, label


def _tsv_example(line: str, path: Path, line_no: int) -> LabelledText:
    text, tab, label = line.rpartition("\t")
    if not tab or not text.strip() or not label.strip():
        raise InputError(
            f"{path} line {line_no} is not text<TAB>label: put one tab between the text and "
            "its label."
        )
    return LabelledText(text, label=label.strip(), line=line_no)


def check_labels(examples: Sequence[LabelledText], known: Iterable[str], path: Path) -> None:
    """Refuse a labelled file none of whose labels (entity types) the model predicts."""
    known = set(known)
    gold = {s[2] for e in examples for s in e.entities or ()}
    gold |= {e.label for e in examples if e.label is not None}
    if gold and not gold & known:
        raise InputError(
            f"None of the labels in {path} ({', '.join(sorted(gold)[:8])}) is one the model "
            f"predicts ({', '.join(sorted(known)[:8])}): relabel the file with the model's labels."
        )
