#!/usr/bin/env python
"""Task-adaptive pretraining: masked-language-model training of the e5 encoder on the sentiment
training texts, as a base for tools/train_e5_heads.py sentiment --base.

Gururangan et al. (2020, "Don't Stop Pretraining") report that a few epochs of the pretraining
objective on a task's own unlabelled training texts, before fine-tuning, help on small
classification sets. multilingual-e5 was trained contrastively after its MLM stage and its
checkpoint carries no MLM head, so the head here starts fresh: a dense layer, GELU and LayerNorm
(initialised like the encoder's), then the word-embedding table (tied) with a bias.

Only the training split's texts are read (the same split, seed and pieces as the fine-tuning
run, written to <workdir>/data.pkl); dev and held-out texts are never trained on. Masks: each
non-special piece is chosen with --mask-prob; a chosen piece becomes <mask> 80% of the time, a
random piece 10%, itself 10% (BERT's rule), drawn from default_rng([seed, step]), so a run that is
stopped and resumed (same command) follows the uninterrupted trajectory. Each epoch end scores
the MLM loss on dev under one fixed draw of masks. <workdir>/final is an ``XLMRobertaModel``
save_pretrained directory with the base's tokenizer files:

  python tools/tapt_e5.py --workdir .cache/train/tapt-sent --layers 11 --epochs 2 --threads 2
  python tools/train_e5_heads.py sentiment --base .cache/train/tapt-sent/final --layers 11 ...
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))

import e5_heads_data as hd  # noqa: E402
import e5_run  # noqa: E402
import train_e5_heads as te  # noqa: E402
import train_loop  # noqa: E402
from e5_trainer import TOKENIZER_FILES, E5Trainer  # noqa: E402

SPECIAL = 4  # <s> 0, <pad> 1, </s> 2, <unk> 3: never masked, never drawn as a replacement
# train_e5_heads.py's keys that this tool has (the rest read as absent on both sides), and its own
TRAJECTORY_KEYS = te.TRAJECTORY_KEYS + ("mask_prob", "head_steps")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = e5_run.OneLineParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    num = e5_run.number_arg
    p.add_argument(
        "--workdir", required=True, help="checkpoints, logs, final/; keep it under .cache/"
    )
    p.add_argument(
        "--base",
        default=str(te.REPO / ".cache" / "e5" / "zh-en"),
        help="the pruned XLM-R directory from tools/import_e5.py",
    )
    p.add_argument("--threads", type=num(int, 1, low_ok=True), default=2)
    p.add_argument(
        "--device", default="cpu", help="torch device (cpu, cuda); not part of the trajectory"
    )
    p.add_argument(
        "--layers",
        type=num(int, 0, low_ok=True),
        default=11,
        help="keep the first N layers (0 = all)",
    )
    p.add_argument("--epochs", type=num(int, 1, low_ok=True), default=2)
    p.add_argument("--mask-prob", type=num(float, 0, 1), default=0.15)
    p.add_argument(
        "--head-steps",
        type=num(int, 0, low_ok=True),
        default=200,
        help="train the fresh MLM head alone (encoder frozen) for the first N steps, so that its "
        "random start sends no noise into the pretrained encoder",
    )
    p.add_argument("--lr", type=num(float, 0), default=1e-4)
    p.add_argument("--weight-decay", type=num(float, 0, low_ok=True), default=0.01)
    p.add_argument("--warmup", type=num(float, 0, 1, low_ok=True), default=0.06)
    p.add_argument("--clip", type=num(float, 0), default=1.0)
    p.add_argument("--dropout", type=num(float, 0, 1, low_ok=True), default=0.1)
    p.add_argument("--batch-size", type=num(int, 1, low_ok=True), default=32)
    p.add_argument("--max-len", type=num(int, 3, low_ok=True), default=128)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--split-seed",
        type=int,
        default=42,
        help="the sentiment splits' seed (keep the shipped 42)",
    )
    p.add_argument("--dev-size", type=num(int, 1, low_ok=True), default=1000)
    p.add_argument("--heldout-size", type=num(int, 1, low_ok=True), default=2000)
    p.add_argument("--minutes", type=num(float, 0, low_ok=True), default=0)
    p.add_argument("--max-steps", type=num(int, 0, low_ok=True), default=0)
    p.add_argument("--checkpoint-minutes", type=num(float, 0), default=5)
    p.add_argument("--log-seconds", type=num(float, 0), default=60)
    p.add_argument("--limit-train", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--limit-eval", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.base = str(Path(a.base).resolve())
    # what E5Trainer reads besides these: a plain sentiment run's values
    a.task, a.pooling, a.llrd, a.freeze_embeddings, a.eval_minutes = (
        "sentiment",
        "cls",
        1.0,
        False,
        0,
    )
    return a


def choose_masks(
    ids: np.ndarray,
    attention: np.ndarray,
    rng: np.random.Generator,
    prob: float,
    special: int,
    mask_id: int,
) -> tuple[np.ndarray, np.ndarray]:
    """BERT's masking of a collated batch: (inputs, labels). Pieces with id < `special` (<s>,
    <pad>, </s>, <unk>), the mask itself and padding are never chosen; labels are -100 except
    at chosen pieces. At least one piece per batch is chosen."""
    can = (attention == 1) & (ids >= special) & (ids != mask_id)
    chosen = can & (rng.random(ids.shape) < prob)
    if not chosen.any() and can.any():
        rows, cols = np.nonzero(can)
        k = rng.integers(len(rows))
        chosen[rows[k], cols[k]] = True
    labels = np.where(chosen, ids, -100)
    roll = rng.random(ids.shape)
    inputs = ids.copy()
    inputs[chosen & (roll < 0.8)] = mask_id
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[swap] = rng.integers(special, mask_id, size=int(swap.sum()))  # mask_id is the last id
    return inputs, labels


class MlmTrainer(E5Trainer):
    """E5Trainer's batches, schedule and checkpoints with a masked-language-model loss."""

    def build_model(self) -> Any:
        from transformers.models.xlm_roberta.modeling_xlm_roberta import XLMRobertaLMHead

        model = super().build_model()
        mask = hd.load_tokenizer(Path(self.args.base)).token_to_id("<mask>")
        if mask != model.config.vocab_size - 1:  # random replacements draw from [SPECIAL, mask)
            raise SystemExit(
                f"{self.args.base}: <mask> is not the last piece; this tool expects XLM-R's order."
            )
        self.mask_id = int(mask)
        head = XLMRobertaLMHead(model.config)
        head.apply(model._init_weights)
        head.decoder.weight = model.roberta.embeddings.word_embeddings.weight  # tied, as in MLM
        with self.torch.no_grad():
            head.bias.zero_()
        model.lm_head = head  # a submodule: in the optimiser and the checkpoints
        return model

    def mlm_loss(
        self, inputs: np.ndarray, attention: np.ndarray, labels: np.ndarray, frozen: bool = False
    ) -> Any:
        """Cross-entropy of the head's predictions at the chosen pieces (through the encoder
        unless `frozen`)."""
        with self.torch.set_grad_enabled(not frozen and self.torch.is_grad_enabled()):
            hidden = self.model.roberta(
                input_ids=self.tensor(inputs), attention_mask=self.tensor(attention)
            ).last_hidden_state
        lab = self.tensor(labels)
        picked = lab != -100
        return self.torch.nn.functional.cross_entropy(
            self.model.lm_head(hidden[picked]), lab[picked]
        )

    def masks(self, ids: np.ndarray, attention: np.ndarray, rng: np.random.Generator) -> Any:
        return choose_masks(ids, attention, rng, self.args.mask_prob, SPECIAL, self.mask_id)

    def step(self, batch: list) -> float:
        torch = self.torch
        torch.manual_seed(self.args.seed * 1_000_003 + self.state["step"])
        ids, attention, _ = self.collate(batch)
        inputs, labels = self.masks(
            ids, attention, np.random.default_rng([self.args.seed, self.state["step"]])
        )
        frozen = self.state["step"] < self.args.head_steps
        return self.update(self.mlm_loss(inputs, attention, labels, frozen))

    def evaluate(self, split: str) -> dict:
        """Mean MLM loss over `split` under one fixed draw of masks (the same at every call)."""
        torch, t0 = self.torch, time.time()
        ex = self.data[split]["examples"][: self.args.limit_eval or None]
        rng = np.random.default_rng([self.args.seed, 7919])
        total, pieces = 0.0, 0
        self.model.eval()
        with torch.no_grad():
            for b in range(0, len(ex), 64):
                ids, attention, _ = self.collate(ex[b : b + 64])
                inputs, labels = self.masks(ids, attention, rng)
                n = int((labels != -100).sum())
                loss = self.mlm_loss(inputs, attention, labels)
                total, pieces = total + float(loss) * n, pieces + n
        self.model.train()
        return {
            "split": split,
            "n": len(ex),
            "mlm_loss": round(total / max(pieces, 1), 4),
            "masked": pieces,
            "seconds": round(time.time() - t0, 1),
        }

    def eval_and_keep_best(self, full: bool) -> None:
        """Dev's MLM loss, recorded; nothing is chosen by it (final/ is the output)."""
        self.record({"kind": "eval", "dev": self.evaluate("dev")})

    def save_model(self, tmp: Path) -> dict:
        """The encoder alone (XLMRobertaModel) and the base's tokenizer files."""
        encoder = self.model.roberta
        encoder.config.architectures = ["XLMRobertaModel"]
        encoder.save_pretrained(str(tmp))
        for f in TOKENIZER_FILES:
            shutil.copy2(Path(self.args.base) / f, tmp / f)
        return {"objective": "masked language model on the sentiment training split (tapt_e5.py)"}


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(a.threads)
    if not e5_run.device_is_usable(a.device) or not e5_run.base_is_a_model(a.base):
        return 2
    work = train_loop.open_workdir(a, TRAJECTORY_KEYS, {})
    if work is None:
        return 2
    data = e5_run.load_data(a, work)
    import torch

    torch.set_num_threads(a.threads)
    return MlmTrainer(a, data).start()


if __name__ == "__main__":
    sys.exit(main())
