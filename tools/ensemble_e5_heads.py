#!/usr/bin/env python
"""How far can this data take a sentiment head? Score several fine-tuned heads and their
prediction ensemble on the dev and held-out splits, and count the texts every head gets wrong.

    python tools/ensemble_e5_heads.py --data .cache/train/e5-sent-11-s43/data.pkl \
        --members .cache/e5/sentiment-zh-e5-v1 .cache/train/e5-sent-11-s4{3,4}/{best,final} ... \
        --wrong-out .cache/ana/wrong-by-all.jsonl

An analysis tool, not a way to ship: the ensemble (mean of the members' softmax) would cost one
forward pass per member. Its score is a practical ceiling for a single head trained on this
data with this recipe, and the texts that no member gets right (written to --wrong-out, text and
label, for reading) show how much of the error is the labels'. Members: train_e5_heads.py's
best/ or final/, a soup, or onnx_to_hf.py's rebuild of a shipped head, all of one shape.

--flag-train FILE also scores the training split and writes the training texts whose label
the ensemble gives a probability under --flag-below (default 0.1): the likely mislabelled ones,
which train_e5_heads.py --exclude-train FILE leaves out of a new run. Heads trained on all of
the split have learnt its labels (none fell under 0.1 when this was tried), so flags come from
folds: members trained with train_e5_heads.py --hold-out-fold K/N, scored with --flag-fold K/N
on the fold they never saw. Dev and held-out keep every text and label.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))

from e5_heads_data import fold_indices, parse_fold  # noqa: E402
from soup_e5_heads import check_members, load_member, make_trainer  # noqa: E402

SPLITS = ("dev", "heldout")


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def report(logits: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, Any]:
    """Accuracy of each member's logits [n, C], of the mean of their softmax, and the indices
    of the texts that every member gets wrong."""
    right = {m: x.argmax(-1) == labels for m, x in logits.items()}
    mean = np.mean([softmax(x) for x in logits.values()], axis=0)
    wrong_by_all = ~np.any(np.stack(list(right.values())), axis=0)
    return {
        "n": int(len(labels)),
        "members": {m: round(float(r.mean()), 4) for m, r in right.items()},
        "ensemble": round(float((mean.argmax(-1) == labels).mean()), 4),
        "wrong_by_all": np.flatnonzero(wrong_by_all).tolist(),
    }


def doubtful(logits: dict[str, np.ndarray], labels: np.ndarray, below: float) -> list[int]:
    """Indices whose label gets an ensemble probability (mean of the members' softmax) under
    `below`: texts the heads confidently call the other way (score a fold they never saw: heads
    trained on a text have learnt its label)."""
    mean = np.mean([softmax(x) for x in logits.values()], axis=0)
    return np.flatnonzero(mean[np.arange(len(labels)), labels] < below).tolist()


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """A new file, written whole or not at all."""
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    print(f"wrote {path} ({len(rows)} texts)", flush=True)


def main(argv: list[str] | None = None) -> int:
    from e5_run import OneLineParser, number_arg

    p = OneLineParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--members", type=Path, nargs="+", required=True)
    p.add_argument(
        "--data", type=Path, required=True, help="a sentiment training workdir's data.pkl"
    )
    p.add_argument("--wrong-out", type=Path, help="a new JSONL file: held-out texts all miss")
    p.add_argument(
        "--flag-train",
        type=Path,
        help="a new JSONL file: training texts whose label the ensemble gives a probability "
        "under --flag-below (for train_e5_heads.py --exclude-train)",
    )
    p.add_argument("--flag-below", type=float, default=0.1)
    p.add_argument(
        "--flag-fold",
        help="K/N: score only fold K of N of the training split, which members trained with "
        "train_e5_heads.py --hold-out-fold K/N never saw (out-of-sample flags)",
    )
    p.add_argument("--split-seed", type=int, default=42, help="the training runs' split seed")
    p.add_argument("--threads", type=number_arg(int, 1, low_ok=True), default=2)
    a = p.parse_args(argv)
    fold = None
    if a.flag_fold:
        try:
            fold = parse_fold(a.flag_fold)
        except ValueError as e:
            print(f"ensemble_e5_heads: --flag-fold: {e}.", file=sys.stderr)
            return 2
        if not a.flag_train:
            print("ensemble_e5_heads: --flag-fold needs --flag-train FILE.", file=sys.stderr)
            return 2
    if len(a.members) < 2 and not a.flag_train:
        print("ensemble_e5_heads: pass at least two --members.", file=sys.stderr)
        return 2
    why = check_members(a.members)
    if why:
        print(f"ensemble_e5_heads: {why}", file=sys.stderr)
        return 2
    if any((m / "crf_transitions.npy").is_file() for m in a.members):
        print("ensemble_e5_heads: these are NER heads: pass sentiment heads.", file=sys.stderr)
        return 2
    if not a.data.is_file():
        print(
            f"ensemble_e5_heads: --data {a.data} is not a file: pass a sentiment training "
            "workdir's data.pkl.",
            file=sys.stderr,
        )
        return 2
    for flag, path in (("--wrong-out", a.wrong_out), ("--flag-train", a.flag_train)):
        if path is not None and path.exists():
            print(f"ensemble_e5_heads: {path} exists: pass a new {flag}.", file=sys.stderr)
            return 2
    if not 0 < a.flag_below < 0.5:
        print("ensemble_e5_heads: --flag-below must lie between 0 and 0.5.", file=sys.stderr)
        return 2
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    import torch

    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as scratch:
        trainer = make_trainer("sentiment", a.members[0], a.data, Path(scratch))
        if trainer.ner or not all(s in trainer.data for s in SPLITS):
            print(
                f"ensemble_e5_heads: {a.data} holds no sentiment splits: pass a sentiment "
                "training workdir's data.pkl.",
                file=sys.stderr,
            )
            return 2
        train = trainer.data["train"]["examples"]
        scored = list(range(len(train)))  # the training texts --flag-train looks at
        if fold is not None:
            scored = fold_indices(len(train), *fold, a.split_seed).tolist()
        examples = {s: trainer.data[s]["examples"] for s in SPLITS}
        if a.flag_train:
            examples["train"] = [train[i] for i in scored]
        logits: dict[str, dict[str, np.ndarray]] = {s: {} for s in examples}
        for m in a.members:
            trainer.model.load_state_dict(load_member(m))
            for s, ex in examples.items():
                logits[s][str(m)] = np.stack(trainer.logits(ex))
            print(json.dumps({"member": str(m), "logits": "done"}), flush=True)
    out = {}
    for s in SPLITS:
        labels = np.array([e[1] for e in trainer.data[s]["examples"]])
        out[s] = report(logits[s], labels)
        summary = {k: v for k, v in out[s].items() if k != "wrong_by_all"}
        print(json.dumps({"split": s, **summary, "wrong_by_all": len(out[s]["wrong_by_all"])}))

    def rows(split: str, indices: list[int]) -> list[dict[str, Any]]:
        texts, examples = trainer.data[split]["texts"], trainer.data[split]["examples"]
        return [{"index": i, "label": int(examples[i][1]), "text": texts[i]} for i in indices]

    if a.wrong_out:
        write_jsonl(a.wrong_out, rows("heldout", out["heldout"]["wrong_by_all"]))
    if a.flag_train:
        labels = np.array([e[1] for e in examples["train"]])
        flagged = [scored[i] for i in doubtful(logits["train"], labels, a.flag_below)]
        write_jsonl(a.flag_train, rows("train", flagged))
    return 0


if __name__ == "__main__":
    sys.exit(main())
