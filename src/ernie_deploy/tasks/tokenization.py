"""Tokenization with exact character offsets (HF tokenizers); ids match paddlenlp ErnieTokenizer.

Both kinds of tokenizer run in the HF `tokenizers` library (batched, in Rust):

* ``tokenizer.json`` (optimum / Hugging Face export dirs) is loaded as it is.
* ``vocab.txt`` (ERNIE / BERT WordPiece) gets a pipeline built here that gives the ids of
  paddlenlp's ``ErnieTokenizer`` (``BasicTokenizer`` + ``WordpieceTokenizer``). The stock
  ``BertNormalizer`` + ``BertPreTokenizer`` do not: paddlenlp also makes every symbol (``S*``,
  plus ² º 〇 µ Ø ŋ Ʊ) a word of its own, and it judges controls, spaces, marks and
  punctuation with Python's ``unicodedata``, whose Unicode version is not the Rust crates'.
  So the character classes are computed from this interpreter's ``unicodedata`` (as
  paddlenlp would on it) and handed to Rust as regexes; Rust's NFD is patched where it lags.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import tokenizers
from tokenizers import AddedToken, Regex, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

from ernie_deploy.errors import ConfigError, TokenizerNotFoundError, first_line

__all__ = ["Tokens", "Tokenizer"]

_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_PAD_CANDIDATES = ("[PAD]", "<pad>", "<|pad|>", "[pad]")
_SURROGATES = re.compile("[\ud800-\udfff]")
_SPACE = re.compile(r"\s")
# paddlenlp `_is_symbol`: category S* plus these (soft hyphen, ², º, 〇, µ, Ø, ŋ, Ʊ).
_EXTRA_SYMBOLS = (0x00AD, 0x00B2, 0x00BA, 0x3007, 0x00B5, 0x00D8, 0x014B, 0x01B1)
# paddlenlp `_is_chinese_char` ranges.
_CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)  # fmt: skip


@dataclass(frozen=True)
class Tokens:
    """One text's content tokens (no special tokens) with offsets into the original string."""

    ids: np.ndarray  # int64 [n]
    offsets: np.ndarray  # int64 [n, 2] character (start, end) into the caller's str
    word_ids: np.ndarray  # int64 [n] pre-tokenizer word index; sub-word pieces share it


@dataclass(frozen=True)
class _Template:
    """The special tokens around one input's content (or a pair's), read off a post-processor."""

    pre: np.ndarray
    pre_types: np.ndarray
    a_type: int
    mid: np.ndarray
    mid_types: np.ndarray
    b_type: int
    post: np.ndarray
    post_types: np.ndarray

    @property
    def size(self) -> int:
        return len(self.pre) + len(self.mid) + len(self.post)


def _ranges_class(mask: np.ndarray) -> str:
    """An Oniguruma character class matching the code points where `mask` is true."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    parts = [
        f"\\x{{{lo:x}}}" if lo == hi else f"\\x{{{lo:x}}}-\\x{{{hi:x}}}"
        for lo, hi in zip(edges[0::2], edges[1::2] - 1, strict=True)
    ]
    return "[" + "".join(parts) + "]"


@lru_cache(maxsize=1)
def _char_classes() -> tuple[dict[str, str], str]:
    """paddlenlp BasicTokenizer's character tests, evaluated with the `unicodedata` it uses.

    Returns regex classes of the characters it removes, splits on, strips as accents and
    isolates, and the string of all characters that NFD changes.
    """
    n = 0x110000
    cats = "".join(map(unicodedata.category, map(chr, range(n)))).encode("ascii")
    cat = np.frombuffer(cats, np.uint8).reshape(n, 2)
    major, minor = cat[:, 0], cat[:, 1]
    cp = np.arange(n)
    # _clean_text: NUL, U+FFFD and every C* except \t \n \r are dropped.
    removed = ((major == ord("C")) & ~np.isin(cp, (9, 10, 13))) | np.isin(cp, (0, 0xFFFD))
    # _is_whitespace (space, \t \n \r, Zs), then str.split(), which also splits on Zl, Zp.
    space = np.fromiter(map(str.isspace, map(chr, range(n))), bool, n) & ~removed
    # _run_strip_accents drops Mn after NFD.
    marks = (major == ord("M")) & (minor == ord("n"))
    # _is_punctuation (P*, ASCII non-alphanumerics), _is_symbol (S*, a few more),
    # _tokenize_chinese_chars: each of these becomes a word of its own.
    isolated = np.isin(major, (ord("P"), ord("S"))) | np.isin(cp, _EXTRA_SYMBOLS)
    for lo, hi in ((33, 47), (58, 64), (91, 96), (123, 126), *_CJK_RANGES):
        isolated[lo : hi + 1] = True
    nfd = "".join(
        c for c in map(chr, np.flatnonzero(~removed)) if not unicodedata.is_normalized("NFD", c)
    )
    classes = {
        "removed": _ranges_class(removed),
        "space": _ranges_class(space),
        "marks": _ranges_class(marks),
        "isolated": _ranges_class(isolated & ~removed),
    }
    return classes, nfd


def _nfd() -> normalizers.Normalizer:
    """Rust NFD, patched where its Unicode tables lag Python's (e.g. U+11938, Unicode 13)."""
    _, chars = _char_classes()
    rust = normalizers.NFD().normalize_str("\n".join(chars)).split("\n")
    fixes = [
        normalizers.Replace(ch, want)
        for ch, got in zip(chars, rust, strict=True)
        if got != (want := unicodedata.normalize("NFD", ch))
    ]
    return normalizers.Sequence([*fixes, normalizers.NFD()])


def _read_vocab(vocab_file: Path) -> dict[str, int]:
    """Read vocab.txt as paddlenlp does: one token a line, a repeated token keeps its last id."""
    try:
        with open(vocab_file, encoding="utf-8") as f:
            vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{vocab_file} is not UTF-8 (byte {exc.start} cannot be decoded; GBK?): re-save it as "
            "UTF-8 (e.g. with iconv -f GBK -t UTF-8)."
        ) from exc
    if not vocab:
        raise ConfigError(f"{vocab_file} is empty: use the model's own vocab.txt.")
    return vocab


def _wordpiece(vocab: dict[str, int], lowercase: bool) -> tokenizers.Tokenizer:
    """A Rust pipeline with the ids of paddlenlp's ErnieTokenizer on `vocab`."""
    missing = [t for t in ("[UNK]", "[CLS]", "[SEP]") if t not in vocab]
    if missing:
        raise ConfigError(f"vocab.txt lacks {', '.join(missing)}: use the model's own vocab.txt.")
    cls, _ = _char_classes()
    tok = tokenizers.Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    steps = [normalizers.Replace(Regex(cls["removed"] + "+"), "")]
    if lowercase:  # paddlenlp lowercases char by char, then NFD, then drops Mn (strip_accents)
        steps += [
            normalizers.Lowercase(),
            _nfd(),
            normalizers.Replace(Regex(cls["marks"] + "+"), ""),
        ]
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(cls["space"] + "+"), "removed"),
            pre_tokenizers.Split(Regex(cls["isolated"]), "isolated"),
        ]
    )
    cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    # paddlenlp never splits its special tokens when they occur in the text.
    tok.add_special_tokens([AddedToken(t, normalized=False) for t in _SPECIAL_TOKENS if t in vocab])
    return tok


def _probe(tok: tokenizers.Tokenizer) -> str:
    """A short text the tokenizer turns into at least one content token."""
    for text in ["a", "hello", "1", ",", *list(tok.get_vocab())[:50]]:
        try:
            if tok.encode(text, add_special_tokens=False).ids:
                return text
        except Exception:  # some models cannot encode some probes (no unk token)
            continue
    raise ConfigError("The tokenizer produces no tokens for any probe text: check tokenizer.json.")


def _template(tok: tokenizers.Tokenizer, pair: bool) -> _Template:
    """Read the special tokens and type ids the tokenizer's post-processor puts around content."""
    text = _probe(tok)
    enc = tok.encode(text, text if pair else None, add_special_tokens=True)
    seq, ids, types = enc.sequence_ids, enc.ids, enc.type_ids
    first = {s: seq.index(s) for s in (0, 1) if s in seq}
    last = {s: len(seq) - 1 - seq[::-1].index(s) for s in first}

    def span(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(ids[lo:hi], dtype=np.int64), np.asarray(types[lo:hi], dtype=np.int64)

    pre = span(0, first[0])
    if pair:
        mid, post = span(last[0] + 1, first[1]), span(last[1] + 1, len(seq))
        b_type = types[first[1]]
    else:
        mid, post, b_type = span(0, 0), span(last[0] + 1, len(seq)), 0
    return _Template(*pre, types[first[0]], *mid, b_type, *post)


def _do_lower_case(model_dir: Path) -> bool:
    """`do_lower_case` from tokenizer_config.json (paddlenlp's default, True, without one)."""
    config = model_dir / "tokenizer_config.json"
    if not config.is_file():
        return True
    try:
        return bool(json.loads(config.read_text("utf-8")).get("do_lower_case", True))
    except (ValueError, AttributeError) as e:
        raise ConfigError(f"{config} is not a JSON object: fix it or remove it.") from e


def _skip_leading_spaces(text: str, offsets: np.ndarray) -> None:
    """Start SentencePiece word pieces after the space their "▁" stands for (in place).

    Metaspace tokenizers (XLM-R, e5) give a word's first piece the offsets of the space
    before it, so an entity made of it would start with that space; WordPiece offsets
    never start on a space, so they are left as they are.
    """
    spaces = np.fromiter((m.start() for m in _SPACE.finditer(text)), dtype=np.int64)
    for i in np.nonzero(np.isin(offsets[:, 0], spaces) & (offsets[:, 0] < offsets[:, 1]))[0]:
        start, end = int(offsets[i, 0]), int(offsets[i, 1])
        while start < end and text[start].isspace():
            start += 1
        offsets[i, 0] = start


class Tokenizer:
    """Batch tokenization with character offsets, and model inputs with special tokens."""

    def __init__(self, tok: tokenizers.Tokenizer, pad_id: int) -> None:
        tok.no_truncation()
        tok.no_padding()
        self._tok = tok
        self.pad_id = pad_id
        self._single = _template(tok, pair=False)
        self._pair = _template(tok, pair=True)

    @classmethod
    def from_dir(cls, path: str | Path) -> Tokenizer:
        """tokenizer.json if the directory has one, else vocab.txt (+ tokenizer_config.json)."""
        path = Path(path)
        if path.is_file():  # e.g. the model.onnx next to the tokenizer files
            path = path.parent
        if (path / "tokenizer.json").is_file():
            try:
                tok = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
            except Exception as exc:  # the Rust loader raises a bare Exception
                raise ConfigError(
                    f"Cannot read {path / 'tokenizer.json'} ({first_line(exc, 200)}): save it "
                    "again with the tokenizers library (UTF-8 JSON) or use the model's own file."
                ) from exc
            pad = tok.padding["pad_id"] if tok.padding else None
            if pad is None:
                pad = next((i for t in _PAD_CANDIDATES if (i := tok.token_to_id(t)) is not None), 0)
            return cls(tok, pad)
        if (path / "vocab.txt").is_file():
            return cls.from_vocab(path / "vocab.txt", lowercase=_do_lower_case(path))
        raise TokenizerNotFoundError(
            f"No tokenizer found in {path}: put tokenizer.json or vocab.txt there, "
            "or pass --model_name_or_path a directory that has one."
        )

    @classmethod
    def from_vocab(cls, vocab_file: str | Path, lowercase: bool = True) -> Tokenizer:
        """ERNIE/BERT WordPiece over `vocab_file`, id for id paddlenlp's ErnieTokenizer."""
        vocab_file = Path(vocab_file)
        if not vocab_file.is_file():
            raise TokenizerNotFoundError(
                f"No vocab file at {vocab_file}: pass the path of the model's vocab.txt."
            )
        vocab = _read_vocab(vocab_file)
        return cls(_wordpiece(vocab, lowercase), vocab.get("[PAD]", 0))

    def tokenize(self, texts: Sequence[str]) -> list[Tokens]:
        """Content tokens of each text (no special tokens, no truncation, no padding)."""
        # Lone surrogates cannot cross into Rust; U+FFFD keeps every offset in place.
        clean = [_SURROGATES.sub("\ufffd", t) for t in texts]
        out = []
        for text, enc in zip(texts, self._tok.encode_batch(clean, add_special_tokens=False)):
            n = len(enc.ids)
            offsets = np.asarray(enc.offsets, dtype=np.int64).reshape(n, 2)
            if n and _SPACE.search(text):
                _skip_leading_spaces(text, offsets)
            out.append(
                Tokens(
                    ids=np.asarray(enc.ids, dtype=np.int64),
                    offsets=offsets,
                    word_ids=np.asarray(
                        [-1 if w is None else w for w in enc.word_ids], dtype=np.int64
                    ),
                )
            )
        return out

    def num_special_tokens(self, pair: bool = False) -> int:
        """How many special tokens build_inputs adds to one input (or to a pair)."""
        return (self._pair if pair else self._single).size

    def build_inputs(
        self, a: np.ndarray, b: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """(input_ids, token_type_ids, prefix_len): content ids wrapped in special tokens."""
        a = np.asarray(a, dtype=np.int64)
        t = self._single if b is None else self._pair
        parts = [t.pre, a, t.mid]
        types = [t.pre_types, np.full(len(a), t.a_type, dtype=np.int64), t.mid_types]
        if b is not None:
            b = np.asarray(b, dtype=np.int64)
            parts.append(b)
            types.append(np.full(len(b), t.b_type, dtype=np.int64))
        parts.append(t.post)
        types.append(t.post_types)
        return np.concatenate(parts), np.concatenate(types), len(t.pre)

    def tokens_to_strings(self, ids: Sequence[int] | np.ndarray) -> list[str]:
        """Token strings for display (unknown ids become '')."""
        return [self._tok.id_to_token(int(i)) or "" for i in ids]
