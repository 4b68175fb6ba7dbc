"""Fixtures for the HTTP server tests: the real `ernie-deploy serve` on a loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

API_KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@dataclass
class Server:
    """A running `python -m ernie_deploy serve` subprocess."""

    proc: subprocess.Popen[str]
    url: str
    log: Path

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(args: Sequence[str], log: Path, timeout: float = 90.0) -> Server:
    """Start the server as users do and wait for /health 200."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "ERNIE_DEPLOY_API_KEY"}
    command = [sys.executable, "-m", "ernie_deploy", "serve", *args, "--port", str(port)]
    handle = log.open("w", encoding="utf-8")
    proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, text=True, env=env)
    handle.close()
    server = Server(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.output()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"server not healthy after {timeout} s:\n{server.output()}")


@pytest.fixture(scope="session")
def model_args(
    lookup_ner: Path, bag_cls: Path, bert_embed: object, xlmr_rerank: object
) -> list[str]:
    """NAME=PATH for one model of each task (tiny, built at test time)."""
    return [
        f"ner={lookup_ner}",
        f"cls={bag_cls}",
        f"emb={bert_embed.path}",  # type: ignore[attr-defined]
        f"rr={xlmr_rerank.path}",  # type: ignore[attr-defined]
        "--task",
        "cls=seq_cls",  # a bare export: its directory does not say
    ]


@pytest.fixture(scope="session")
def server(model_args: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The shared server: all four tasks, an API key, a 30 ms batching window that requests always
    wait out (--hold-for-company), so merging across requests does not depend on timing; the
    default (run at once when nothing else is on its way) is tested in test_batcher.py."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    args = [*model_args, "--api-key", API_KEY, "--max-wait-ms", "30", "--hold-for-company"]
    args += ["--device", "cpu"]
    srv = start_server(args, log)
    yield srv
    srv.stop()


@pytest.fixture()
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as c:
        yield c
