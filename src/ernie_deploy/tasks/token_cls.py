"""Token classification (NER): windowing of long texts, per-token logits, entity decoding."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ernie_deploy.errors import ConfigError
from ernie_deploy.tasks.batching import Encoded
from ernie_deploy.tasks.bio import TagSet, isolate_cjk, word_starts
from ernie_deploy.tasks.bio import decode as decode_entities
from ernie_deploy.tasks.engine import (
    Engine,
    Predictor,
    check_label_count,
    check_row_labels,
    pick_output,
    softmax,
)
from ernie_deploy.tasks.results import Entity, TokenClsResult
from ernie_deploy.tasks.viterbi import Transitions, ViterbiDecoder, check_decode


@dataclass(frozen=True)
class Window:
    """Content tokens [start, end) go through the model; the window owns [core_start, core_end)."""

    start: int
    end: int
    core_start: int
    core_end: int


def plan_windows(n_tokens: int, size: int, overlap: int) -> list[Window]:
    """Cover n_tokens with windows of at most `size` tokens overlapping by about `overlap`.

    Consecutive windows split their overlap in the middle, so every token is owned by
    exactly one window and sees context on both sides (except at the text's ends).
    """
    if size < 1:
        raise ConfigError("max_seq_length leaves no room for text after the special tokens.")
    if not 0 <= overlap < size:
        raise ConfigError(f"window_overlap must be between 0 and {size - 1} tokens.")
    if n_tokens <= size:
        return [Window(0, n_tokens, 0, n_tokens)]
    step = size - overlap
    starts = list(range(0, n_tokens - size, step)) + [n_tokens - size]
    bounds = [0]
    for prev, cur in zip(starts, starts[1:]):
        bounds.append((cur + prev + size) // 2)
    bounds.append(n_tokens)
    return [Window(s, s + size, bounds[k], bounds[k + 1]) for k, s in enumerate(starts)]


class TokenClassifier(Predictor[TokenClsResult]):
    """Named-entity recognition over BIO / BIOES tags with exact character offsets.

    Args:
        engine: tokenizer + model + batching.
        labels: tag names in output order (e.g. O, B-PER, I-PER, ...).
        strict: drop I-X / E-X tags that do not continue an X entity (default: they open one).
        window_overlap: tokens shared by neighbouring windows of a long text; None picks
            a quarter of the window (at least 2, at most 64).
        decode: "argmax" takes each word's most probable tag; "viterbi" takes the most
            probable tag sequence that the BIO / BIOES rules allow (tasks.viterbi), over
            the words of the whole text (windows are stitched first).
        transitions: a CRF's learned transition scores, added by "viterbi" (argmax ignores
            them); see tasks.viterbi.Transitions.from_dir.
    """

    task = "token_cls"

    def __init__(
        self,
        engine: Engine,
        labels: Sequence[str],
        strict: bool = False,
        window_overlap: int | None = None,
        decode: str = "argmax",
        transitions: Transitions | None = None,
    ) -> None:
        super().__init__(engine)
        self.output = pick_output(engine.model, 3, ("logits",))
        self.labels = tuple(labels)
        check_label_count(engine.model, self.output, self.labels)
        self.tagset = TagSet.from_labels(self.labels)
        self.strict = strict
        self.decode = check_decode(decode)
        self.decoder = ViterbiDecoder(self.tagset, transitions)
        self.window_size = engine.max_seq_length - engine.tokenizer.num_special_tokens(False)
        if window_overlap is None:
            # At least 2 so every owned token has a neighbour on each side inside its window.
            window_overlap = min(max(2, min(self.window_size // 4, 64)), self.window_size - 1)
        plan_windows(0, self.window_size, window_overlap)  # validates the sizes
        self.window_overlap = window_overlap

    def token_logits(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Per-token logits [n_tokens, n_labels] of each text, stitched from its windows."""
        return self._logits(self.engine.tokenizer.tokenize(list(texts)))

    def _logits(self, tokens: Sequence[object]) -> list[np.ndarray]:
        tok = self.engine.tokenizer
        seqs: list[Encoded] = []
        owners: list[tuple[int, Window, int]] = []
        for ti, t in enumerate(tokens):
            ids = t.ids  # type: ignore[attr-defined]
            for w in plan_windows(len(ids), self.window_size, self.window_overlap):
                input_ids, type_ids, prefix = tok.build_inputs(ids[w.start : w.end])
                seqs.append(Encoded(input_ids, type_ids))
                owners.append((ti, w, prefix))
        n_labels = len(self.labels)
        out = [np.empty((len(t.ids), n_labels), np.float32) for t in tokens]  # type: ignore[attr-defined]
        for batch, logits in self.engine.run(seqs, self.output):
            check_row_labels(logits, self.labels)
            for row, seq_index in enumerate(batch.indices):
                ti, w, prefix = owners[seq_index]
                lo = prefix + w.core_start - w.start
                out[ti][w.core_start : w.core_end] = logits[
                    row, lo : lo + w.core_end - w.core_start
                ]
        return out

    def _predict(self, texts: list[str], first_index: int) -> list[TokenClsResult]:
        return [TokenClsResult(text, ents) for text, (_, ents) in zip(texts, self.tagged(texts))]

    def tagged(self, texts: list[str]) -> list[tuple[np.ndarray, tuple[Entity, ...]]]:
        """Each text's per-token tag ids and its entities (one tokenization, one model run)."""
        tokens = self.engine.tokenizer.tokenize(texts)
        out = []
        for text, t, logits in zip(texts, tokens, self._logits(tokens)):
            probs = softmax(logits)
            word_ids = isolate_cjk(text, t.offsets, t.word_ids)
            tags = self.tags(logits, word_ids, probs)
            scores = probs[np.arange(len(tags)), tags]
            entities = decode_entities(
                text, tags, scores, t.offsets, word_ids, self.tagset, self.strict
            )
            out.append((tags, entities))
        return out

    def tags(
        self, logits: np.ndarray, word_ids: np.ndarray, probs: np.ndarray | None = None
    ) -> np.ndarray:
        """Tag ids [n_tokens] for one text's logits by the `decode` mode.

        Entities are read from each word's first piece, so viterbi runs over those rows
        (one step per word) and every piece of a word gets the word's tag.
        """
        if self.decode == "argmax":
            return (softmax(logits) if probs is None else probs).argmax(axis=-1)
        starts = word_starts(word_ids)
        path = self.decoder.decode(logits[starts])
        return np.repeat(path, np.diff(np.append(starts, len(word_ids))))
