"""tools/crf_torch.py: the CRF likelihood against enumeration of every tag path, and a
trained table set read back by the package's decoder."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import crf_torch  # noqa: E402

LABELS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
IGNORE = -100


def brute_nll(emit: np.ndarray, tags: list[int], crf) -> float:
    """-log p(tags) by summing over every path the step mask allows."""
    trans, start, end = (t.astype(np.float64) for t in crf.tables())
    ok = crf_torch.allowed_steps(LABELS)

    def score(path) -> float:
        s = start[path[0]] + end[path[-1]] + sum(emit[i, t] for i, t in enumerate(path))
        return s + sum(trans[a, b] for a, b in zip(path, path[1:]))

    paths = [
        p
        for p in itertools.product(range(len(LABELS)), repeat=len(emit))
        if all(ok[a, b] for a, b in zip(p, p[1:]))
    ]
    log_z = np.logaddexp.reduce([score(p) for p in paths])
    return float(log_z - score(tags))


def test_nll_matches_enumeration_over_ragged_padded_batches() -> None:
    rng = np.random.default_rng(0)
    crf = crf_torch.make_crf(torch, LABELS)
    with torch.no_grad():
        for p in crf.parameters():
            p.copy_(torch.from_numpy(rng.normal(size=p.shape).astype(np.float32)))
    # three windows: pieces tagged at scattered positions (first pieces), padding after
    gold = [[1, 2, 0, 3], [0, 3, 4], [1]]
    where = [[1, 2, 4, 5], [1, 3, 4], [2]]
    width = 7
    logits = rng.normal(size=(3, width, len(LABELS))).astype(np.float32)
    labels = np.full((3, width), IGNORE)
    for b, (g, w) in enumerate(zip(gold, where)):
        labels[b, w] = g
    got = crf(torch.from_numpy(logits), torch.from_numpy(labels), IGNORE).item()
    total = sum(brute_nll(logits[b, w], g, crf) for b, (g, w) in enumerate(zip(gold, where)))
    assert got == pytest.approx(total / sum(map(len, gold)), rel=1e-5)


def test_windows_whose_gold_takes_a_forbidden_step_are_left_out() -> None:
    crf = crf_torch.make_crf(torch, LABELS)
    logits = torch.zeros(2, 3, len(LABELS))
    labels = torch.tensor([[0, 2, IGNORE], [1, 2, 0]])  # O -> I-PER is forbidden
    alone = crf(logits[1:], labels[1:], IGNORE)
    assert crf(logits, labels, IGNORE).item() == pytest.approx(alone.item())
    assert alone.item() > 0
    assert crf(logits[:1], labels[:1], IGNORE).item() == 0.0


def test_learned_tables_reach_the_package_decoder(tmp_path: Path) -> None:
    from ernie_deploy.tasks.bio import TagSet
    from ernie_deploy.tasks.viterbi import Transitions, ViterbiDecoder

    crf = crf_torch.make_crf(torch, LABELS)
    logits = torch.zeros(1, 3, len(LABELS))
    labels = torch.tensor([[1, 2, 0]])
    opt = torch.optim.Adam(crf.parameters(), lr=0.1)
    for _ in range(50):  # flat emissions: only the tables can prefer the gold path
        opt.zero_grad()
        crf(logits, labels, IGNORE).backward()
        opt.step()
    crf_torch.save_tables(crf.tables(), tmp_path)
    tables = Transitions.from_dir(tmp_path)
    assert tables is not None
    decoder = ViterbiDecoder(TagSet.from_labels(list(LABELS)), tables)
    path = decoder.decode(np.log(np.full((3, len(LABELS)), 1 / len(LABELS))))
    assert list(path) == [1, 2, 0]


def test_convert_hf_carries_the_tables_into_the_predictor(tmp_path: Path) -> None:
    """best/ of a --crf run holds the tables beside model.safetensors; `convert hf` must carry
    them so that the converted model decodes with them (here they force one PER entity over
    the whole text, whatever the tiny model's logits say)."""
    pytest.importorskip("optimum.exporters.onnx")
    import ernie_deploy
    from ernie_deploy.convert.hf import convert_hf
    from tests import _models

    src = _models.build_bert(tmp_path / "src", "token_cls", LABELS, keep_weights=True).path
    (src / "model.onnx").unlink()
    converted = tmp_path / "out"
    convert_hf(src, converted)
    assert all(
        e.label != "PER" for e in ernie_deploy.load(str(converted)).predict("a b c")[0].entities
    )
    n = len(LABELS)
    trans, start, end = np.zeros((n, n)), np.full(n, -100.0), np.zeros(n)
    start[1], trans[1, 2], trans[2, 2] = 100.0, 100.0, 100.0
    crf_torch.save_tables((trans, start, end), src)
    convert_hf(src, tmp_path / "out-crf")
    for name in crf_torch.FILES:
        assert (tmp_path / "out-crf" / name).is_file()
    ner = ernie_deploy.load(str(tmp_path / "out-crf"))
    entities = ner.predict("a b c")[0].entities
    assert [(e.label, e.start, e.end) for e in entities] == [("PER", 0, 5)]
