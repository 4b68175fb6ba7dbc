"""`ernie-deploy serve --ray --replicas 2` (a local Ray instance, loopback HTTP) answers as the plain server.

Both servers run as users start them, on the same two tiny models and limits; every request
below must get the same status and the same JSON from both.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serve.conftest import API_KEY, AUTH, Server, start_server

pytest.importorskip("ray")
pytest.importorskip("ray.serve")

LIMITS = ["--max-texts", "4", "--max-body-bytes", "4000", "--api-key", API_KEY, "--device", "cpu"]


@pytest.fixture(scope="module")
def servers(
    lookup_ner: Path, bag_cls: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Server]]:
    logs = tmp_path_factory.mktemp("ray_serve")
    args = [f"ner={lookup_ner}", f"cls={bag_cls}", "--task", "cls=seq_cls", *LIMITS]
    plain = start_server(args, logs / "plain.log")
    try:
        on_ray = start_server([*args, "--ray", "--replicas", "2"], logs / "ray.log", timeout=180)
    except BaseException:
        plain.stop()
        raise
    yield plain, on_ray
    plain.stop()
    on_ray.stop()


REQUESTS: list[tuple[str, str, Any, bool]] = [
    # (method, path, JSON body or raw bytes, send the API key)
    ("GET", "/health", None, False),
    ("GET", "/v1/models", None, True),
    ("POST", "/v1/ner", {"texts": ["乔丹在北京打球", "科比去了成都"]}, True),
    ("POST", "/v1/classify", {"texts": "北京的天气", "top_k": 3}, True),
    ("POST", "/v1/tokenize", {"texts": "乔丹 NBA", "model": "ner"}, True),
    ("POST", "/models/ner", {"data": {"text": "姚明"}}, True),
    ("POST", "/models/cls", {"data": {"text": ["成都", "重庆"]}}, True),
    # errors: same status, same {"error": {"type", "message"}}
    ("POST", "/v1/ner", {"texts": "乔丹"}, False),
    ("POST", "/v1/ner", {"texts": [""]}, True),
    ("POST", "/v1/classify", {"texts": "x", "model": "nope"}, True),
    ("POST", "/v1/ner", {"texts": ["北京"] * 5}, True),
    ("POST", "/v1/ner", {"text": "wrong field"}, True),
    ("POST", "/v1/ner", b"{not json", True),
    ("POST", "/v1/ner", {"texts": ["北京" * 1500]}, True),
    ("GET", "/v1/nothing-here", None, True),
]


def _call(server: Server, method: str, path: str, body: Any, auth: bool) -> httpx.Response:
    headers = dict(AUTH) if auth else {}
    kwargs: dict[str, Any] = {}
    if isinstance(body, bytes):
        kwargs["content"] = body
        headers["content-type"] = "application/json"
    elif body is not None:
        kwargs["json"] = body
    return httpx.request(method, server.url + path, headers=headers, timeout=30, **kwargs)


def test_ray_server_answers_like_the_plain_server(servers: tuple[Server, Server]) -> None:
    plain, on_ray = servers
    statuses = set()
    for method, path, body, auth in REQUESTS:
        want = _call(plain, method, path, body, auth)
        got = _call(on_ray, method, path, body, auth)
        assert got.status_code == want.status_code, (method, path, got.text)
        assert got.json() == want.json(), (method, path)
        statuses.add(want.status_code)
    assert {200, 401, 404, 413, 422} <= statuses
    metrics = httpx.get(on_ray.url + "/metrics", headers=AUTH, timeout=30)
    assert metrics.status_code == 200 and "ernie_deploy" in metrics.text


def test_two_replicas_run_and_stop_cleanly(servers: tuple[Server, Server]) -> None:
    _, on_ray = servers
    # once serve.run returns (every replica up; /health may answer before), the CLI reads
    # serve.status() and reports the RUNNING replicas
    line = re.compile(r"ray serve: (\d+) replica\(s\) running, 1 CPU\(s\) each")
    deadline = time.monotonic() + 60
    while not line.search(on_ray.output()) and time.monotonic() < deadline:
        time.sleep(0.2)
    found = line.search(on_ray.output())
    assert found and found.group(1) == "2", on_ray.output()[-2000:]
    for _ in range(8):  # requests spread over the replicas all succeed
        r = httpx.post(on_ray.url + "/v1/ner", json={"texts": "詹姆斯"}, headers=AUTH, timeout=30)
        assert r.status_code == 200 and r.json()["results"][0]["entities"][0]["text"] == "詹姆斯"
    assert on_ray.stop() == 0


def test_ray_options_without_ray_or_in_conflict(
    lookup_ner: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from ernie_deploy.cli import app

    runner = CliRunner()
    no_ray = runner.invoke(app, ["serve", str(lookup_ner), "--replicas", "2"])
    assert no_ray.exit_code == 1 and "--replicas need --ray: add it." in no_ray.stderr
    both = runner.invoke(
        app, ["serve", str(lookup_ner), "--ray", "--replicas", "2", "--max-replicas", "3"]
    )
    assert both.exit_code == 1 and "exclude each other" in both.stderr
    missing = runner.invoke(app, ["serve", "ner=/no/such/model", "--ray"])
    assert (
        missing.exit_code == 1 and "Model 'ner' (/no/such/model) failed to load" in missing.stderr
    )
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the [ray] extra were not installed
    absent = runner.invoke(app, ["serve", str(lookup_ner), "--ray"])
    assert absent.exit_code == 1
    assert absent.stderr.strip() == (
        "error: serve --ray needs Ray, which is not installed: pip install 'ernie-deploy[ray]'."
    )
