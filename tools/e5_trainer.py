"""The PyTorch training loop behind tools/train_e5_heads.py: model, batches, evaluation, checkpoints."""

from __future__ import annotations

import argparse
import pickle
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))

from train_data import IGNORE, NER_LABELS, SENT_LABELS, decode, score_ner  # noqa: E402
from train_loop import TrainLoop  # noqa: E402

from ernie_deploy.convert.hf_mean_head import POOLING_KEY, mean_pooled_logits  # noqa: E402

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


class E5Trainer(TrainLoop):
    def __init__(self, args: argparse.Namespace, data: dict) -> None:
        import torch

        self.torch, self.args, self.data = torch, args, data
        self.work = Path(args.workdir)
        self.ner = args.task == "ner"
        self.labels = NER_LABELS if self.ner else SENT_LABELS
        torch.manual_seed(args.seed)
        self.model = self.build_model()
        # sentiment: "mean" reads the mean of the last hidden states (convert/hf_mean_head.py)
        self.pooling = getattr(args, "pooling", "cls")
        if not self.ner and (self.pooling == "mean" or hasattr(self.model.config, POOLING_KEY)):
            setattr(self.model.config, POOLING_KEY, self.pooling)  # saved with the weights
        if args.freeze_embeddings:
            self.model.roberta.embeddings.word_embeddings.weight.requires_grad_(False)
        self.crf = None
        if self.ner and getattr(args, "crf", False):  # tools/crf_torch.py
            from crf_torch import load_tables, make_crf

            self.crf = make_crf(torch, self.labels)
            base_tables = load_tables(Path(args.base))  # a --crf run's best/ as the base
            if base_tables is not None:
                with torch.no_grad():
                    for param, values in zip(self.crf.parameters(), base_tables):
                        param.copy_(torch.from_numpy(np.asarray(values, dtype=np.float32)))
        self.device = torch.device(getattr(args, "device", "cpu"))
        self.model.to(self.device)
        if self.crf is not None:
            self.crf.to(self.device)
        self.pad = self.model.config.pad_token_id
        self.train_set = data["train"]["examples"][: args.limit_train or None]
        self.lengths = np.array([len(e[0]) for e in self.train_set])
        self.steps_per_epoch = len(self.batches(0))
        self.total_steps = self.steps_per_epoch * args.epochs
        groups = self.param_groups(getattr(args, "llrd", 1.0))
        if self.crf is not None:  # the tables start at zero: they need a larger step
            groups.append(
                {"params": list(self.crf.parameters()), "weight_decay": 0.0, "lr": args.crf_lr}
            )
        self.opt = torch.optim.AdamW(groups, lr=args.lr)
        warm = max(1, int(args.warmup * self.total_steps))
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt,
            lambda s: min(
                (s + 1) / warm, max(0.0, (self.total_steps - s) / max(1, self.total_steps - warm))
            ),
        )
        self.start_state()

    def build_model(self) -> Any:
        """The transformers model to train: the task head on the --base encoder, cut to --layers
        (tools/tapt_e5.py adds a masked-language-model head to it)."""
        from transformers import (
            XLMRobertaForSequenceClassification,
            XLMRobertaForTokenClassification,
        )

        args = self.args
        cls = XLMRobertaForTokenClassification if self.ner else XLMRobertaForSequenceClassification
        model = cls.from_pretrained(
            args.base,
            num_labels=len(self.labels),
            id2label=dict(enumerate(self.labels)),
            label2id={lab: i for i, lab in enumerate(self.labels)},
            hidden_dropout_prob=args.dropout,
            attention_probs_dropout_prob=args.dropout,
        )
        if args.layers and args.layers < model.config.num_hidden_layers:
            model.roberta.encoder.layer = model.roberta.encoder.layer[: args.layers]
            model.config.num_hidden_layers = args.layers
        return model

    def rate_scale(self, name: str, decay: float) -> float:
        """The factor on --lr for a parameter: 1 for the task head, decay^(L-i) for encoder
        layer i of L, decay^(L+1) for the embeddings (layer-wise learning-rate decay)."""
        n_layers = len(self.model.roberta.encoder.layer)
        if name.startswith("roberta.embeddings."):
            return float(decay ** (n_layers + 1))
        if name.startswith("roberta.encoder.layer."):
            return float(decay ** (n_layers - int(name.split(".")[3])))
        return 1.0

    def param_groups(self, decay: float) -> list[dict]:
        """AdamW groups: weight decay except on biases and LayerNorms, one group per learning
        rate factor (one pair of groups when decay is 1)."""
        groups: dict[tuple[float, bool], list] = {}
        for name, param in self.model.named_parameters():
            if param.requires_grad:
                no_decay = "bias" in name or "LayerNorm" in name
                groups.setdefault((self.rate_scale(name, decay), no_decay), []).append(param)
        return [
            {
                "params": params,
                "weight_decay": 0.0 if no_decay else self.args.weight_decay,
                "lr": self.args.lr * scale,
            }
            for (scale, no_decay), params in groups.items()
        ]

    def collate(self, examples: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        width = max(len(e[0]) for e in examples)
        ids = np.full((len(examples), width), self.pad, dtype=np.int64)
        mask = np.zeros((len(examples), width), dtype=np.int64)
        lab = np.full((len(examples), width), IGNORE, dtype=np.int64)
        for i, e in enumerate(examples):
            ids[i, : len(e[0])], mask[i, : len(e[0])] = e[0], 1
            if self.ner and e[1] is not None:
                lab[i, : len(e[1])] = e[1]
        if not self.ner:
            lab = np.array([e[1] for e in examples], dtype=np.int64)
        return ids, mask, lab

    def tensor(self, array: np.ndarray) -> Any:
        """A collated numpy batch as a tensor on the training device."""
        return self.torch.from_numpy(array).to(self.device)

    def logits(self, examples: list, batch_size: int = 64) -> list[np.ndarray]:
        """Per-example logits (NER: [len, C] incl. <s>/</s>; sentiment: [C]) in input order."""
        torch = self.torch
        order = np.argsort([len(e[0]) for e in examples], kind="stable")
        out: list = [None] * len(examples)
        self.model.eval()
        with torch.no_grad():
            for b in range(0, len(order), batch_size):
                idx = order[b : b + batch_size]
                ids, mask, _ = self.collate([examples[i] for i in idx])
                lg = self.forward(self.tensor(ids), self.tensor(mask))
                lg = lg.float().cpu().numpy()
                for k, i in enumerate(idx):
                    out[i] = lg[k, : len(examples[i][0])] if self.ner else lg[k]
        self.model.train()
        return out

    def forward(self, ids: Any, mask: Any) -> Any:
        """The model's logits for a collated batch (tensors), as its head reads them."""
        if self.pooling == "mean":
            return mean_pooled_logits(self.model, ids, mask)
        return self.model(input_ids=ids, attention_mask=mask).logits

    def evaluate(self, split: str) -> dict:
        t0, limit = time.time(), self.args.limit_eval or None
        if not self.ner:
            ex = self.data[split]["examples"][:limit]
            pred = np.stack(self.logits(ex)).argmax(-1)
            acc = float((pred == np.array([e[1] for e in ex])).mean())
            return {
                "split": split,
                "n": len(ex),
                "accuracy": round(acc, 4),
                "seconds": round(time.time() - t0, 1),
            }
        meta = self.data[split]["meta"][:limit]
        ex = [e for e in self.data[split]["examples"] if e[2] < len(meta)]
        parts: list[list] = [[] for _ in meta]
        for e, x in zip(ex, self.logits(ex)):
            parts[e[2]].append((e[3], x[1:-1]))
        per_sent = [np.concatenate([x for _, x in sorted(p, key=lambda q: q[0])]) for p in parts]
        return {
            "split": split,
            **score_ner(meta, per_sent, None if self.crf is None else self.crf.tables()),
            "seconds": round(time.time() - t0, 1),
        }

    def demo(self) -> list:
        if not self.ner:
            return []
        lg = self.logits([(ids, None) for *_, ids in self.data["demo"]])
        out, tables = [], None if self.crf is None else self.crf.tables()
        for (text, firsts, starts, ends, _), x in zip(self.data["demo"], lg):
            spans = decode(x[1:-1], firsts, starts, ends, "viterbi", tables)
            out.append([f"{text[s:e]}:{typ}" for s, e, typ in sorted(spans)])
        return out

    def save_model(self, tmp: Path) -> dict:
        """Write the model and tokenizer files into `tmp`; what training_info.json adds."""
        self.model.save_pretrained(str(tmp))
        for f in TOKENIZER_FILES:
            shutil.copy2(Path(self.args.base) / f, tmp / f)
        if "tokenizer_json" in self.data:  # NER: Han characters isolated (e5_heads_data.py)
            (tmp / "tokenizer.json").write_text(self.data["tokenizer_json"], "utf-8")
        if self.crf is not None:  # the decoder's transition files; convert hf carries them
            from crf_torch import save_tables

            save_tables(self.crf.tables(), tmp)
        return {"labels": list(self.labels)}

    def write_checkpoint(self, tmp: Path) -> None:
        torch = self.torch
        torch.save(
            {
                "model": self.model.state_dict(),
                **({"crf": self.crf.state_dict()} if self.crf is not None else {}),
                "opt": self.opt.state_dict(),
                "sched": self.sched.state_dict(),
                "torch_rng": torch.get_rng_state(),
            },
            tmp / "train.pt",
        )
        with open(tmp / "state.pkl", "wb") as f:
            pickle.dump(
                {"state": self.state, "python": random.getstate(), "numpy": np.random.get_state()},
                f,
            )

    def read_checkpoint(self, d: Path) -> None:
        saved = self.torch.load(d / "train.pt", weights_only=False, map_location=self.device)
        self.model.load_state_dict(saved["model"])
        if self.crf is not None:
            self.crf.load_state_dict(saved["crf"])
        self.opt.load_state_dict(saved["opt"])
        self.sched.load_state_dict(saved["sched"])
        self.torch.set_rng_state(saved["torch_rng"].cpu())
        with open(d / "state.pkl", "rb") as f:
            st = pickle.load(f)
        self.state = st["state"]
        random.setstate(st["python"])
        np.random.set_state(st["numpy"])

    def current_lr(self) -> float:
        return float(self.sched.get_last_lr()[0])

    def step(self, batch: list) -> float:
        torch = self.torch
        torch.manual_seed(
            self.args.seed * 1_000_003 + self.state["step"]
        )  # dropout: the step alone
        ids, mask, lab = self.collate(batch)
        ids, mask, lab = self.tensor(ids), self.tensor(mask), self.tensor(lab)
        smoothing = getattr(self.args, "label_smoothing", 0.0)
        rdrop = getattr(self.args, "rdrop", 0.0)
        if not self.ner and (rdrop or smoothing or self.pooling == "mean"):
            if rdrop:  # R-Drop: the batch twice in one pass, each copy draws its own dropout
                ids, mask, lab = (torch.cat([t, t]) for t in (ids, mask, lab))
            logits = self.forward(ids, mask)
            loss = torch.nn.functional.cross_entropy(logits, lab, label_smoothing=smoothing)
            if rdrop:
                loss = loss + rdrop * self.symmetric_kl(*logits.chunk(2))
        elif self.crf is None:
            loss = self.model(input_ids=ids, attention_mask=mask, labels=lab).loss
        else:
            loss = self.crf(self.forward(ids, mask), lab, IGNORE)
        return self.update(loss)

    def update(self, loss: Any) -> float:
        """One optimiser step on `loss` (global-norm clipped); its value."""
        loss.backward()
        params = [p for group in self.opt.param_groups for p in group["params"]]
        self.torch.nn.utils.clip_grad_norm_(params, self.args.clip)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    def symmetric_kl(self, first: Any, second: Any) -> Any:
        """R-Drop's term (Liang et al., 2021): the mean of KL(p1 || p2) and KL(p2 || p1) between
        the predictions of two dropout draws, per text."""
        fn = self.torch.nn.functional
        lp1, lp2 = fn.log_softmax(first, -1), fn.log_softmax(second, -1)
        return (
            fn.kl_div(lp1, lp2, reduction="batchmean", log_target=True)
            + fn.kl_div(lp2, lp1, reduction="batchmean", log_target=True)
        ) / 2
