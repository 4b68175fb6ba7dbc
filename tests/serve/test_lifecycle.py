"""Server lifecycle: config file, no API key, 429 on a full queue, SIGTERM draining, failed start."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serve._helpers import metric, post_concurrently
from tests.serve.conftest import Server, start_server

MAX_QUEUE = 4
HOLD_MS = 1500  # a lone request waits this long for company: requests stay queued meanwhile


@pytest.fixture(scope="module")
def slow_server(lookup_ner: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One NER model from a TOML config, no API key, a small queue and a long batching wait."""
    d = tmp_path_factory.mktemp("slow")
    config = d / "serve.toml"
    config.write_text(
        f"max_queue = {MAX_QUEUE}\n"
        f"max_wait_ms = {HOLD_MS}\n"
        "hold_for_company = true\n"
        "max_batch_size = 64\n\n"
        "[models.ner]\n"
        f"path = {str(lookup_ner)!r}\n"
        'device = "cpu"\n',
        encoding="utf-8",
    )
    srv = start_server(["--config", str(config)], d / "server.log")
    yield srv
    srv.stop()


def test_no_api_key_means_open(slow_server: Server) -> None:
    r = httpx.post(f"{slow_server.url}/v1/ner", json={"texts": "乔丹"}, timeout=30)
    assert r.status_code == 200
    assert r.json()["results"][0]["entities"][0]["label"] == "PER"


def test_full_queue_answers_429_at_once(slow_server: Server) -> None:
    start = time.monotonic()
    responses = post_concurrently(slow_server.url, "/v1/ner", [{"texts": "乔丹"}] * 10)
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * MAX_QUEUE + [429] * (10 - MAX_QUEUE)
    rejected = [r for r in responses if r.status_code == 429]
    assert rejected[0].json()["error"]["type"] == "overloaded"
    assert "--max-queue" in rejected[0].json()["error"]["message"]
    assert rejected[0].headers["retry-after"] == "1"
    assert time.monotonic() - start < HOLD_MS / 1000 + 10
    metrics = httpx.get(f"{slow_server.url}/metrics").text
    assert metric(metrics, "ernie_deploy_rejected_total", model="ner") == 10 - MAX_QUEUE
    assert metric(metrics, "ernie_deploy_requests_total", route="/v1/ner", status="429") >= 6


def test_sigterm_finishes_accepted_requests_then_exits_0(slow_server: Server) -> None:
    texts = ["乔丹在北京", "科比", "重庆的火锅", "姚明"]
    results: dict[int, httpx.Response] = {}

    def send(i: int) -> None:
        results[i] = httpx.post(f"{slow_server.url}/v1/ner", json={"texts": texts[i]}, timeout=60)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + HOLD_MS / 1000
    while time.monotonic() < deadline:  # all four accepted and waiting in the batch queue
        text = httpx.get(f"{slow_server.url}/metrics").text
        if metric(text, "ernie_deploy_queue_depth", model="ner") == len(texts):
            break
        time.sleep(0.02)
    else:
        pytest.fail("the requests were not queued in time")
    slow_server.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(60)
    assert slow_server.proc.wait(30) == 0, slow_server.output()
    assert sorted(results) == [0, 1, 2, 3]
    for i, r in results.items():
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["text"] == texts[i]
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{slow_server.url}/health", timeout=2)
    assert "Finished server process" in slow_server.output()


def test_a_model_that_fails_to_load_stops_startup(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    run = subprocess.run(
        [sys.executable, "-m", "ernie_deploy", "serve", f"bad={missing}", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "'bad'" in errors[0] and str(missing) in errors[0]
    assert "Traceback" not in run.stderr
