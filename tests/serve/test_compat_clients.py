"""Issue 14 on the real server: the clients users already run (openai, cohere v1 / v2,
huggingface_hub, LangChain) and the request shapes of TEI, Infinity and SimpleServing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.serve.conftest import API_KEY, AUTH, Server, start_server

TEXTS = ["hello world", "good morning to you"]
DOCS = ["good morning", "hello world", "the weather is good today"]


def native_vectors(client: httpx.Client, texts: list[str]) -> np.ndarray:
    r = client.post("/v1/embed", json={"texts": texts})
    assert r.status_code == 200, r.text
    return np.array([x["embedding"] for x in r.json()["results"]])


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (TEI's /embed normalises by default; this model does not)."""
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def error_of(exc: Any) -> dict[str, Any]:
    """The error object of an openai client exception (the client unwraps "error")."""
    body = exc.body
    return body.get("error", body) if isinstance(body, dict) else {}


def native_scores(client: httpx.Client, query: str, docs: list[str]) -> dict[int, float]:
    r = client.post("/v1/rerank", json={"query": query, "documents": docs})
    return {h["index"]: h["relevance_score"] for h in r.json()["results"]}


# ---- 1: OpenAI token ids and truncate ---------------------------------------------------------


@pytest.mark.parametrize("ids", [[101, 7592, 102], [[101, 7592], [2088, 102]]])
def test_openai_token_ids_get_the_fix(server: Server, ids: list[Any]) -> None:
    openai = pytest.importorskip("openai")
    oa = openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        oa.embeddings.create(input=ids, model="emb")
    error = error_of(caught.value)
    assert error["type"] == "invalid_input" and error["param"] == "input"
    assert "check_embedding_ctx_length=False" in error["message"]
    assert "send the texts themselves" in error["message"]


def test_openai_truncate_is_honoured(server: Server, client: httpx.Client) -> None:
    openai = pytest.importorskip("openai")
    oa = openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)
    long = "hello " * 300
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        oa.embeddings.create(input=long, model="emb", encoding_format="float")
    assert "truncat" in error_of(caught.value)["message"]  # names the fix it honours
    cut = oa.embeddings.create(
        input=long, model="emb", encoding_format="float", extra_body={"truncate": True}
    )
    native = client.post("/v1/embed", json={"texts": long, "truncate": True}).json()
    assert np.allclose(cut.data[0].embedding, native["results"][0]["embedding"], atol=1e-6)


def test_langchain_openai_embeddings(
    server: Server, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    lc = pytest.importorskip("langchain_openai")
    plain = lc.OpenAIEmbeddings(
        model="emb",
        base_url=f"{server.url}/v1",
        api_key=API_KEY,
        check_embedding_ctx_length=False,
        max_retries=0,
    )
    vectors = np.array(plain.embed_documents(TEXTS))
    assert np.allclose(vectors, native_vectors(client, TEXTS), atol=1e-6)
    # The default (check_embedding_ctx_length=True) sends tiktoken ids. tiktoken downloads its
    # encodings, so it gets a stand-in here that makes ids the same way (ints per text).
    tiktoken = pytest.importorskip("tiktoken")
    monkeypatch.setattr(tiktoken, "encoding_for_model", lambda name: _Ids())
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: _Ids())
    default = lc.OpenAIEmbeddings(
        model="emb", base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0
    )
    assert default.check_embedding_ctx_length
    with pytest.raises(Exception, match="check_embedding_ctx_length=False"):
        default.embed_documents(TEXTS)


class _Ids:
    """A tiktoken Encoding stand-in: one id per character."""

    def encode(self, text: str, **kwargs: Any) -> list[int]:
        return [ord(c) % 50_000 for c in text]

    encode_ordinary = encode


# ---- 2: Cohere v1 and v2 ----------------------------------------------------------------------


def test_cohere_v1_and_v2_rerank(server: Server, client: httpx.Client) -> None:
    cohere = pytest.importorskip("cohere")
    expected = native_scores(client, "hello", DOCS)
    v1 = cohere.Client(api_key=API_KEY, base_url=server.url)
    one = v1.rerank(query="hello", documents=DOCS, model="rr", top_n=2, return_documents=True)
    assert len(one.results) == 2
    for hit in one.results:
        assert hit.relevance_score == pytest.approx(expected[hit.index], abs=1e-6)
        assert hit.document.text == DOCS[hit.index]
    v2 = cohere.ClientV2(api_key=API_KEY, base_url=server.url)
    two = v2.rerank(model="rr", query="hello", documents=DOCS)
    assert [h.index for h in two.results] == sorted(expected, key=lambda i: -expected[i])
    for hit in two.results:
        assert hit.relevance_score == pytest.approx(expected[hit.index], abs=1e-6)


# ---- 3: TEI -------------------------------------------------------------------------------------


def test_huggingface_hub_feature_extraction_on_tei_embed(
    server: Server, client: httpx.Client
) -> None:
    hub = pytest.importorskip("huggingface_hub")
    inference = hub.InferenceClient(model=f"{server.url}/embed", token=API_KEY)
    got = np.asarray(inference.feature_extraction(TEXTS[0])).reshape(-1)
    assert np.allclose(got, unit(native_vectors(client, TEXTS[:1]))[0], atol=1e-6)
    raw = np.asarray(inference.feature_extraction(TEXTS[0], normalize=False)).reshape(-1)
    assert np.allclose(raw, native_vectors(client, TEXTS[:1])[0], atol=1e-6)


@pytest.fixture(scope="module")
def embed_only(bert_embed: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One embedding model: TEI's `POST /` embeds, as TEI serving it would."""
    log = tmp_path_factory.mktemp("embed-only") / "server.log"
    srv = start_server([f"emb={bert_embed.path}", "--device", "cpu"], log)
    yield srv
    srv.stop()


def test_huggingface_hub_inference_client_on_the_root(
    embed_only: Server, server: Server, client: httpx.Client
) -> None:
    hub = pytest.importorskip("huggingface_hub")
    got = np.asarray(hub.InferenceClient(model=embed_only.url).feature_extraction(TEXTS[1]))
    assert np.allclose(got.reshape(-1), unit(native_vectors(client, TEXTS[1:]))[0], atol=1e-5)
    info = httpx.get(f"{embed_only.url}/info").json()
    assert info["model_type"] == {"embedding": {"pooling": "mean"}}
    assert info["served_model_name"] == "emb" and info["max_input_length"] > 0
    several = httpx.post(server.url, json={"inputs": "hi"}, headers=AUTH)
    assert several.status_code == 422 and "'model'" in several.json()["error"]["message"]
    named = httpx.post(server.url, json={"inputs": "hi", "model": "rr"}, headers=AUTH)
    assert named.status_code == 422  # a reranker's root takes {query, texts}
    broken = httpx.post(server.url, content=b'{"inputs": ', headers=AUTH)
    assert broken.status_code == 400 and broken.json()["error"]["type"] == "invalid_json"
    ranked = httpx.post(
        server.url, json={"query": "hi", "texts": DOCS, "model": "rr"}, headers=AUTH
    )
    assert ranked.status_code == 200 and len(ranked.json()) == 3


def test_tei_embed_rerank_predict_tokenize(client: httpx.Client) -> None:
    vectors = client.post("/embed", json={"inputs": TEXTS}).json()
    assert np.allclose(vectors, unit(native_vectors(client, TEXTS)), atol=1e-6)
    raw = np.array(client.post("/embed", json={"inputs": TEXTS, "normalize": False}).json())
    assert np.allclose(raw, native_vectors(client, TEXTS), atol=1e-6)
    expected = native_scores(client, "hello", DOCS)
    ranks = client.post("/rerank", json={"query": "hello", "texts": DOCS, "return_text": True})
    body = ranks.json()
    assert [r["index"] for r in body] == sorted(expected, key=lambda i: -expected[i])
    for r in body:
        assert set(r) == {"index", "text", "score"} and r["text"] == DOCS[r["index"]]
        assert r["score"] == pytest.approx(expected[r["index"]], abs=1e-6)
    logits = client.post("/rerank", json={"query": "hello", "texts": DOCS, "raw_scores": True})
    for r in logits.json():
        assert 1 / (1 + np.exp(-r["score"])) == pytest.approx(expected[r["index"]], abs=1e-6)
    one = client.post("/predict", json={"inputs": "北京的天气"}).json()
    native = client.post("/v1/classify", json={"texts": "北京的天气", "top_k": 15}).json()
    assert [p["label"] for p in one] == [x["label"] for x in native["results"][0]["top_k"]]
    assert one[0]["score"] == pytest.approx(native["results"][0]["score"], abs=1e-6)
    batch = client.post("/predict", json={"inputs": [["北京的天气"], ["打球"]]}).json()
    assert len(batch) == 2 and batch[0] == one
    pair = client.post("/predict", json={"inputs": ["北京的天气", "打球"]}).json()
    assert len(pair) == 15 and sum(p["score"] for p in pair) == pytest.approx(1.0, abs=1e-5)
    tokens = client.post("/tokenize", json={"inputs": "乔丹 NBA", "model": "ner"}).json()
    assert [t["text"] for t in tokens[0]] == ["[CLS]", "乔", "丹", "nba", "[SEP]"]
    assert [(t["start"], t["stop"]) for t in tokens[0][1:4]] == [(0, 1), (1, 2), (3, 6)]
    assert tokens[0][0]["special"] and not tokens[0][1]["special"]
    info = client.get("/info", params={"model": "cls"}).json()
    assert len(info["model_type"]["classifier"]["id2label"]) == 15
    # TEI has no NER: naming the NER model is a 4xx pointing at /v1/ner, never a 500
    for sent in (
        client.post("/", json={"inputs": "乔丹在北京", "model": "ner"}),
        client.get("/info", params={"model": "ner"}),
    ):
        assert 400 <= sent.status_code < 500, sent.text
        assert "/v1/ner" in sent.text


# ---- 4: Infinity --------------------------------------------------------------------------------


def test_infinity_routes_match_the_native_ones(client: httpx.Client) -> None:
    data = client.post("/embeddings", json={"input": TEXTS, "model": "emb"}).json()
    got = np.array([d["embedding"] for d in data["data"]])
    assert np.allclose(got, native_vectors(client, TEXTS), atol=1e-6)
    expected = native_scores(client, "hello", DOCS)
    body = {"query": "hello", "documents": DOCS, "return_documents": True, "top_n": 2}
    ranked = client.post("/rerank", json=body).json()
    assert ranked["object"] == "rerank" and ranked["model"] == "rr"
    assert ranked["usage"]["total_tokens"] > 0 and ranked["id"].startswith("infinity-")
    assert len(ranked["results"]) == 2
    for hit in ranked["results"]:
        assert hit["relevance_score"] == pytest.approx(expected[hit["index"]], abs=1e-6)
        assert hit["document"] == DOCS[hit["index"]]
    classes = client.post("/classify", json={"input": ["北京的天气", "打球"]}).json()
    assert classes["object"] == "classify" and len(classes["data"]) == 2
    native = client.post("/v1/classify", json={"texts": ["北京的天气", "打球"]}).json()
    for row, res in zip(classes["data"], native["results"]):
        assert row[0]["label"] == res["label"]
        assert row[0]["score"] == pytest.approx(res["score"], abs=1e-6)
    models = client.get("/models").json()
    assert {m["id"]: m["capabilities"] for m in models["data"]}["emb"] == ["embed"]


# ---- 5: SimpleServing ---------------------------------------------------------------------------


def test_simple_serving_example_bodies(client: httpx.Client) -> None:
    texts = ["乔丹在北京打球", "科比来到重庆"]
    split = {"data": {"text": [list(t) for t in texts]}, "parameters": {"max_seq_len": 128}}
    ner = client.post("/models/ner", json=split).json()["result"]
    for text, items in zip(texts, ner["value"]):
        for item in items:  # what client_token_cls.py prints; pos inclusive at both ends
            start, end = item["pos"]
            assert text[start : end + 1] == item["entity"] and item["label"]
    assert [e["entity"] for e in ner["value"][1]] == ["科比", "重庆"]
    labels = client.get("/v1/models").json()["data"][0]["labels"]
    assert [labels[i] for i in ner["tokens_label"][0]] == [
        "O", "B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "O", "O",
    ]  # fmt: skip
    pairs = {"data": {"text": ["北京的天气", "打球"], "text_pair": ["今天", "明天"]}}
    cls = client.post("/models/cls", json=pairs).json()["result"]
    tei = client.post("/predict", json={"inputs": [["北京的天气", "今天"], ["打球", "明天"]]})
    assert cls["label_name"] == [row[0]["label"] for row in tei.json()]
    assert cls["confidence"] == pytest.approx([row[0]["score"] for row in tei.json()])


def test_simple_serving_truncates_as_upstream(client: httpx.Client) -> None:
    long = "北京的天气很好" * 90  # 630 characters, over the model's 512 tokens
    cut = client.post("/models/cls", json={"data": {"text": long}})
    assert cut.status_code == 200, cut.text
    short = client.post(
        "/models/cls", json={"data": {"text": long}, "parameters": {"max_seq_len": 16}}
    )
    head = client.post("/v1/classify", json={"texts": long[:14]}).json()["results"][0]
    assert short.json()["result"]["confidence"][0] == pytest.approx(head["score"], abs=1e-6)
    refused = client.post(
        "/models/cls", json={"data": {"text": long}, "parameters": {"truncation": False}}
    )
    assert refused.status_code == 422 and "truncat" in refused.json()["error"]["message"]


# ---- their own servers: a multi-label model (TOML config) and the server-wide --truncate -------


def test_simple_serving_multi_label_prob_limit(bag_cls: Any, tmp_path: Path) -> None:

    config = tmp_path / "serve.toml"
    config.write_text(
        f'[models.ml]\npath = "{bag_cls}"\ntask = "seq_cls"\nmulti_label = true\n', "utf-8"
    )
    server = start_server(["--config", str(config), "--device", "cpu"], tmp_path / "log")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            texts = ["北京的天气", "打球"]
            native = client.post("/v1/classify", json={"texts": texts, "top_k": 15}).json()
            counts = set()
            for limit in (0.3, 0.5, 0.9):
                body = {"data": {"text": texts}, "parameters": {"prob_limit": limit}}
                result = client.post("/models/ml", json=body).json()["result"]
                for i, res in enumerate(native["results"]):
                    above = sorted(
                        (int(x["label"].split("_")[1]), x["score"])
                        for x in res["top_k"]
                        if x["score"] > limit
                    )
                    assert result["label"][i] == [j for j, _ in above]
                    assert result["confidence"][i] == pytest.approx([p for _, p in above])
                counts.add(sum(len(x) for x in result["label"]))
            assert len(counts) > 1  # the threshold changed the answer
    finally:
        assert server.stop() == 0, server.output()


def test_server_wide_truncate_default(bert_embed: Any, tmp_path: Path) -> None:

    args = [f"emb={bert_embed.path}", "--truncate", "--device", "cpu"]
    server = start_server(args, tmp_path / "log")
    long = "hello " * 300
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for path, body in (("/v1/embed", {"texts": long}), ("/v1/embeddings", {"input": long})):
                assert client.post(path, json=body).status_code == 200, path
                refused = client.post(path, json={**body, "truncate": False})
                assert refused.status_code == 422, path
    finally:
        assert server.stop() == 0, server.output()
