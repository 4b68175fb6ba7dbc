"""The ERNIE 3.0 deployment guide's way of predicting, written from its description in
/work/shared/INFER-CONTRACT.md ("How the guide decodes"): a baseline, not our code.

PaddleNLP's tokenizer on a chunk of texts in input order, padded to the chunk's longest and
truncated at max_seq_length; one ONNX Runtime session (default options, intra-op threads set);
token_cls: argmax per token over the whole padded row, B-X opens an entity at token_index - 1,
O or a new B- closes it, I- without a B- is ignored, an I-Y inside a B-X entity continues it,
an entity still open at the end is emitted with an empty label, positions are token index - 1;
seq_cls: softmax with max-subtraction, label = argmax, confidence = the max probability.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


class GuidePredictor:
    """`predict(texts)`: the guide's pipeline over chunks of `batch_size` texts in input order."""

    def __init__(
        self,
        onnx_path: Path,
        tokenizer_dir: Path,
        task: str,
        labels: Sequence[str],
        max_seq_length: int = 128,
        batch_size: int = 32,
        threads: int | None = None,
    ) -> None:
        os.environ.setdefault("AISTUDIO_BOS_OFFLINE", "1")
        import onnxruntime as ort
        from paddlenlp.transformers import ErnieTokenizer

        self.tokenizer = ErnieTokenizer(vocab_file=str(Path(tokenizer_dir) / "vocab.txt"))
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            str(onnx_path), options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.task = task
        self.labels = list(labels)
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size

    def tokens_run(self, texts: list[str]) -> int:
        """Tokens (padding included) the guide's chunks of `texts` put through the model."""
        return sum(
            self.preprocess(texts[i : i + self.batch_size])["input_ids"].size
            for i in range(0, len(texts), self.batch_size)
        )

    def preprocess(self, texts: list[str]) -> dict[str, np.ndarray]:
        data = self.tokenizer(texts, max_length=self.max_seq_length, padding=True, truncation=True)
        feeds = {
            "input_ids": np.array(data["input_ids"], dtype="int64"),
            "token_type_ids": np.array(data["token_type_ids"], dtype="int64"),
        }
        return {name: feeds[name] for name in self.input_names}

    def predict(self, texts: list[str]) -> list[Any]:
        out: list[Any] = []
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start : start + self.batch_size]
            feeds = self.preprocess(chunk)
            logits = self.session.run(None, feeds)[0]
            if self.task == "token_cls":
                out.extend(self.token_cls_postprocess(logits, chunk))
            else:
                out.extend(self.seq_cls_postprocess(logits))
        return out

    def seq_cls_postprocess(self, logits: np.ndarray) -> list[dict[str, Any]]:
        z = logits - logits.max(axis=-1, keepdims=True)
        probs = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
        label = probs.argmax(axis=-1)
        confidence = probs.max(axis=-1)
        return [
            {"label": self.labels[i], "confidence": float(p)} for i, p in zip(label, confidence)
        ]

    def token_cls_postprocess(self, logits: np.ndarray, texts: list[str]) -> list[list[dict]]:
        tokens_label = logits.argmax(axis=-1).tolist()
        value = []
        for batch, token_label in enumerate(tokens_label):
            text = texts[batch]
            start = -1
            label_name = ""
            items = []
            for i, label in enumerate(token_label):
                name = self.labels[label]
                if (name == "O" or name.startswith("B-")) and start >= 0:
                    items.append(
                        {"entity": text[start : i - 1], "label": label_name, "pos": [start, i - 2]}
                    )
                    start = -1
                if name.startswith("B-"):
                    start = i - 1
                    label_name = name[2:]
            if start >= 0:
                end = len(token_label) - 1
                items.append({"entity": text[start:end], "label": "", "pos": [start, end - 1]})
            value.append(items)
        return value
