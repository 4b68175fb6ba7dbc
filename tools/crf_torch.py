"""A linear-chain CRF over word tags for tools/e5_trainer.py (``--crf``), trained with the encoder.

Its three score tables are what the package's Viterbi decoder reads from a model directory
(``crf_transitions.npy`` [from, to], ``crf_start_transitions.npy``, ``crf_end_transitions.npy``;
src/ernie_deploy/tasks/viterbi.py). The decoder adds them to the log-softmax of the logits; the
CRF here adds them to the logits. The two give the same best path and the same likelihood,
because log-softmax only subtracts one constant per word, and every path pays each word's
constant once.

Training and decoding forbid the same BIO steps inside a sequence (I-X only after B-X or I-X).
A training window may start inside an entity, so the start of a sequence is not constrained
here (the decoder forbids I-X first on whole texts). A window whose gold path takes a forbidden
step (an entity edge inside a Latin word can do that) is left out of the loss.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

FILES = ("crf_transitions.npy", "crf_start_transitions.npy", "crf_end_transitions.npy")
FORBIDDEN = -1e4  # finite in float32, far below any path score


def allowed_steps(labels: tuple[str, ...]) -> np.ndarray:
    """bool [from, to]: I-X may follow only B-X or I-X (the training scripts' BIO penalties)."""
    from train_data import transitions

    return transitions(labels)[0] == 0


def make_crf(torch: Any, labels: tuple[str, ...]) -> Any:
    """A torch module holding the learned tables (zeros at the start) and the fixed step mask."""

    class CRF(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            n = len(labels)
            self.transitions = torch.nn.Parameter(torch.zeros(n, n))
            self.start = torch.nn.Parameter(torch.zeros(n))
            self.end = torch.nn.Parameter(torch.zeros(n))
            self.register_buffer("allowed", torch.from_numpy(allowed_steps(labels)))

        def forward(self, logits: Any, labels: Any, ignore: int) -> Any:
            return nll(torch, self, logits, labels, ignore)

        def tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            return tuple(
                p.detach().cpu().numpy().astype(np.float32)
                for p in (self.transitions, self.start, self.end)
            )

    return CRF()


def nll(torch: Any, crf: Any, logits: Any, labels: Any, ignore: int) -> Any:
    """Mean negative log-likelihood per tagged word of the gold tag paths.

    logits [B, T, C] over pieces; labels [B, T] hold a tag on each word's first piece and
    `ignore` elsewhere (special tokens, later pieces, padding): the tagged pieces, in order,
    are the sequence.
    """
    tagged = labels != ignore
    n = tagged.sum(1)
    width = max(int(n.max()), 1)
    order = torch.argsort((~tagged).to(torch.int8), dim=1, stable=True)[:, :width]
    emit = logits.gather(1, order[..., None].expand(-1, -1, logits.shape[-1]))
    tags = labels.gather(1, order).clamp(min=0)
    live = torch.arange(width, device=labels.device)[None, :] < n[:, None]
    step_ok = crf.allowed[tags[:, :-1], tags[:, 1:]] | ~live[:, 1:]
    keep = (n > 0) & step_ok.all(1)
    if not bool(keep.any()):
        return logits.sum() * 0.0
    emit, tags, live, n = emit[keep], tags[keep], live[keep], n[keep]
    trans = crf.transitions.masked_fill(~crf.allowed, FORBIDDEN)
    gold = (emit.gather(2, tags[..., None]).squeeze(-1) * live).sum(1)
    gold = gold + (trans[tags[:, :-1], tags[:, 1:]] * live[:, 1:]).sum(1)
    last = tags.gather(1, (n - 1)[:, None]).squeeze(1)
    gold = gold + crf.start[tags[:, 0]] + crf.end[last]
    alpha = crf.start[None, :] + emit[:, 0]
    for t in range(1, emit.shape[1]):
        nxt = torch.logsumexp(alpha[:, :, None] + trans[None], dim=1) + emit[:, t]
        alpha = torch.where(live[:, t, None], nxt, alpha)
    log_z = torch.logsumexp(alpha + crf.end[None, :], dim=1)
    return (log_z - gold).sum() / n.sum()


def save_tables(tables: tuple[np.ndarray, ...], directory: Path) -> None:
    for name, values in zip(FILES, tables):
        np.save(directory / name, values)


def load_tables(directory: Path) -> tuple[np.ndarray, ...] | None:
    if not (directory / FILES[0]).is_file():
        return None
    return tuple(np.load(directory / name) for name in FILES)
