"""Text embedding: CLS or mean pooling of the last hidden state (or a pooled output), L2-normalised."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence

import numpy as np

from ernie_deploy.errors import ConfigError, InputError
from ernie_deploy.runtime.checks import POOLED_NAMES, TOKEN_NAMES, embedding_output
from ernie_deploy.tasks.engine import Engine, Predictor
from ernie_deploy.tasks.results import EmbeddingResult

__all__ = ["POOLED_NAMES", "TOKEN_NAMES", "Embedder", "l2_normalize", "pool"]
GUESSED_POOLING = (
    "{path}: nothing in the model directory says how to pool its token vectors (no "
    '1_Pooling/config.json, no "pooling" in ernie_deploy.json), so CLS pooling is used: for a '
    'sentence-transformers model exported without its pooling files pass pooling="mean" '
    '(--pooling mean, or "pooling": "mean" in ernie_deploy.json), and the '
    "max_seq_length its sentence_bert_config.json gives (or copy that file beside the model)."
)
log = logging.getLogger("ernie_deploy")


def pool(hidden: np.ndarray, mask: np.ndarray, pooling: str) -> np.ndarray:
    """[B,T,H] hidden states + [B,T] attention mask -> [B,H] (CLS: first token; mean: masked mean)."""
    if pooling == "cls":
        return hidden[:, 0, :]
    weights = mask[:, :, None].astype(hidden.dtype)
    return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class Embedder(Predictor[EmbeddingResult]):
    """Sentence embeddings.

    Args:
        engine: tokenizer + model + batching.
        pooling: "cls" or "mean", applied when the graph outputs token states; a graph that
            outputs a pooled vector (e.g. `sentence_embedding`) is used as it is. None: CLS,
            with a warning (logged once per model) that the pooling was guessed.
        normalize: L2-normalise the vectors (cosine similarity = dot product).
        truncate: cut texts longer than max_seq_length instead of raising InputTooLongError.
        prompts: named prefixes the model was trained with (E5: {"query": "query: ",
            "passage": "passage: "}); a call picks one with `prompt_name`.
        prompt_name: the prompt used when a call names none (None: no prefix).
    """

    task = "embedding"

    def __init__(
        self,
        engine: Engine,
        pooling: str | None = "cls",
        normalize: bool = True,
        truncate: bool = False,
        prompts: Mapping[str, str] | None = None,
        prompt_name: str | None = None,
    ) -> None:
        super().__init__(engine)
        self.prompts = dict(prompts or {})
        self.prompt_name = self.check_prompt(prompt_name)
        guessed = pooling is None
        pooling = pooling or "cls"
        if pooling not in ("cls", "mean"):
            raise ConfigError(f"Unknown pooling {pooling!r}: use 'cls' or 'mean'.")
        self.output, self.token_level = embedding_output(engine.model)
        self.pooling = pooling
        self.pooling_guessed = guessed and self.token_level
        if self.pooling_guessed:
            log.warning(GUESSED_POOLING.format(path=engine.model.path))
        self.normalize = normalize
        self.truncate = truncate

    def check_prompt(self, name: str | None) -> str | None:
        """`name` if this model has such a prompt (None passes); else one sentence naming them."""
        if name is None or name in self.prompts:
            return name
        known = ", ".join(repr(n) for n in self.prompts) or "none"
        raise InputError(
            f"Unknown prompt_name {name!r}: this model's prompts are {known} (named in its "
            "config_sentence_transformers.json or ernie_deploy.json)."
        )

    def predict(
        self, texts: str | Sequence[str], first_index: int = 0, prompt_name: str | None = None
    ) -> list[EmbeddingResult]:
        """Results for `texts` in input order; `prompt_name` picks a prompt for this call (the
        results keep the texts as given, without the prefix)."""
        if prompt_name is None or prompt_name == self.prompt_name:
            return super().predict(texts, first_index)
        other = copy.copy(self)
        other.prompt_name = self.check_prompt(prompt_name)
        return other.predict(texts, first_index)

    def vectors(self, texts: list[str], first_index: int = 0) -> np.ndarray:
        """Embeddings [n_texts, hidden] in input order (the prompt, if any, put before each)."""
        if self.prompt_name is not None:
            prefix = self.prompts[self.prompt_name]
            texts = [prefix + text for text in texts]
        seqs = self.engine.encode(texts, self.truncate, first_index)
        out: np.ndarray | None = None
        for batch, values in self.engine.run(seqs, self.output):
            if self.token_level:
                values = pool(values, batch.features["attention_mask"], self.pooling)
            if out is None:
                out = np.empty((len(seqs), values.shape[-1]), np.float32)
            out[batch.indices] = values
        assert out is not None
        return l2_normalize(out) if self.normalize else out

    def _predict(self, texts: list[str], first_index: int) -> list[EmbeddingResult]:
        vecs = self.vectors(texts, first_index)
        return [EmbeddingResult(text, vec) for text, vec in zip(texts, vecs)]
