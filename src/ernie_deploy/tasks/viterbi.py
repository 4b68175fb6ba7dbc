"""Constrained (Viterbi) tag decoding: the best tag path that BIO / BIOES rules allow.

Allowed transitions come from the label names (tasks.bio.TagSet):
- I-X and E-X continue an X entity: they may follow only B-X or I-X, and may not start
  the sequence (a type with no B-X tag, as in the IO scheme, is not constrained);
- a type with an E-X tag (BIOES, BMES) must be closed: after B-X or I-X come only I-X or
  E-X, and the sequence may not end on B-X or I-X.
Everything else is allowed (O, B-X and S-X may follow any tag that leaves no BIOES entity
open; IO labels are unconstrained), so the all-O path is always valid.

Scores are per-step log-probabilities plus, for CRF models, learned transition scores
(`Transitions`, read from `crf_transitions.npy` in the model directory); disallowed steps
cost DISALLOWED, a large finite penalty, so no NaN can arise and a valid path always wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ernie_deploy.errors import ConfigError
from ernie_deploy.tasks.bio import BEGIN, END, INSIDE, TagSet

DECODES = ("argmax", "viterbi")
DISALLOWED = -1e30
# Log-probabilities are floored here so that no sum of valid steps can reach DISALLOWED.
_FLOOR = -1e15
TRANSITIONS_NAME = "crf_transitions.npy"
START_NAME = "crf_start_transitions.npy"
END_NAME = "crf_end_transitions.npy"


def check_decode(decode: str) -> str:
    """Return `decode` if it is one of DECODES, else raise a ConfigError naming them."""
    if decode not in DECODES:
        raise ConfigError(f"Unknown decode {decode!r}: use one of {', '.join(DECODES)}.")
    return decode


@dataclass(frozen=True, eq=False)
class Constraints:
    """Which tag may follow which ([from, to]), which may start and which may end a sequence."""

    transitions: np.ndarray  # bool [L, L]
    start: np.ndarray  # bool [L]
    end: np.ndarray  # bool [L]

    @classmethod
    def from_tagset(cls, tagset: TagSet) -> Constraints:
        prefixes = np.array(tagset.prefixes)
        types = np.array(tagset.types)
        n = len(prefixes)
        begun = {t for p, t in zip(tagset.prefixes, tagset.types) if p == BEGIN}
        closed = {t for p, t in zip(tagset.prefixes, tagset.types) if p == END}
        has_begin = np.array([t in begun for t in types], dtype=bool)
        has_end = np.array([t in closed for t in types], dtype=bool)
        same_type = types[:, None] == types[None, :]
        # Tag i leaves an entity of its type open: i is B-X or I-X.
        opens = np.isin(prefixes, (BEGIN, INSIDE))
        continues = np.isin(prefixes, (INSIDE, END))  # tag j continues an entity of its type
        allowed = np.ones((n, n), dtype=bool)
        # I-X / E-X only after B-X / I-X (when the scheme has a B-X to open X).
        needs_open = continues & has_begin
        allowed[:, needs_open] = (opens[:, None] & same_type)[:, needs_open]
        # An open X entity with an E-X tag goes on only with I-X or E-X.
        must_close = opens & has_end
        allowed[must_close, :] &= (continues[None, :] & same_type)[must_close, :]
        return cls(allowed, ~needs_open, ~must_close)

    def valid(self, path: np.ndarray) -> bool:
        """Whether a tag path obeys the constraints (an empty path does)."""
        if len(path) == 0:
            return True
        return bool(
            self.start[path[0]]
            and self.end[path[-1]]
            and self.transitions[path[:-1], path[1:]].all()
        )


@dataclass(frozen=True, eq=False)
class Transitions:
    """A CRF's learned scores, added to the log-probabilities of a path.

    Args:
        matrix: [L, L] score of tag i followed by tag j (row: from, column: to), the layout
            of PaddleNLP's LinearChainCrf(with_start_stop_tag=False), pytorch-crf and
            Hugging Face CRF heads.
        start: [L] score of starting with each tag (None: 0).
        end: [L] score of ending with each tag (None: 0).
    """

    matrix: np.ndarray
    start: np.ndarray | None = None
    end: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.matrix.shape[0] if self.matrix.ndim == 2 else -1
        if self.matrix.shape != (n, n):
            raise ConfigError(
                f"CRF transitions have shape {self.matrix.shape}: they must be a square "
                "[labels, labels] matrix (row: from tag, column: to tag)."
            )
        for name, values, shape in (
            ("transitions", self.matrix, (n, n)),
            ("start transitions", self.start, (n,)),
            ("end transitions", self.end, (n,)),
        ):
            if values is None:
                continue
            if values.shape != shape:
                raise ConfigError(
                    f"CRF {name} have shape {values.shape} but the transitions are for {n} "
                    f"labels: save them with shape {list(shape)}."
                )
            if not np.isfinite(values).all() or np.abs(values).max(initial=0.0) > -_FLOOR:
                raise ConfigError(
                    f"CRF {name} hold infinite, NaN or huge values: save finite scores "
                    "(disallowed BIO transitions are masked by the decoder itself)."
                )

    @property
    def n_labels(self) -> int:
        return int(self.matrix.shape[0])

    @classmethod
    def from_dir(cls, directory: str | Path) -> Transitions | None:
        """Read TRANSITIONS_NAME (and optional START_NAME, END_NAME) from a model directory;
        None when the directory has no TRANSITIONS_NAME."""
        directory = Path(directory)
        if not (directory / TRANSITIONS_NAME).is_file():
            return None
        matrix = _load(directory / TRANSITIONS_NAME)
        start = _load(directory / START_NAME) if (directory / START_NAME).is_file() else None
        end = _load(directory / END_NAME) if (directory / END_NAME).is_file() else None
        return cls(matrix, start, end)


def _load(path: Path) -> np.ndarray:
    try:
        values = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"Cannot read {path} ({exc}): save it with numpy.save as a float array."
        ) from exc
    if not isinstance(values, np.ndarray) or values.dtype.kind not in "fiu":
        raise ConfigError(f"{path} does not hold a numeric array: save it with numpy.save.")
    return values.astype(np.float64)


class ViterbiDecoder:
    """Best valid tag path over per-step scores, with optional learned CRF transitions.

    Args:
        tagset: the labels, whose prefixes give the constraints.
        transitions: learned CRF scores for the same labels; None: only the constraints.
    """

    def __init__(self, tagset: TagSet, transitions: Transitions | None = None) -> None:
        self.constraints = Constraints.from_tagset(tagset)
        n = len(tagset.labels)
        if transitions is not None and transitions.n_labels != n:
            raise ConfigError(
                f"The CRF transitions are for {transitions.n_labels} labels but the model has "
                f"{n}: save a [{n}, {n}] {TRANSITIONS_NAME} in label order."
            )
        c = self.constraints
        self.learned = transitions is not None
        self.transitions = np.where(c.transitions, 0.0, DISALLOWED)
        self.start = np.where(c.start, 0.0, DISALLOWED)
        self.end = np.where(c.end, 0.0, DISALLOWED)
        if transitions is not None:
            self.transitions += transitions.matrix
            if transitions.start is not None:
                self.start += transitions.start
            if transitions.end is not None:
                self.end += transitions.end

    def decode(self, logits: np.ndarray) -> np.ndarray:
        """The best valid path (int64 [T]) for logits [T, L] (scored as log-softmax).

        Without learned transitions, a per-step argmax path that is already valid is the
        best path (ties to the lower tag index, as viterbi() breaks them) and is returned
        as is, so well-behaved output costs no more than argmax.
        """
        scores = log_softmax(logits)
        if not self.learned:
            tags = scores.argmax(axis=-1)
            if self.constraints.valid(tags):
                return tags.astype(np.int64)
        return viterbi(scores, self.transitions, self.start, self.end)

    def score(self, logits: np.ndarray, path: np.ndarray) -> float:
        """A path's total score under this decoder (DISALLOWED-sized when it is invalid)."""
        return path_score(log_softmax(logits), path, self.transitions, self.start, self.end)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """float64 log-probabilities over the last axis, floored far above DISALLOWED."""
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return np.maximum(z, _FLOOR, out=z)


def viterbi(
    scores: np.ndarray, transitions: np.ndarray, start: np.ndarray, end: np.ndarray
) -> np.ndarray:
    """The highest-scoring path for per-step scores [T, L], transition scores [L, L]
    (from, to), start and end scores [L]. Ties go to the lower tag index at each step.
    Vectorised over labels; the loop runs over the T steps only."""
    n_steps, n_labels = scores.shape
    path = np.zeros(n_steps, dtype=np.int64)
    if n_steps == 0:
        return path
    back = np.empty((n_steps - 1, n_labels), dtype=np.intp)
    # Laid out [to, from] so each step reduces over contiguous rows.
    into = np.ascontiguousarray(transitions.T)
    cand = np.empty((n_labels, n_labels), dtype=np.float64)
    rows = np.arange(n_labels)
    best = start + scores[0]
    for t in range(1, n_steps):
        np.add(into, best, out=cand)
        came_from = cand.argmax(axis=1)
        back[t - 1] = came_from
        best = cand[rows, came_from]
        best += scores[t]
    best += end
    tag = int(best.argmax())
    path[-1] = tag
    for t in range(n_steps - 2, -1, -1):
        tag = int(back[t, tag])
        path[t] = tag
    return path


def path_score(
    scores: np.ndarray,
    path: np.ndarray,
    transitions: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
) -> float:
    """The score viterbi() maximises, for one path."""
    if len(path) == 0:
        return 0.0
    total = start[path[0]] + scores[np.arange(len(path)), path].sum() + end[path[-1]]
    return float(total + transitions[path[:-1], path[1:]].sum())
