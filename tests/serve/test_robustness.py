"""Issue 12 on the real server: closed docs, lone surrogates, per-request bounds, answers rendered
off the event loop, the shutdown grace period, a port already in use, an honest OpenAPI schema."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serve._helpers import metric
from tests.serve.conftest import API_KEY, AUTH, Server, start_server

GRACE_S = 1.0


@pytest.fixture(scope="module")
def ner_zh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The bundled ner-zh model (slow enough to keep a request busy), one row per batch, public
    docs despite the key, a large per-request budget and a 1 s grace period."""
    log = tmp_path_factory.mktemp("ner-zh") / "server.log"
    args = [
        "ner=ner-zh",
        "--device",
        "cpu",
        "--api-key",
        API_KEY,
        "--public-docs",
        "--max-batch-size",
        "1",
        "--max-request-chars",
        "400000",
        "--graceful-timeout",
        str(GRACE_S),
    ]
    srv = start_server(args, log)
    yield srv
    srv.stop()


# ---- 6: docs and model names closed when a key is set, unless --public-docs ------------------


@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/redoc"])
def test_docs_need_the_key_by_default(server: Server, path: str) -> None:
    assert httpx.get(f"{server.url}{path}").status_code == 401
    assert (
        httpx.get(f"{server.url}{path}", headers={"Authorization": "Bearer no"}).status_code == 401
    )
    assert httpx.get(f"{server.url}{path}", headers=AUTH).status_code == 200


def test_health_lists_models_only_with_the_key(server: Server) -> None:
    bare = httpx.get(f"{server.url}/health")
    assert bare.status_code == 200 and bare.json() == {"status": "ok", "models": None}
    keyed = httpx.get(f"{server.url}/health", headers=AUTH).json()
    assert keyed["models"] == ["ner", "cls", "emb", "rr"]


def test_public_docs_opens_docs_and_health(ner_zh_server: Server) -> None:
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert httpx.get(f"{ner_zh_server.url}{path}").status_code == 200, path
    assert httpx.get(f"{ner_zh_server.url}/health").json()["models"] == ["ner"]
    assert httpx.post(f"{ner_zh_server.url}/v1/ner", json={"texts": "乔丹"}).status_code == 401


# ---- 7: a lone surrogate is a 4xx with one sentence, and the connection stays open ----------

SURROGATE_BODIES = [
    ("/v1/classify", {"texts": "ab\udfffcd"}),
    ("/v1/ner", {"texts": ["ok", "ab\udfffcd"]}),
    ("/v1/embed", {"texts": "ab\udfffcd"}),
    ("/v1/tokenize", {"texts": "ab\ud800cd", "model": "ner"}),
    ("/v1/rerank", {"query": "a", "documents": ["ab\udfffcd"]}),
    ("/v1/embeddings", {"input": "ab\udfffcd"}),
    ("/models/ner", {"data": {"text": "ab\udfffcd"}}),
]


@pytest.mark.parametrize(("path", "body"), SURROGATE_BODIES, ids=[p for p, _ in SURROGATE_BODIES])
def test_lone_surrogate_is_a_4xx_on_a_kept_connection(
    server: Server, path: str, body: dict[str, Any]
) -> None:
    raw = json.dumps(body)  # ascii: the surrogate travels as the escape \udfff
    assert "\\ud" in raw
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {**AUTH, "Content-Type": "application/json"}
    try:
        conn.request("POST", path, body=raw.encode("ascii"), headers=headers)
        first = conn.getresponse()
        error = json.loads(first.read())["error"]
        sock = conn.sock
        assert first.status == 422, error
        assert error["type"] == "invalid_input" and "surrogate" in error["message"]
        assert error["message"].count(". ") == 0 and error["message"].endswith(".")
        assert not first.will_close and sock is not None
        conn.request("POST", "/v1/ner", body=b'{"texts": "\\u4e54\\u4e39"}', headers=headers)
        second = conn.getresponse()
        assert second.status == 200 and json.loads(second.read())["model"] == "ner"
        assert conn.sock is sock  # the same keep-alive connection answered both
    finally:
        conn.close()


# ---- 8: bounded work per request, answers rendered off the loop, an honoured grace period -----


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/ner", {"texts": ["北" * 20_000] * 6}),
        ("/v1/tokenize", {"texts": ["北" * 20_000] * 6, "model": "ner"}),
        ("/v1/embed", {"texts": ["b" * 20_000] * 6, "truncate": True}),
        ("/v1/rerank", {"query": "a", "documents": ["b" * 20_000] * 6, "truncate": True}),
    ],
    ids=["ner", "tokenize", "embed", "rerank"],
)
def test_total_characters_per_request_are_bounded(
    client: httpx.Client, path: str, body: dict[str, Any]
) -> None:
    start = time.monotonic()
    r = client.post(path, json=body)
    assert r.status_code == 422, r.text[:200]
    message = r.json()["error"]["message"]
    assert "120000 characters" in message and "100000 per request" in message
    assert "--max-request-chars" in message
    assert time.monotonic() - start < 5  # refused before any work


def test_a_large_answer_does_not_stall_health(ner_zh_server: Server) -> None:
    texts = ["北京" * 10_000] * 20  # 400,000 tokens: a ~25 MB answer
    done: dict[str, Any] = {}

    def big() -> None:
        done["r"] = httpx.post(
            f"{ner_zh_server.url}/v1/tokenize", json={"texts": texts}, headers=AUTH, timeout=120
        )

    worker = threading.Thread(target=big)
    worker.start()
    slowest = 0.0
    with httpx.Client(base_url=ner_zh_server.url, timeout=60) as c:
        while worker.is_alive():
            start = time.monotonic()
            assert c.get("/health").status_code == 200
            slowest = max(slowest, time.monotonic() - start)
            time.sleep(0.02)
    worker.join()
    r = done["r"]
    assert r.status_code == 200
    assert len(r.content) > 20_000_000
    assert sum(len(x["tokens"]) for x in r.json()["results"]) == 400_000
    assert slowest < 1.5, f"/health waited {slowest:.2f} s behind the answer"


def test_sigterm_honours_the_grace_period(ner_zh_server: Server) -> None:
    """A request far longer than the grace period is cut off at it; the server exits at once."""
    texts = ["乔丹在北京打球。" * 2_500] * 5  # ~4,000 one-row batches, about 20 s of work
    outcome: dict[str, Any] = {}

    def send() -> None:
        try:
            outcome["r"] = httpx.post(
                f"{ner_zh_server.url}/v1/ner", json={"texts": texts}, headers=AUTH, timeout=120
            )
        except httpx.TransportError as exc:
            outcome["r"] = exc

    worker = threading.Thread(target=send)
    worker.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = httpx.get(f"{ner_zh_server.url}/metrics", headers=AUTH).text
        if metric(text, "ernie_deploy_batch_size_count", model="ner") >= 50:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the long request did not start running")
    sent = time.monotonic()
    ner_zh_server.proc.send_signal(signal.SIGTERM)
    code = ner_zh_server.proc.wait(60)
    took = time.monotonic() - sent
    worker.join(30)
    assert code == 0, ner_zh_server.output()[-2000:]
    assert took < GRACE_S + 4, f"exited {took:.1f} s after SIGTERM (grace {GRACE_S} s)"
    r = outcome["r"]
    assert isinstance(r, httpx.Response), r
    said = f"{r.status_code} {r.text[:300]}\n{ner_zh_server.output()[-3000:]}"
    assert r.status_code == 503 and r.json()["error"]["type"] == "not_ready", said
    assert "grace period: retry it." in r.json()["error"]["message"], said
    assert r.headers.get("retry-after") == "1", said
    assert "Traceback" not in ner_zh_server.output()


# ---- 10: a port already in use is one sentence and a non-zero exit --------------------------


def test_port_in_use_is_one_sentence(lookup_ner: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "ernie_deploy",
                "serve",
                f"ner={lookup_ner}",
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: Port {port} on 127.0.0.1 is already in use: stop the program using it or pick "
        "another with --port."
    ], run.stderr
    assert "Traceback" not in run.stderr and "Errno" not in run.stderr
    assert "loaded ner" not in run.stderr  # said before any model loads
