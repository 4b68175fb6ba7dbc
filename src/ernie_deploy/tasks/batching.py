"""Length-sorted batching: pad sequences per batch into the features a graph may declare."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ernie_deploy.errors import ConfigError, EmptyInputError, InputEncodingError, InputError


@dataclass(frozen=True)
class Encoded:
    """One model input sequence with its special tokens (what a single row of a batch holds)."""

    input_ids: np.ndarray
    token_type_ids: np.ndarray


@dataclass(frozen=True)
class Batch:
    """Padded features for some sequences; `indices` are their positions in the caller's list."""

    indices: np.ndarray
    lengths: np.ndarray
    features: dict[str, np.ndarray]


def plural(word: str) -> str:
    """text -> texts, query -> queries (the nouns messages name)."""
    return word[:-1] + "ies" if word.endswith("y") else word + "s"


def check_texts(texts: object, what: str = "text", first_index: int = 0) -> list[str]:
    """Accept a str or a sequence of str; reject empty input with a sentence naming the fix."""
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, Sequence) or isinstance(texts, bytes):
        raise InputError(f"Expected a string or a list of strings, got {type(texts).__name__}.")
    out = list(texts)
    if not out:
        raise EmptyInputError(f"No {plural(what)} were given: pass at least one non-empty {what}.")
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise InputError(
                f"{what.capitalize()} {first_index + i} is a {type(text).__name__}, not a string: pass strings."
            )
        if not text.strip():
            raise EmptyInputError(
                f"{what.capitalize()} {first_index + i} is empty: remove empty {plural(what)} "
                "before predicting."
            )
        if not text.isascii():
            check_unicode(text, f"{what.capitalize()} {first_index + i}")
    return out


def check_unicode(text: str, where: str) -> None:
    """A lone surrogate (half of a UTF-16 pair, e.g. from a cut JSON escape) is no character."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputEncodingError(
            f"{where} holds a lone surrogate {text[exc.start]!r} at character {exc.start}, which "
            "is not valid Unicode text: fix that text (often a JSON \\ud8xx escape cut in half)."
        ) from None


def check_batch_size(batch_size: int) -> int:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}.")
    return batch_size


def iter_batches(seqs: Sequence[Encoded], batch_size: int, pad_id: int) -> Iterator[Batch]:
    """Sort by length (longest first, so memory trouble shows at once), pad per batch."""
    lengths = np.fromiter((len(s.input_ids) for s in seqs), dtype=np.int64, count=len(seqs))
    order = np.argsort(-lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        yield Batch(idx, lengths[idx], pad([seqs[i] for i in idx], pad_id))


def pad(seqs: Sequence[Encoded], pad_id: int) -> dict[str, np.ndarray]:
    """input_ids / token_type_ids / attention_mask / position_ids, right-padded to the longest."""
    width = max(len(s.input_ids) for s in seqs)
    n = len(seqs)
    ids = np.full((n, width), pad_id, dtype=np.int64)
    types = np.zeros((n, width), dtype=np.int64)
    mask = np.zeros((n, width), dtype=np.int64)
    for row, s in enumerate(seqs):
        k = len(s.input_ids)
        ids[row, :k] = s.input_ids
        types[row, :k] = s.token_type_ids
        mask[row, :k] = 1
    positions = np.broadcast_to(np.arange(width, dtype=np.int64), (n, width))
    return {
        "input_ids": ids,
        "token_type_ids": types,
        "attention_mask": mask,
        "position_ids": positions,
    }
