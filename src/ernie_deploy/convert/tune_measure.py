"""`tune`'s measurements: the text corpus, interleaved timing, agreement with fp32, the eval metric.

Everything runs through the predictors users get from `ernie_deploy.load` (same batch size,
max_seq_length and threads as deployed), so the speed is end to end (tokenizing, batching,
decoding) and the agreement is about the answers users see:

| task      | headline agreement (the bound)               | also reported                         |
| --------- | -------------------------------------------- | ------------------------------------- |
| token_cls | texts whose entities are identical           | per-token argmax agreement, max diff  |
| seq_cls   | texts whose argmax label is the same         | max abs diff of the logits            |
| embedding | texts whose nearest neighbour (among the     | cosine to the fp32 vector, min / mean |
|           | texts, by cosine) is the same                |                                       |
| rerank    | queries whose top document is the same       | mean Kendall tau of the order         |

Rerank groups: each of the first RERANK_QUERIES texts is a query over the RERANK_DOCS texts
that follow it (cyclically). Timing: every variant runs the whole corpus once per repeat, the
order rotated each repeat, so a load spike hits all variants alike; ratios to fp32 are taken
per repeat (runs that ran close together).
"""

from __future__ import annotations

import gc
import json
import random
import statistics
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ernie_deploy.errors import InputError
from ernie_deploy.tasks.labelled import LabelledText, check_labels
from ernie_deploy.tasks.metrics import ScoreComparison, compare_results, result_spans

RERANK_QUERIES = 16
RERANK_DOCS = 8
CORPUS_SIZE = 64
CORPUS_MAX_TOKENS = 256
# Pause before each timed run: the previous variant's ORT threads stop spin-waiting, so they
# take no CPU from the next one (the benchmarks' harness does the same).
GAP_S = 0.2
# The headline metric of a labelled file, per task (tasks.metrics names).
METRICS = {"token_cls": "f1", "seq_cls": "accuracy"}
HEADLINES = {
    "token_cls": "entities identical",
    "seq_cls": "argmax label",
    "embedding": "nearest neighbour",
    "rerank": "top document",
}


class TuneProgress(Protocol):
    """Where `tune` reports its steps: one bar per variant (`start`), advanced by `step`."""

    def start(self, variant: str, total: int) -> None: ...

    def step(self, variant: str, stage: str) -> None: ...


class NoProgress:
    """A TuneProgress that shows nothing."""

    def start(self, variant: str, total: int) -> None:
        return None

    def step(self, variant: str, stage: str) -> None:
        return None


@dataclass(frozen=True)
class Spread:
    """A median with the smallest and largest value it summarises."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(float(statistics.median(values)), float(min(values)), float(max(values)))

    def fmt(self, digits: int = 1, unit: str = "") -> str:
        text = f"{self.median:,.{digits}f}{unit}"
        if self.high - self.low > 10 ** (-digits):
            text += f" ({self.low:,.{digits}f}–{self.high:,.{digits}f})"
        return text


@dataclass(frozen=True)
class Agreement:
    """One variant's answers against fp32's on the same texts.

    Args:
        agreement: the headline share (HEADLINES[task]) that the bound applies to, 0..1.
        items: how many texts (queries for rerank) it was measured on.
        max_abs_diff: largest absolute difference of the raw outputs (logits, vectors, scores).
        argmax: per-token (token_cls) or per-text (seq_cls) argmax agreement.
        cosine_min / cosine_mean: embeddings: cosine between the variant's and fp32's vector.
        kendall_tau: rerank: mean Kendall tau between the two document orders.
    """

    agreement: float
    items: int
    max_abs_diff: float
    argmax: float | None = None
    cosine_min: float | None = None
    cosine_mean: float | None = None
    kendall_tau: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class Answers:
    """What one variant answered on the corpus: raw rows and the decision per item."""

    rows: tuple[np.ndarray, ...]
    decisions: tuple[Any, ...]


def read_texts(path: str | Path) -> list[str]:
    """--texts: a .txt file (one text per line) or .jsonl with a "text" field."""
    from ernie_deploy.textio import iter_records

    return [r.text for r in iter_records(path)]


def vocab_corpus(tokenizer_dir: Path, n: int = CORPUS_SIZE, max_tokens: int = 128) -> list[str]:
    """`n` texts of words drawn from the model's own vocabulary (seed 0), lengths spread
    log-uniformly from 4 tokens to `max_tokens` (capped at CORPUS_MAX_TOKENS)."""
    words = _vocab_words(tokenizer_dir)
    if not words:
        raise InputError(
            f"The vocabulary in {tokenizer_dir} has no ordinary words to make texts from: "
            "pass your own texts with --texts FILE."
        )
    rng = random.Random(0)
    top = max(5, min(max_tokens, CORPUS_MAX_TOKENS))
    texts = []
    for _ in range(n):
        length = int(round(np.exp(rng.uniform(np.log(4), np.log(top)))))
        pieces = [rng.choice(words) for _ in range(length)]
        text = "".join(p if _is_cjk(p) else f" {p} " for p in pieces)
        texts.append(" ".join(text.split()))
    return texts


def _vocab_words(tokenizer_dir: Path) -> list[str]:
    if (tokenizer_dir / "tokenizer.json").is_file():
        data = json.loads((tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
        vocab = data.get("model", {}).get("vocab", {})
        pieces = [p[0] for p in vocab] if isinstance(vocab, list) else list(vocab)
    else:
        text = (tokenizer_dir / "vocab.txt").read_text(encoding="utf-8")
        pieces = text.rstrip("\n").split("\n")
    words = []
    for piece in pieces:
        if piece[:1] in "[<" and piece[-1:] in "]>":
            continue  # special tokens: [CLS], <s>, [unused3]
        word = piece.removeprefix("##").lstrip("▁Ġ")
        if word and all(ch.isalnum() for ch in word):
            words.append(word)
    return words


def _is_cjk(word: str) -> bool:
    return len(word) == 1 and unicodedata.name(word, "").startswith("CJK")


def rerank_groups(texts: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(query, documents) groups made from the corpus (module docstring)."""
    n = len(texts)
    docs = min(RERANK_DOCS, n - 1)
    return [
        (texts[i], [texts[(i + 1 + j) % n] for j in range(docs)])
        for i in range(min(RERANK_QUERIES, n))
    ]


def workload(predictor: Any, task: str, texts: list[str]) -> Callable[[], object]:
    """What one timed run does: the corpus through the predictor, as a deployment would."""
    if task == "rerank":
        groups = rerank_groups(texts)
        return lambda: [predictor.rerank(q, docs) for q, docs in groups]
    return lambda: predictor.predict(texts)


def answers(predictor: Any, task: str, texts: list[str]) -> Answers:
    """The raw outputs and decisions agreement is measured on."""
    if task == "token_cls":
        logits = predictor.token_logits(texts)
        spans = [tuple(sorted(result_spans(r))) for r in predictor.predict(texts)]
        return Answers(tuple(logits), tuple(spans))
    if task == "seq_cls":
        rows = predictor.logits(texts)
        return Answers(tuple(rows), tuple(int(i) for i in rows.argmax(-1)))
    if task == "embedding":
        vectors = predictor.vectors(texts)
        return Answers(tuple(vectors), tuple(_nearest(vectors)))
    groups = rerank_groups(texts)
    scores = [predictor.raw_scores(q, docs) for q, docs in groups]
    return Answers(tuple(scores), tuple(int(np.argmax(s)) for s in scores))


def _nearest(vectors: np.ndarray) -> list[int]:
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    return [int(i) for i in sims.argmax(axis=1)]


def agreement(task: str, reference: Answers, candidate: Answers) -> Agreement:
    """`candidate` against `reference` (fp32) on the same texts."""
    same = [a == b for a, b in zip(reference.decisions, candidate.decisions)]
    share = sum(same) / len(same) if same else 1.0
    diff = max(
        (float(np.max(np.abs(a - b))) if a.size else 0.0)
        for a, b in zip(reference.rows, candidate.rows)
    )
    if task == "token_cls":
        tokens = np.concatenate(
            [a.argmax(-1) == b.argmax(-1) for a, b in zip(reference.rows, candidate.rows)]
        )
        argmax = float(tokens.mean()) if tokens.size else 1.0
        return Agreement(share, len(same), diff, argmax=argmax)
    if task == "seq_cls":
        return Agreement(share, len(same), diff, argmax=share)
    if task == "embedding":
        ref, cand = np.stack(reference.rows), np.stack(candidate.rows)
        cos = np.sum(ref * cand, axis=1) / np.maximum(
            np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1), 1e-12
        )
        return Agreement(
            share, len(same), diff, cosine_min=float(cos.min()), cosine_mean=float(cos.mean())
        )
    taus = [_kendall_tau(a, b) for a, b in zip(reference.rows, candidate.rows)]
    return Agreement(share, len(same), diff, kendall_tau=float(np.mean(taus)))


def _kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-a between two score vectors (ties count as neither)."""
    n = len(a)
    if n < 2:
        return 1.0
    da = np.sign(a[:, None] - a[None, :])
    db = np.sign(b[:, None] - b[None, :])
    upper = np.triu_indices(n, 1)
    return float(np.sum(da[upper] * db[upper]) / len(upper[0]))


def time_runs(
    work: dict[str, Callable[[], object]], repeats: int, progress: TuneProgress
) -> dict[str, list[float]]:
    """Wall seconds of each workload, `repeats` times, interleaved with the order rotated."""
    names = list(work)
    walls: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            time.sleep(GAP_S)
            start = time.perf_counter()
            work[name]()
            walls[name].append(time.perf_counter() - start)
            progress.step(name, f"timed run {r + 1}/{repeats}")
    return walls


def speedups(walls: dict[str, list[float]], reference: str) -> dict[str, Spread]:
    """Each workload's speed over the reference's, per repeat (above 1: faster)."""
    ref = walls[reference]
    return {name: Spread.of([r / w for r, w in zip(ref, runs)]) for name, runs in walls.items()}


def evaluate(
    predictor: Any,
    examples: Sequence[LabelledText],
    path: Path,
    task: str,
    reference: Sequence[Any] | None,
    name: str,
) -> tuple[list[Any], ScoreComparison]:
    """The labelled file through one variant, scored beside fp32's results (`reference`;
    None: this is fp32). Returns the variant's results and the comparison."""
    if task == "token_cls":
        check_labels(examples, {t for t in predictor.tagset.types if t}, path)
    else:
        check_labels(examples, set(predictor.labels), path)
    results = predictor.predict([e.text for e in examples])
    base = results if reference is None else reference
    return results, compare_results(examples, base, results, path, task, ("fp32", name))


@dataclass(frozen=True)
class ServingPoint:
    """One (threads, batch size) setting of the winning variant and its throughput."""

    threads: int
    batch_size: int
    texts_per_s: Spread

    def to_dict(self) -> dict[str, Any]:
        return {
            "threads": self.threads,
            "batch_size": self.batch_size,
            "texts_per_s": self.texts_per_s.median,
            "texts_per_s_range": [self.texts_per_s.low, self.texts_per_s.high],
        }


def serving_options(usable: int, batch_size: int) -> tuple[list[int], list[int]]:
    """The thread counts (powers of two up to the usable CPUs, and that count) and batch sizes
    (1, 8, 32 and the asked one) the serving grid measures."""
    threads = sorted({t for t in (1, 2, 4, 8, 16, 32) if t <= usable} | {usable})
    batches = sorted({1, 8, 32, batch_size})
    return threads, batches


def serving_grid(
    load: Callable[[int, int], Any],
    task: str,
    texts: list[str],
    threads: Sequence[int],
    batches: Sequence[int],
    repeats: int,
    progress: TuneProgress,
) -> list[ServingPoint]:
    """Throughput of the winner at each (threads, batch size), interleaved like the variants."""
    work = {}
    for t in threads:
        for b in batches:
            predictor = load(t, b)
            run = workload(predictor, task, texts)
            run()  # warm-up (ORT's arena, the first-call allocations)
            work[f"{t}x{b}"] = run
    step = _Relay(progress, "serving")
    walls = time_runs(work, repeats, step)
    items = len(rerank_groups(texts)) if task == "rerank" else len(texts)
    points = []
    for key, runs in walls.items():
        t, b = (int(x) for x in key.split("x"))
        points.append(ServingPoint(t, b, Spread.of([items / w for w in runs])))
    return points


class _Relay:
    """Reports every step of a sub-measurement on one progress bar."""

    def __init__(self, progress: TuneProgress, bar: str) -> None:
        self.progress, self.bar = progress, bar

    def start(self, variant: str, total: int) -> None:
        return None

    def step(self, variant: str, stage: str) -> None:
        self.progress.step(self.bar, f"{variant}: {stage}")
