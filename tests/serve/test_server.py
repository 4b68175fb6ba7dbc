"""The real server (uvicorn, loopback, tiny models): every route, the openai client, bad input."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import numpy as np
import pytest

from tests.serve._helpers import metric, post_concurrently
from tests.serve.conftest import API_KEY, AUTH, Server


def test_health_is_open_and_models_are_listed(server: Server, client: httpx.Client) -> None:
    health = client.get("/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "models": ["ner", "cls", "emb", "rr"]}
    cards = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert {k: v["task"] for k, v in cards.items()} == {
        "ner": "token_cls",
        "cls": "seq_cls",
        "emb": "embedding",
        "rr": "rerank",
    }
    assert cards["ner"]["labels"][:3] == ["O", "B-PER", "I-PER"]


@pytest.mark.parametrize("path", ["/v1/ner", "/v1/models", "/metrics", "/models/ner"])
def test_api_key_required(server: Server, path: str) -> None:
    method = "GET" if path in ("/v1/models", "/metrics") else "POST"
    body = {"texts": "乔丹"} if path == "/v1/ner" else {"data": {"text": "乔丹"}}
    kwargs: dict[str, Any] = {"json": body} if method == "POST" else {}
    url = f"{server.url}{path}"
    missing = httpx.request(method, url, **kwargs)
    wrong = httpx.request(method, url, headers={"Authorization": "Bearer nope"}, **kwargs)
    right = httpx.request(method, url, headers=AUTH, **kwargs)
    assert missing.status_code == wrong.status_code == 401
    assert missing.json()["error"]["type"] == "unauthorized"
    assert missing.headers["www-authenticate"] == "Bearer"
    assert right.status_code == 200


def test_ner_offsets_index_the_original_text(client: httpx.Client) -> None:
    text = "乔丹在北京打球，Michael Jordan 去了 New York。"
    r = client.post("/v1/ner", json={"texts": [text, "科比"]})
    assert r.status_code == 200
    body = r.json()
    assert body["model"] == "ner"
    first = body["results"][0]
    found = {(e["text"], e["label"]) for e in first["entities"]}
    assert {("乔丹", "PER"), ("北京", "LOC"), ("Michael Jordan", "PER")} <= found
    for e in first["entities"]:
        assert text[e["start"] : e["end"]] == e["text"]
    assert body["results"][1]["entities"][0]["text"] == "科比"


def test_classify_top_k_and_model_field(client: httpx.Client) -> None:
    r = client.post("/v1/classify", json={"texts": "北京的天气", "top_k": 3, "model": "cls"})
    assert r.status_code == 200
    result = r.json()["results"][0]
    assert len(result["top_k"]) == 3 and result["label"] == result["top_k"][0]["label"]
    assert result["label"].startswith("LABEL_")
    scores = [x["score"] for x in result["top_k"]]
    assert scores == sorted(scores, reverse=True)


def test_embed_and_tokenize(client: httpx.Client) -> None:
    r = client.post("/v1/embed", json={"texts": ["hello world", "good morning"]})
    assert r.status_code == 200
    vectors = np.array([x["embedding"] for x in r.json()["results"]])
    assert vectors.shape == (2, 32) and not np.allclose(vectors[0], vectors[1])
    text = "乔丹 NBA"
    tokens = client.post("/v1/tokenize", json={"texts": text, "model": "ner"}).json()
    pieces = tokens["results"][0]["tokens"]
    assert [text[t["start"] : t["end"]] for t in pieces] == ["乔", "丹", "NBA"]
    assert pieces[2]["token"] == "nba"


def test_rerank_cohere_shape(client: httpx.Client) -> None:
    docs = ["good morning", {"text": "hello world"}, "the weather is good today"]
    r = client.post(
        "/v1/rerank",
        json={"query": "hello", "documents": docs, "top_n": 2, "return_documents": True},
    )
    assert r.status_code == 200
    body = r.json()
    assert body["model"] == "rr" and body["usage"]["total_tokens"] > 0
    hits = body["results"]
    assert len(hits) == 2
    assert hits[0]["relevance_score"] >= hits[1]["relevance_score"]
    texts = ["good morning", "hello world", "the weather is good today"]
    for hit in hits:
        assert hit["document"]["text"] == texts[hit["index"]]
    bare = client.post("/v1/rerank", json={"query": "hello", "documents": texts}).json()
    assert len(bare["results"]) == 3 and "document" not in bare["results"][0]
    by_index = {h["index"]: h["relevance_score"] for h in bare["results"]}
    assert by_index[hits[0]["index"]] == pytest.approx(hits[0]["relevance_score"], abs=1e-6)


def test_openai_client_float_and_base64(server: Server, client: httpx.Client) -> None:
    openai = pytest.importorskip("openai")
    oa = openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)
    texts = ["hello world", "good morning to you"]
    as_float = oa.embeddings.create(input=texts, model="emb", encoding_format="float")
    as_b64 = oa.embeddings.create(input=texts, model="emb")  # the client's default: base64
    assert [d.index for d in as_float.data] == [0, 1]
    assert as_float.model == "emb" and as_float.usage.prompt_tokens > 0
    assert as_float.usage.total_tokens == as_float.usage.prompt_tokens
    native = [
        r["embedding"] for r in client.post("/v1/embed", json={"texts": texts}).json()["results"]
    ]
    for f, b, n in zip(as_float.data, as_b64.data, native):
        assert np.allclose(f.embedding, n, atol=1e-6)
        assert np.allclose(b.embedding, f.embedding, atol=1e-6)
    raw = client.post(
        "/v1/embeddings", json={"input": "hello world", "encoding_format": "base64"}
    ).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, native[0], atol=1e-6)
    wrong = client.post("/v1/embeddings", json={"input": "x", "model": "text-embedding-3-small"})
    assert wrong.status_code == 404 and "emb" in wrong.json()["error"]["message"]


def test_simple_serving_shape(client: httpx.Client) -> None:
    texts = ["乔丹在北京打球", list("科比来到重庆")]
    r = client.post(
        "/models/ner", json={"data": {"text": texts}, "parameters": {"max_seq_len": 128}}
    )
    assert r.status_code == 200
    value = r.json()["result"]["value"]
    assert value[0] == [  # PaddleNLP's NERPostHandler: pos inclusive at both ends
        {"pos": [0, 1], "entity": "乔丹", "label": "PER"},
        {"pos": [3, 4], "entity": "北京", "label": "LOC"},
    ]
    assert [e["entity"] for e in value[1]] == ["科比", "重庆"]
    cls = client.post("/models/cls", json={"data": {"text": ["北京的天气", "打球"]}}).json()
    result = cls["result"]
    assert all(isinstance(i, int) for i in result["label"])
    assert result["label_name"] == [f"LABEL_{i}" for i in result["label"]]
    native = client.post("/v1/classify", json={"texts": ["北京的天气", "打球"]}).json()
    assert result["confidence"] == pytest.approx([x["score"] for x in native["results"]])
    assert client.post("/models/emb", json={"data": {"text": "x"}}).status_code == 422
    assert client.post("/models/nope", json={"data": {"text": "x"}}).status_code == 404


BAD_INPUTS: list[tuple[str, str, Any, dict[str, str], int, str]] = [
    # (method, path, body (bytes: raw), extra headers, status, error type)
    ("POST", "/v1/ner", b'{"texts": ["a"', {}, 400, "invalid_json"),
    ("POST", "/v1/ner", b'{"texts": "\xff\xfe"}', {}, 400, "invalid_json"),
    ("POST", "/v1/ner", {"texts": 5}, {}, 422, "invalid_request"),
    ("POST", "/v1/ner", {"texts": [None]}, {}, 422, "invalid_request"),
    ("POST", "/v1/ner", {"text": "misspelt field"}, {}, 422, "invalid_request"),
    ("POST", "/v1/ner", b"[1, 2]", {}, 422, "invalid_request"),
    ("POST", "/v1/ner", b'{"texts": "a"}', {"content-type": "text/plain"}, 422, "invalid_request"),
    ("POST", "/v1/ner", b"", {}, 422, "invalid_request"),
    ("POST", "/v1/ner", {"texts": ""}, {}, 400, "empty_input"),
    ("POST", "/v1/ner", {"texts": []}, {}, 400, "empty_input"),
    ("POST", "/v1/ner", {"texts": ["ok", "   "]}, {}, 400, "empty_input"),
    ("POST", "/v1/ner", {"texts": "乔丹", "model": "nope"}, {}, 404, "model_not_found"),
    ("POST", "/v1/ner", {"texts": "乔丹", "model": "cls"}, {}, 404, "model_not_found"),
    ("POST", "/v1/ner", {"texts": ["a"] * 257}, {}, 422, "invalid_input"),
    ("POST", "/v1/ner", {"texts": "北" * 20_001}, {}, 422, "input_too_long"),
    ("POST", "/v1/embed", {"texts": "hello " * 300}, {}, 422, "input_too_long"),
    ("POST", "/v1/classify", {"texts": "a", "top_k": 0}, {}, 422, "invalid_request"),
    ("POST", "/v1/rerank", {"query": "", "documents": ["a"]}, {}, 400, "empty_input"),
    ("POST", "/v1/rerank", {"query": "a", "documents": [{"txt": "a"}]}, {}, 422, "invalid_request"),
    ("POST", "/v1/embeddings", {"input": [1, 2, 3]}, {}, 422, "invalid_input"),  # token ids
    (
        "POST",
        "/v1/embeddings",
        {"input": "a", "encoding_format": "int8"},
        {},
        422,
        "invalid_request",
    ),
    ("POST", "/v1/embeddings", {"input": "a", "dimensions": 7}, {}, 422, "invalid_input"),
    ("POST", "/models/ner", {"data": {"text": "a", "text_pair": "b"}}, {}, 422, "invalid_input"),
    ("POST", "/v1/ner", b"x" * (4 * 1024 * 1024 + 1), {}, 413, "request_too_large"),
    ("GET", "/v1/ner", None, {}, 405, "method_not_allowed"),
    ("GET", "/v1/nothing", None, {}, 404, "not_found"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "kind"),
    BAD_INPUTS,
    ids=[f"{m} {p} {s} {k}" for m, p, _, _, s, k in BAD_INPUTS],
)
def test_bad_input_gets_a_clear_4xx(
    client: httpx.Client,
    method: str,
    path: str,
    body: Any,
    headers: dict[str, str],
    status: int,
    kind: str,
) -> None:
    if isinstance(body, bytes):
        headers = {"content-type": "application/json", **headers}
        r = client.request(method, path, content=body, headers=headers)
    else:
        r = client.request(method, path, json=body, headers=headers)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["type"] == kind
    assert error["message"].endswith(".") and ":" in error["message"]  # names the fix
    assert client.get("/health").status_code == 200  # still serving


def test_curl_style_bodies_are_json(client: httpx.Client) -> None:
    body = json.dumps({"texts": "乔丹"}).encode()
    for headers in ({"content-type": "application/x-www-form-urlencoded"}, {}):
        r = client.post("/v1/ner", content=body, headers=headers)
        assert r.status_code == 200, r.text


def test_limits_name_the_fix(client: httpx.Client) -> None:
    long_chars = client.post("/v1/ner", json={"texts": "北" * 20_001}).json()["error"]
    assert "20000" in long_chars["message"]
    long_tokens = client.post("/v1/embed", json={"texts": "hello " * 300}).json()["error"]
    assert "truncat" in long_tokens["message"]
    cut = client.post("/v1/embed", json={"texts": "hello " * 300, "truncate": True})
    assert cut.status_code == 200
    # NER windows a text far longer than max_seq_length: every entity is found.
    text = "乔丹在北京打球。" * 60
    r = client.post("/v1/ner", json={"texts": text})
    assert r.status_code == 200
    assert len(r.json()["results"][0]["entities"]) == 120


def _single_and_concurrent(server: Server, path: str, bodies: list[Any]) -> tuple[list, list]:
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as c:
        alone = [c.post(path, json=b) for b in bodies]
    together = post_concurrently(server.url, path, bodies, AUTH)
    assert all(r.status_code == 200 for r in alone + together), [r.text for r in together]
    return [r.json() for r in alone], [r.json() for r in together]


def _batched_requests(server: Server, model: str) -> tuple[float, float, float]:
    """Requests summed over batches, batches, and batches that held a single request."""
    text = httpx.get(f"{server.url}/metrics", headers=AUTH).text
    return (
        metric(text, "ernie_deploy_batch_requests_sum", model=model),
        metric(text, "ernie_deploy_batch_requests_count", model=model),
        metric(text, "ernie_deploy_batch_requests_bucket", model=model, le="1.0"),
    )


def test_batching_merges_requests_and_keeps_each_answer(server: Server) -> None:
    ner = [{"texts": f"{'乔丹' if i % 2 else '科比'}在北京打球" * (i % 4 + 1)} for i in range(11)]
    ner.append({"texts": ["乔丹在北京打球。" * 40, "重庆"]})  # windows mixed into batches
    cls = [{"texts": "北京的天气" * (i % 5 + 1)} for i in range(12)]
    emb = [{"texts": ["hello world " * (i % 6 + 1), "good"]} for i in range(12)]
    rr = [
        {"query": "hello", "documents": ["hello world " * (i % 3 + 1), "good morning"]}
        for i in range(12)
    ]
    before = {m: _batched_requests(server, m) for m in ("ner", "cls", "emb", "rr")}
    for path, bodies in (("/v1/ner", ner), ("/v1/classify", cls), ("/v1/embed", emb)):
        alone, together = _single_and_concurrent(server, path, bodies)
        for a, t in zip(alone, together):
            assert _rounded(a) == _rounded(t)
    alone, together = _single_and_concurrent(server, "/v1/rerank", rr)
    for a, t in zip(alone, together):
        assert [h["index"] for h in a["results"]] == [h["index"] for h in t["results"]]
        for ha, ht in zip(a["results"], t["results"]):
            assert ha["relevance_score"] == pytest.approx(ht["relevance_score"], abs=1e-5)
    for model in ("ner", "cls", "emb", "rr"):
        (s0, c0, one0), (s1, c1, one1) = before[model], _batched_requests(server, model)
        # 24 requests (12 alone, 12 at once), each in at least one batch (a request whose
        # rows differ much in length is cut into several, to bound padding).
        assert s1 - s0 >= 24
        assert one1 - one0 < c1 - c0, f"{model}: no batch held more than one request"


def _rounded(value: Any) -> Any:
    """Floats to 5 decimals (padding width moves attention outputs by ~1e-7), rest exact."""
    if isinstance(value, float):
        return round(value, 5)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def test_metrics_exposes_requests_latency_queue_and_tokens(client: httpx.Client) -> None:
    client.post("/v1/ner", json={"texts": "乔丹"})
    bad = client.post("/v1/ner", json={"texts": ["乔丹", 7]})
    assert 400 <= bad.status_code < 500
    text = client.get("/metrics").text
    assert metric(text, "ernie_deploy_requests_total", route="/v1/ner", status="200") >= 1
    assert metric(text, "ernie_deploy_request_duration_seconds_count", route="/v1/ner") >= 1
    assert metric(text, "ernie_deploy_tokens_total", model="ner") > 0
    assert "ernie_deploy_queue_depth" in text and "ernie_deploy_batch_size_bucket" in text
    assert (
        metric(text, "ernie_deploy_requests_total", route="/v1/ner", status=str(bad.status_code))
        >= 1
    )


def test_openapi_documents_every_route(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    for path in (
        "/v1/ner",
        "/v1/classify",
        "/v1/embed",
        "/v1/rerank",
        "/v1/tokenize",
        "/v1/embeddings",
        "/models/{name}",
        "/health",
        "/v1/models",
        "/metrics",
    ):
        assert path in spec["paths"], path
    ner = spec["paths"]["/v1/ner"]["post"]
    assert {"200", "400", "404", "422", "429"} <= set(ner["responses"])
    assert json.dumps(spec["components"]["schemas"]["ErrorBody"])
