"""Each task head against the source framework (paddle / PyTorch) running the same weights."""

from __future__ import annotations

import numpy as np
import pytest

import ernie_deploy
from ernie_deploy.tasks.batching import Encoded, pad
from ernie_deploy.tasks.bio import decode
from ernie_deploy.tasks.embedding import l2_normalize, pool
from ernie_deploy.tasks.engine import softmax
from tests._models import RefModel

TOL = 1e-4
TEXTS = [
    "北京的涮肉，重庆的火锅，成都的小吃都是极具特色的美食。",
    "乔丹",
    "2008年 Michael Jordan 在 New York 打 NBA，the game was great!",
    "今天天气很好" * 12,
    "a b c 1 2 3 ℃ ¥ 😀",
]


def reference_batch(
    ref: RefModel, predictor: object, texts: list[str], pairs: list[str] | None = None
):
    """Tokenize with our tokenizer, pad, run the source framework; returns (features, output)."""
    tok = predictor.engine.tokenizer  # type: ignore[attr-defined]
    seqs, prefixes = [], []
    toks = tok.tokenize(texts)
    docs = tok.tokenize(pairs) if pairs else [None] * len(texts)
    for t, d in zip(toks, docs):
        ids, types, prefix = tok.build_inputs(t.ids, None if d is None else d.ids)
        seqs.append(Encoded(ids, types))
        prefixes.append(prefix)
    feats = pad(seqs, tok.pad_id)
    out = ref.reference(feats["input_ids"], feats["token_type_ids"], feats["attention_mask"])
    return feats, np.asarray(out), toks, prefixes


@pytest.mark.parametrize("fixture", ["paddle_ner", "bert_ner"])
def test_token_cls_matches_reference(fixture: str, request: pytest.FixtureRequest) -> None:
    ref: RefModel = request.getfixturevalue(fixture)
    ner = ernie_deploy.load(ref.path, max_seq_length=128, batch_size=2)
    assert isinstance(ner, ernie_deploy.TokenClassifier)
    feats, logits, toks, prefixes = reference_batch(ref, ner, TEXTS)
    ours = ner.token_logits(TEXTS)
    results = ner(TEXTS)
    for i, (text, t, mine) in enumerate(zip(TEXTS, toks, ours)):
        theirs = logits[i, prefixes[i] : prefixes[i] + len(t.ids)]
        assert np.abs(mine - theirs).max() <= TOL
        probs = softmax(theirs.astype(np.float32))
        tags = probs.argmax(-1)
        expected = decode(
            text, tags, probs[np.arange(len(tags)), tags], t.offsets, t.word_ids, ner.tagset
        )
        got = results[i].entities
        assert [(e.text, e.label, e.start, e.end) for e in got] == [
            (e.text, e.label, e.start, e.end) for e in expected
        ]
        assert all(e.text == text[e.start : e.end] for e in got)


@pytest.mark.parametrize("fixture", ["paddle_cls", "bert_cls"])
def test_seq_cls_matches_reference(fixture: str, request: pytest.FixtureRequest) -> None:
    ref: RefModel = request.getfixturevalue(fixture)
    cls = ernie_deploy.load(ref.path, max_seq_length=128, batch_size=2, top_k=3)
    assert isinstance(cls, ernie_deploy.SequenceClassifier)
    assert cls.labels == ref.labels
    _, logits, _, _ = reference_batch(ref, cls, TEXTS)
    assert np.abs(cls.logits(TEXTS) - logits).max() <= TOL
    probs = softmax(logits.astype(np.float32))
    for result, p in zip(cls(TEXTS), probs):
        assert result.label == ref.labels[int(p.argmax())]
        assert result.score == pytest.approx(float(p.max()), abs=TOL)
        assert [x.label for x in result.top_k] == [ref.labels[j] for j in np.argsort(-p)[:3]]


@pytest.mark.parametrize(
    ("fixture", "pooling", "normalize"),
    [("paddle_embed", "cls", True), ("bert_embed", "mean", False)],
)
def test_embedding_matches_reference(
    fixture: str, pooling: str, normalize: bool, request: pytest.FixtureRequest
) -> None:
    ref: RefModel = request.getfixturevalue(fixture)
    emb = ernie_deploy.load(ref.path, task="embedding", max_seq_length=128, batch_size=2)
    assert isinstance(emb, ernie_deploy.Embedder)
    # bert_embed: pooling from 1_Pooling/config.json; its modules.json has no Normalize module,
    # so, as in sentence-transformers, its vectors are not normalised.
    assert (emb.pooling, emb.normalize) == (pooling, normalize)
    feats, hidden, _, _ = reference_batch(ref, emb, TEXTS)
    pooled = pool(hidden, feats["attention_mask"], pooling)
    got = np.stack([r.vector for r in emb(TEXTS)])
    assert np.abs(got - (l2_normalize(pooled) if normalize else pooled)).max() <= TOL
    unit = ernie_deploy.load(ref.path, task="embedding", normalize=True)
    got = np.stack([r.vector for r in unit(TEXTS)])
    assert np.abs(got - l2_normalize(pooled)).max() <= TOL
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("fixture", ["xlmr_rerank", "bert_rerank2"])
def test_rerank_matches_reference(fixture: str, request: pytest.FixtureRequest) -> None:
    ref: RefModel = request.getfixturevalue(fixture)
    rr = ernie_deploy.load(ref.path, task="rerank", max_seq_length=128, batch_size=2)
    assert isinstance(rr, ernie_deploy.Reranker)
    query = "where is the game"
    docs = ["the game is in new york", "hello", "北京的涮肉", "a b c", "game game game"]
    _, logits, _, _ = reference_batch(ref, rr, [query] * len(docs), docs)
    raw = logits[:, 0] if logits.shape[1] == 1 else logits[:, 1] - logits[:, 0]
    result = rr(query, docs, top_n=3)
    assert [h.index for h in result.hits] == list(np.argsort(-raw, kind="stable")[:3])
    assert len(rr(query, docs, top_n=99).hits) == len(docs)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ernie_deploy.errors.ConfigError, match="top_n must be a positive"):
            rr(query, docs, top_n=bad)  # type: ignore[arg-type]
    for hit in result.hits:
        assert hit.raw_score == pytest.approx(float(raw[hit.index]), abs=TOL)
        assert hit.document == docs[hit.index]
        if logits.shape[1] == 2:
            assert hit.score == pytest.approx(float(softmax(logits[hit.index])[1]), abs=TOL)
