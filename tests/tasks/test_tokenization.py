"""Tokenizer: id parity with paddlenlp's ErnieTokenizer, exact offsets, special-token templates."""

from __future__ import annotations

import ast
import os
import random
import shutil
import string
import subprocess
import sys
import time
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tokenizers
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, models, pre_tokenizers, processors

from ernie_deploy.errors import TokenizerNotFoundError
from ernie_deploy.tasks import tokenization
from ernie_deploy.tasks.tokenization import Tokenizer, Tokens

N_FUZZ = 10_000
N_PAIRS = 1_000
N_CASED = 2_000

# --------------------------------------------------------------------------- fuzz corpus

_WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "ERNIE",
    "Paddle",
    "tokenizer",
    "unaffable",
    "playing",
    "naïve",
    "café",
    "résumé",
    "Ångström",
    "Über",
    "façade",
    "jalapeño",
    "coöperate",
    "São",
    "Paulo",
    "Zürich",
    "ÉCOLE",
    "iPhone",
    "McDonald's",
    "don't",
    "e-mail",
    "C++",
    "U.S.A.",
    "COVID-19",
    "GPT-4o",
    "http://x.cn/a?b=1",
    "a@b.com",
]
_CJK_PUNCT = "，。！？；：“”‘’（）【】《》、…—·～「」『』〔〕"
_SYMBOLS = "℃¥©²→±×÷€£°※√∞≈≠≤≥™®§¶µØøŋƱʊº〇½¼³¹ⅣⅫ①⑩㈠㊣㎡㏄😀🎉👍🏻❤️🇨🇳👨‍👩‍👧🙂🥰🫠✓✔★☆♪♂♀⚠"
_FULLWIDTH = "ＡＢＣａｂｃ１２３！＠＃％＆（）＋－：；＜＝＞？［］｛｝"
_SPACES = (" ", "  ", "\t", "\n", "\r\n", "\u3000", "\u00a0", "\u2028", "\u2009", "\u202f")
_INVISIBLE = ("\u200b", "\u200c", "\u200d", "\ufeff", "\u00ad", "\u2060", "\u200e")
_CONTROLS = ("\x00", "\x01", "\x07", "\x0b", "\x0c", "\x1f", "\x7f", "\x85", "\ufffd", "\ud800")
_OTHER_SCRIPTS = (
    "ΣΑΣ ΟΔΟΣ Ἀθῆναι",  # Greek (final sigma, polytonic)
    "Москва ЁЖ",  # Cyrillic
    "ひらがな カタカナ ｶﾀｶﾅ",  # kana, halfwidth kana
    "한국어 텍스트",  # Hangul (NFD splits into jamo)
    "العربية",
    "ภาษาไทย",
    "हिन्दी",
    "İstanbul ǅ ẞ ﬁ",  # case-mapping oddities
    "e\u0301 a\u0308\u0323 n\u0303",  # combining marks
    "𠀀𠀁𪚥 豈 丽",  # CJK extension B, compatibility ideographs
)
_SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[UNK]", "[MASK]", "[PAD]")
_SPECIAL_STRINGS = ("[CLS]", "[SEP]", "[UNK]", "[MASK]", "[PAD]", "[cls]", "[UNK", "[[SEP]]")


def _random_code_point(rng: random.Random) -> str:
    if rng.random() < 0.5:  # mostly the BMP, where most assigned characters are
        return chr(rng.randint(0, 0xFFFF))
    return chr(rng.randint(0, 0x10FFFF))


def _piece(rng: random.Random, vocab_words: list[str]) -> str:
    kind = rng.random()
    if kind < 0.22:
        return "".join(chr(rng.randint(0x4E00, 0x9FA5)) for _ in range(rng.randint(1, 8)))
    if kind < 0.37:
        word = rng.choice(_WORDS)
        case = rng.random()
        return word.upper() if case < 0.2 else word.title() if case < 0.4 else word
    if kind < 0.45:
        return rng.choice(vocab_words)
    if kind < 0.50:
        letters = string.ascii_letters + "éèàüöçñ"
        n = rng.choice((rng.randint(1, 12), rng.randint(95, 110)))  # max_input_chars_per_word
        return "".join(rng.choice(letters) for _ in range(n))
    if kind < 0.57:
        return "".join(rng.choice("0123456789.,%") for _ in range(rng.randint(1, 14)))
    if kind < 0.66:
        return rng.choice(_SPACES)
    if kind < 0.72:
        return rng.choice(string.punctuation + _CJK_PUNCT)
    if kind < 0.80:
        return rng.choice(_SYMBOLS + _FULLWIDTH)
    if kind < 0.84:
        return rng.choice(_INVISIBLE + _CONTROLS)
    if kind < 0.88:
        return rng.choice(_OTHER_SCRIPTS)
    if kind < 0.90:
        return rng.choice(_SPECIAL_STRINGS)
    return "".join(_random_code_point(rng) for _ in range(rng.randint(1, 3)))


def fuzz_texts(n: int, vocab_file: Path, seed: int = 20240611) -> list[str]:
    """`n` deterministic mixed-script texts, most 1-30 pieces long, some glued without spaces."""
    rng = random.Random(seed)
    vocab = vocab_file.read_text("utf-8").split("\n")
    vocab_words = [w.removeprefix("##") for w in vocab if w and not w.startswith("[")]
    texts = []
    for _ in range(n):
        pieces = [_piece(rng, vocab_words) for _ in range(rng.randint(1, 30))]
        texts.append(("" if rng.random() < 0.3 else " ").join(pieces))
    return texts


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ernie_dir(chinese_vocab: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ernie")
    shutil.copy(chinese_vocab, d / "vocab.txt")
    return d


@pytest.fixture(scope="module")
def tok(chinese_vocab: Path) -> Tokenizer:
    return Tokenizer.from_vocab(chinese_vocab)


@pytest.fixture(scope="module")
def cased_tok(chinese_vocab: Path) -> Tokenizer:
    return Tokenizer.from_vocab(chinese_vocab, lowercase=False)


def _paddle_tokenizer(ernie_dir: Path, lowercase: bool = True) -> Any:
    os.environ.setdefault("AISTUDIO_BOS_OFFLINE", "1")
    transformers = pytest.importorskip("paddlenlp.transformers")
    # from_pretrained (what a deployed model dir is loaded with) keeps "[CLS]" etc. in the text
    # as special tokens; ErnieTokenizer(vocab_file=...) alone would split them like any text.
    return transformers.ErnieTokenizer.from_pretrained(str(ernie_dir), do_lower_case=lowercase)


def _mismatches(pairs: list[tuple[object, object, object]], what: str) -> str:
    lines = [f"{what}: {len(pairs)} mismatches; first ones:"]
    lines += [f"  {text!r}\n    paddle: {want}\n    ours:   {got}" for text, want, got in pairs[:5]]
    return "\n".join(lines)


# --------------------------------------------------------------------------- 1. fuzz parity


def test_fuzz_parity_with_paddlenlp(tok: Tokenizer, chinese_vocab: Path, ernie_dir: Path) -> None:
    paddle = _paddle_tokenizer(ernie_dir)
    texts = fuzz_texts(N_FUZZ, chinese_vocab)
    t0 = time.perf_counter()
    ours = tok.tokenize(texts)
    ours_s = time.perf_counter() - t0

    bad_ids, bad_inputs = [], []
    t0 = time.perf_counter()
    for text, got in zip(texts, ours, strict=True):
        want = paddle.convert_tokens_to_ids(paddle.tokenize(text))
        if got.ids.tolist() != want:
            bad_ids.append((text, want, got.ids.tolist()))
        full = paddle(text)
        ids, types, prefix = tok.build_inputs(got.ids)
        if (ids.tolist(), types.tolist(), prefix) != (full["input_ids"], full["token_type_ids"], 1):
            bad_inputs.append((text, full["input_ids"], ids.tolist()))
    paddle_s = time.perf_counter() - t0
    print(f"\nfuzz: {len(texts)} texts, ours {ours_s:.2f}s, paddlenlp x2 {paddle_s:.2f}s")
    assert not bad_ids, _mismatches(bad_ids, "content ids")
    assert not bad_inputs, _mismatches(bad_inputs, "input_ids with special tokens")


def test_fuzz_pair_parity_with_paddlenlp(
    tok: Tokenizer, chinese_vocab: Path, ernie_dir: Path
) -> None:
    paddle = _paddle_tokenizer(ernie_dir)
    texts = fuzz_texts(2 * N_PAIRS, chinese_vocab, seed=7)
    enc = tok.tokenize(texts)
    bad = []
    for i in range(N_PAIRS):
        a, b = texts[2 * i], texts[2 * i + 1]
        full = paddle(a, b)
        ids, types, prefix = tok.build_inputs(enc[2 * i].ids, enc[2 * i + 1].ids)
        want = (full["input_ids"], full["token_type_ids"])
        if (ids.tolist(), types.tolist()) != want or prefix != 1:
            bad.append(((a, b), want, (ids.tolist(), types.tolist())))
    assert tok.num_special_tokens(pair=True) == 3
    assert not bad, _mismatches(bad, "pair inputs")


def test_fuzz_parity_cased(cased_tok: Tokenizer, chinese_vocab: Path, ernie_dir: Path) -> None:
    """do_lower_case=False: no lowercasing and no accent stripping, like paddlenlp."""
    paddle = _paddle_tokenizer(ernie_dir, lowercase=False)
    texts = fuzz_texts(N_CASED, chinese_vocab, seed=99)
    bad = []
    for text, got in zip(texts, cased_tok.tokenize(texts), strict=True):
        want = paddle.convert_tokens_to_ids(paddle.tokenize(text))
        if got.ids.tolist() != want:
            bad.append((text, want, got.ids.tolist()))
    assert not bad, _mismatches(bad, "cased content ids")


def test_fuzz_parity_with_bare_constructor(tok: Tokenizer, chinese_vocab: Path) -> None:
    """ErnieTokenizer(vocab_file=...) agrees too, except that it splits "[SEP]" etc. in the text."""
    os.environ.setdefault("AISTUDIO_BOS_OFFLINE", "1")
    transformers = pytest.importorskip("paddlenlp.transformers")
    paddle = transformers.ErnieTokenizer(vocab_file=str(chinese_vocab))
    texts = fuzz_texts(N_CASED, chinese_vocab, seed=3)
    texts = [t for t in texts if not any(s in t for s in _SPECIAL_TOKENS)]
    bad = []
    for text, got in zip(texts, tok.tokenize(texts), strict=True):
        want = paddle.convert_tokens_to_ids(paddle.tokenize(text))
        if got.ids.tolist() != want:
            bad.append((text, want, got.ids.tolist()))
    assert len(texts) > N_CASED // 2
    assert not bad, _mismatches(bad, "content ids vs ErnieTokenizer(vocab_file=...)")


def test_fuzz_corpus_covers_the_hard_cases(chinese_vocab: Path) -> None:
    joined = "".join(fuzz_texts(N_FUZZ, chinese_vocab))
    for needle in ("😀", "℃", "¥", "©", "²", "→", "±", "×", "\u3000", "\u00a0", "é", "[SEP]"):
        assert needle in joined
    assert any(unicodedata.category(c) == "Cn" for c in joined)


# --------------------------------------------------------------------------- 2. offsets


def _normalize(src: str, lowercase: bool) -> str:
    """What paddlenlp turns the source characters into before WordPiece."""
    kept = "".join(
        c for c in src if not (ord(c) in (0, 0xFFFD) or unicodedata.category(c)[0] == "C")
    )
    if not lowercase:
        return kept
    lowered = unicodedata.normalize("NFD", kept.lower())
    return "".join(c for c in lowered if unicodedata.category(c) != "Mn")


def _check_offsets(tok: Tokenizer, text: str, t: Tokens, lowercase: bool) -> None:
    strings = tok.tokens_to_strings(t.ids)
    assert t.ids.dtype == t.offsets.dtype == t.word_ids.dtype == np.int64
    assert t.offsets.shape == (len(t.ids), 2) and t.word_ids.shape == (len(t.ids),)
    starts, ends = t.offsets[:, 0], t.offsets[:, 1]
    assert (starts >= 0).all() and (ends <= len(text)).all() and (starts < ends).all()
    assert (np.diff(starts) >= 0).all() and (np.diff(ends) >= 0).all()
    assert (np.diff(t.word_ids) >= 0).all()
    for i, s in enumerate(strings):
        if s.startswith("##"):
            assert t.word_ids[i] == t.word_ids[i - 1], (text, strings)
    # Tokens with the same span (several pieces of one source character) are checked together.
    i = 0
    while i < len(strings):
        j = i
        while j + 1 < len(strings) and (t.offsets[j + 1] == t.offsets[i]).all():
            j += 1
        group = strings[i : j + 1]
        if not set(_SPECIAL_TOKENS).intersection(group):
            s, e = t.offsets[i]
            source = _normalize(text[s:e], lowercase)
            assert source == "".join(g.removeprefix("##") for g in group), (text, strings, i)
        i = j + 1


_text_strategy = st.lists(
    st.one_of(
        st.text(st.characters(), max_size=12),
        st.text(st.characters(codec="ascii"), max_size=12),
        st.sampled_from(
            [*_SPACES, *_INVISIBLE, *_CONTROLS, *_SPECIAL_STRINGS, *_OTHER_SCRIPTS, "café", "ＡＢ"]
        ),
        st.text(st.sampled_from(_SYMBOLS + _FULLWIDTH + _CJK_PUNCT + "中文字符"), max_size=6),
    ),
    max_size=8,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=_text_strategy)
def test_offsets_point_into_the_original_text(tok: Tokenizer, text: str) -> None:
    (t,) = tok.tokenize([text])
    _check_offsets(tok, text, t, lowercase=True)


@settings(max_examples=100, deadline=None)
@given(text=_text_strategy)
def test_offsets_cased(cased_tok: Tokenizer, text: str) -> None:
    (t,) = cased_tok.tokenize([text])
    _check_offsets(cased_tok, text, t, lowercase=False)


def test_offsets_examples(tok: Tokenizer) -> None:
    text = "Ｅ\u0301RNIE 3.0很强😀！℃ [SEP]x\ud800y"
    (t,) = tok.tokenize([text])
    assert [text[s:e] for s, e in t.offsets] == [
        "Ｅ", "RN", "IE", "3", ".", "0", "很", "强", "😀", "！", "℃", "[SEP]", "x", "y"
    ]  # fmt: skip
    assert tok.tokens_to_strings(t.ids) == [
        "ｅ", "##rn", "##ie", "3", ".", "0", "很", "强", "[UNK]", "！", "℃", "[SEP]", "x", "##y"
    ]  # fmt: skip
    assert t.word_ids.tolist() == [0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 10]


def test_empty_and_batch(tok: Tokenizer) -> None:
    out = tok.tokenize(["", "  \u200b ", "中"])
    assert [len(t.ids) for t in out] == [0, 0, 1]
    assert out[0].offsets.shape == (0, 2)
    ids, types, prefix = tok.build_inputs(out[0].ids)
    assert ids.tolist() == [101, 102] and types.tolist() == [0, 0] and prefix == 1


# --------------------------------------------------------------------------- 3. build_inputs


def test_build_inputs_vocab_pipeline(tok: Tokenizer) -> None:
    a, b = tok.tokenize(["今天天气很好", "Hello world!"])
    hf = tok._tok  # the pipeline's own post-processor is the reference
    ref_single = hf.encode("今天天气很好", add_special_tokens=True)
    ref_pair = hf.encode("今天天气很好", "Hello world!", add_special_tokens=True)
    ids, types, prefix = tok.build_inputs(a.ids)
    assert (ids.tolist(), types.tolist(), prefix) == (ref_single.ids, ref_single.type_ids, 1)
    ids, types, prefix = tok.build_inputs(a.ids, b.ids)
    assert (ids.tolist(), types.tolist(), prefix) == (ref_pair.ids, ref_pair.type_ids, 1)
    assert ids.dtype == types.dtype == np.int64
    assert tok.num_special_tokens() == 2 and tok.num_special_tokens(pair=True) == 3
    assert tok.pad_id == 0


_SPM = ["<s>", "<pad>", "</s>", "<unk>", "▁hello", "▁world", "▁", "h", "e", "l", "o", "w", "r", "d"]


def _tiny_tokenizer_json(tmp_path: Path, processor: str) -> tokenizers.Tokenizer:
    hf = tokenizers.Tokenizer(models.Unigram([(p, -float(i)) for i, p in enumerate(_SPM)], 3))
    hf.pre_tokenizer = pre_tokenizers.Metaspace()
    ids = {t: i for i, t in enumerate(_SPM)}
    if processor == "xlmr-template":
        hf.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>",
            pair="<s> $A </s> </s> $B </s>",
            special_tokens=[("<s>", 0), ("</s>", 2)],
        )
    elif processor == "roberta":
        hf.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    elif processor == "bert-template":
        hf.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>",
            pair="<s>:0 $A:0 </s>:0 $B:1 </s>:1",
            special_tokens=[("<s>", 0), ("</s>", 2)],
        )
    hf.add_special_tokens([AddedToken(t) for t in ("<s>", "<pad>", "</s>", "<unk>")])
    assert ids["<pad>"] == 1
    hf.save(str(tmp_path / "tokenizer.json"))
    return hf


@pytest.mark.parametrize("processor", ["xlmr-template", "roberta", "bert-template", "none"])
def test_build_inputs_tokenizer_json(tmp_path: Path, processor: str) -> None:
    hf = _tiny_tokenizer_json(tmp_path, processor)
    tok = Tokenizer.from_dir(tmp_path)
    assert tok.pad_id == 1
    a_text, b_text = "hello world", "world hello hello"
    a, b = tok.tokenize([a_text, b_text])
    assert a.ids.tolist() == hf.encode(a_text, add_special_tokens=False).ids
    for pair in (False, True):
        ref = hf.encode(a_text, b_text if pair else None, add_special_tokens=True)
        ids, types, prefix = tok.build_inputs(a.ids, b.ids if pair else None)
        assert ids.tolist() == ref.ids and types.tolist() == ref.type_ids
        assert prefix == ref.sequence_ids.index(0)
        assert tok.num_special_tokens(pair) == sum(s is None for s in ref.sequence_ids)
    if processor in ("xlmr-template", "roberta"):
        ids, types, prefix = tok.build_inputs(a.ids, b.ids)
        assert tok.tokens_to_strings(ids) == [
            "<s>", "▁hello", "▁world", "</s>", "</s>", "▁world", "▁hello", "▁hello", "</s>"
        ]  # fmt: skip
        assert types.tolist() == [0] * 9 and prefix == 1


# --------------------------------------------------------------------------- 4. loading


def test_missing_tokenizer_raises(tmp_path: Path) -> None:
    with pytest.raises(TokenizerNotFoundError, match="tokenizer.json or vocab.txt"):
        Tokenizer.from_dir(tmp_path)
    with pytest.raises(TokenizerNotFoundError):
        Tokenizer.from_vocab(tmp_path / "vocab.txt")


def test_from_dir_reads_do_lower_case(chinese_vocab: Path, tmp_path: Path) -> None:
    shutil.copy(chinese_vocab, tmp_path / "vocab.txt")
    lower = Tokenizer.from_dir(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text('{"do_lower_case": false}')
    cased = Tokenizer.from_dir(tmp_path)
    text = ["Über ABC"]
    assert lower.tokens_to_strings(lower.tokenize(text)[0].ids) == ["uber", "abc"]
    assert cased.tokens_to_strings(cased.tokenize(text)[0].ids) != ["uber", "abc"]
    assert lower.pad_id == cased.pad_id == 0


def test_imports_without_paddle_and_never_imports_onnxruntime() -> None:
    code = (
        "import sys\n"
        "sys.modules['paddle'] = sys.modules['paddlenlp'] = None\n"
        "import ernie_deploy.tasks.tokenization\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    tree = ast.parse(Path(tokenization.__file__).read_text("utf-8"))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {m for m in imported if m.split(".")[0] in ("onnxruntime", "paddle", "paddlenlp")}


def test_sentencepiece_word_pieces_start_after_their_space() -> None:
    # XLM-R / e5 (Metaspace): HF gives "▁Michael" the offsets of " Michael"; ours start at "M",
    # so entities never begin with a space. Ids are HF's, unchanged.
    from tokenizers import Tokenizer as HFTokenizer

    from ernie_deploy.runtime.bundled import bundled_path

    path = bundled_path("e5-small-zh-en")
    assert path is not None
    tok = Tokenizer.from_dir(path)
    text = "和 Michael  Jordan\t打NBA 。"
    (got,) = tok.tokenize([text])
    ref = HFTokenizer.from_file(str(path / "tokenizer.json")).encode(text, add_special_tokens=False)
    assert got.ids.tolist() == ref.ids
    assert any(text[s:e].startswith(" ") for s, e in ref.offsets)  # what HF gives
    for (s, e), (rs, re_) in zip(got.offsets.tolist(), ref.offsets):
        assert e == re_ and rs <= s <= e
        assert text[s:e] == text[rs:re_].lstrip()
