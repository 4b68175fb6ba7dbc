"""Tag decoding: BIO / IOB2 / BIOES (and BMES, IO) tag sequences to entities with character spans."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ernie_deploy.errors import ConfigError
from ernie_deploy.tasks.results import Entity

OUTSIDE, BEGIN, INSIDE, END, SINGLE = "O", "B", "I", "E", "S"
_PREFIXES = {"B": BEGIN, "I": INSIDE, "M": INSIDE, "E": END, "S": SINGLE}


@dataclass(frozen=True)
class TagSet:
    """Labels split into a position prefix (O, B, I, E, S) and an entity type."""

    labels: tuple[str, ...]
    prefixes: tuple[str, ...]
    types: tuple[str, ...]

    @property
    def outside(self) -> np.ndarray:
        """Boolean mask over label ids: True where the label is O."""
        cached = self.__dict__.get("_outside")
        if cached is None:
            cached = np.array([p == OUTSIDE for p in self.prefixes], dtype=bool)
            object.__setattr__(self, "_outside", cached)
        return cached

    @classmethod
    def from_labels(cls, labels: Sequence[str]) -> TagSet:
        prefixes, types = [], []
        for label in labels:
            prefix, kind = parse_label(label)
            prefixes.append(prefix)
            types.append(kind)
        if OUTSIDE not in prefixes:
            raise ConfigError(
                f"The token labels ({', '.join(labels)}) have no 'O' tag: token_cls needs "
                "BIO/BIOES labels such as O, B-PER, I-PER."
            )
        return cls(tuple(labels), tuple(prefixes), tuple(types))


def parse_label(label: str) -> tuple[str, str]:
    """'B-PER' -> ('B', 'PER'); 'O' -> ('O', ''); a bare 'PER' (IO scheme) -> ('I', 'PER')."""
    if label in ("O", "o", "OUTSIDE"):
        return OUTSIDE, ""
    for sep in ("-", "_"):
        head, found, tail = label.partition(sep)
        if found and head.upper() in _PREFIXES and tail:
            return _PREFIXES[head.upper()], tail
    return INSIDE, label


def word_starts(word_ids: np.ndarray) -> np.ndarray:
    """Indices of the first piece of each word (a token whose word id differs from the previous)."""
    if len(word_ids) == 0:
        return np.zeros(0, dtype=np.int64)
    change = np.empty(len(word_ids), dtype=bool)
    change[0] = True
    change[1:] = word_ids[1:] != word_ids[:-1]
    return np.flatnonzero(change)


# CJK ideographs, the ranges BERT's basic tokenizer makes one word each (kana and Hangul are not).
_CJK_RANGES = (
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xF900, 0xFAFF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2CEAF),
    (0x2F800, 0x2FA1F),
)


def isolate_cjk(text: str, offsets: np.ndarray, word_ids: np.ndarray) -> np.ndarray:
    """Word ids in which every piece holding a CJK ideograph starts a word of its own.

    BERT / ERNIE WordPiece tokenizers already split Chinese into one word per character. A
    SentencePiece Metaspace pre-tokenizer (stock XLM-R, E5, bge-m3) splits only at spaces, so a
    run of Chinese is one "word" and would become one entity with its first piece's tag. Here a
    piece continuing a word starts a new one when it begins with an ideograph or follows a piece
    that ends with one; a bare "▁" piece (empty, or sharing the next piece's start) stays with
    the piece after it. Word ids of text without ideographs come back unchanged.
    """
    n = len(word_ids)
    if n < 2 or text.isascii():
        return word_ids
    cont = np.flatnonzero(word_ids[1:] == word_ids[:-1]) + 1
    if len(cont) == 0:
        return word_ids
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    cjk = np.zeros(len(codes) + 1, dtype=bool)  # the extra False answers index len and -1
    for lo, hi in _CJK_RANGES:
        cjk[:-1] |= (codes >= lo) & (codes <= hi)
    start, end = offsets[cont, 0], offsets[cont, 1]
    prev_start, prev_end = offsets[cont - 1, 0], offsets[cont - 1, 1]
    bare_prev = (prev_end <= prev_start) | (prev_start >= start)
    new = (cjk[np.where(start < end, start, -1)] | cjk[prev_end - 1]) & ~bare_prev
    if not new.any():
        return word_ids
    starts = np.ones(n, dtype=bool)
    starts[cont[~new]] = False  # continuations that stay continuations
    return np.cumsum(starts) - 1


def _blank(ch: str) -> bool:
    """Whitespace, or an invisible format character (zero-width space, joiners, BOM)."""
    return ch.isspace() or unicodedata.category(ch) == "Cf"


def decode(
    text: str,
    tags: np.ndarray,
    scores: np.ndarray,
    offsets: np.ndarray,
    word_ids: np.ndarray,
    tagset: TagSet,
    strict: bool = False,
) -> tuple[Entity, ...]:
    """Turn per-token tag ids into entities.

    Each word takes the tag (and score) of its first sub-word piece; its span runs from
    its first piece's start to its last piece's end. `I-X` after `O` (or `E-X` alone)
    opens an entity unless `strict`; `I-Y` inside an X entity closes X and opens Y
    (strict: closes X and drops the Y piece). An entity still open at the end is kept.
    Offsets are character offsets into `text`, so `entity.text == text[start:end]`; an
    entity never starts or ends with whitespace or an invisible format character (U+200B,
    U+FEFF, ...), and one made of those alone is dropped; it never ends between a letter and
    its combining marks.
    """
    starts = word_starts(word_ids)
    if len(starts) == 0:
        return ()
    ends = np.append(starts[1:], len(word_ids)) - 1
    span_start = offsets[starts, 0]
    span_end = offsets[ends, 1]
    word_tags = tags[starts]
    word_scores = scores[starts]

    entities: list[Entity] = []
    kind = ""
    first = last = -1
    total = 0.0

    def close() -> None:
        nonlocal kind
        if kind:
            s, e = int(span_start[first]), int(span_end[last])
            while s < e and _blank(text[s]):  # a SentencePiece "▁" word or piece
                s += 1
            while e > s and _blank(text[e - 1]):
                e -= 1
            # a mark the tokenizer left out (e + U+0301) stays with its letter, up to the next word
            stop = int(span_start[last + 1]) if last + 1 < len(span_start) else len(text)
            while s < e < stop and unicodedata.combining(text[e]):
                e += 1
            if s < e:  # a word of spaces alone is no entity
                entities.append(Entity(text[s:e], kind, s, e, total / (last - first + 1)))
        kind = ""

    # O words only close what is open, so the loop visits the other words and closes
    # at every gap; most words of most texts are O.
    previous = -2
    for w in np.flatnonzero(~tagset.outside[word_tags]).tolist():
        if w != previous + 1:
            close()
        previous = w
        prefix = tagset.prefixes[word_tags[w]]
        label = tagset.types[word_tags[w]]
        score = float(word_scores[w])
        continues = kind == label and prefix in (INSIDE, END)
        if continues:
            last, total = w, total + score
            if prefix == END:
                close()
            continue
        close()
        if prefix == OUTSIDE or (strict and prefix in (INSIDE, END)):
            continue
        kind, first, last, total = label, w, w, score
        if prefix in (SINGLE, END):
            close()
    close()
    return tuple(entities)
