"""Loopback HTTP load machinery of serve_load.py: the server child process, load clients, /metrics.

Two load clients send the same pre-encoded JSON bodies over keep-alive connections:

* `raw`: a minimal asyncio HTTP/1.1 client (one connection per concurrent client, requests
  written whole, responses read by Content-Length). It costs ~0.1-0.2 ms of CPU per request,
  so on a small machine it leaves the CPUs to the server: it measures the server.
* `httpx`: one `httpx.AsyncClient` with a pool of one connection per concurrent client, what
  Python users of the server are likely to run. At 64 connections httpx's pool costs several
  ms of CPU per request (measured here), which on 2 cores takes CPU from the server.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import _common as c
import httpx

CLIENTS = ("raw", "httpx")
REQUEST_TIMEOUT_S = 60.0


@dataclass
class Run:
    """One timed measurement: a level of concurrent clients against the server, or in-process."""

    kind: str  # "inprocess" or a client name ("raw", "httpx")
    level: int
    repeat: int
    wall: float = 0.0
    texts: int = 0
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    client_cpu: float | None = None
    server_cpu: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    cut: bool = False  # stopped at its deadline before every request was sent

    @property
    def texts_per_s(self) -> float:
        return self.texts / self.wall if self.wall > 0 else float("nan")

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.wall if self.wall > 0 else float("nan")

    def per(self, key: str, by: str) -> float:
        """metrics[key] / metrics[by] (e.g. mean requests per batch); NaN when `by` is 0."""
        d = self.metrics.get(by, 0.0)
        return self.metrics.get(key, 0.0) / d if d else float("nan")


# ---- the server --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """An HTTP server in a child process on 127.0.0.1, its output in a log file.

    `Server.ours(MODEL, extra)` runs `python -m ernie_deploy serve MODEL --port P` (from the
    source tree `src` when given, for A/B runs of two versions); `Server(argv, ...)` runs any
    command (a peer) whose `{port}` placeholders are filled in."""

    def __init__(
        self,
        argv: list[str],
        cwd: str | Path | None = None,
        env: dict[str, str] | None = None,
        shown: str | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        fd, self.log_path = tempfile.mkstemp(prefix="serve_load-", suffix=".log")
        cmd = [a.replace("{port}", str(self.port)) for a in argv]
        self.command = shown or " ".join(shlex.quote(x) for x in cmd)
        try:
            self.proc = subprocess.Popen(
                cmd, stdout=fd, stderr=subprocess.STDOUT, cwd=cwd, env={**os.environ, **(env or {})}
            )
        finally:
            os.close(fd)

    @classmethod
    def ours(cls, model_arg: str, extra: list[str], src: str | Path | None = None) -> Server:
        cmd = [sys.executable, "-m", "ernie_deploy", "serve", model_arg]
        cmd += ["--host", "127.0.0.1", "--port", "{port}", *extra]
        env = {"PYTHONPATH": str(src)} if src else None
        shown = " ".join(shlex.quote(x) for x in ["python", *cmd[1:]]).replace("{port}", "PORT")
        return cls(cmd, env=env, shown=shown)

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, timeout: float) -> float:
        """Seconds until GET /health answered 200; RuntimeError if the server died or timed out."""
        t0 = time.perf_counter()
        with httpx.Client(timeout=5) as client:
            while time.perf_counter() - t0 < timeout:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"the server exited ({self.proc.returncode}):\n{self.log_tail()}"
                    )
                try:
                    if client.get(self.url + "/health").status_code == 200:
                        return time.perf_counter() - t0
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
        raise RuntimeError(f"the server was not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def cpu_seconds(self) -> float | None:
        return c.process_cpu_seconds(self.proc.pid)

    def stop(self) -> int | None:
        """SIGTERM (graceful), then kill after 30 s; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$")


async def scrape(client: httpx.AsyncClient, model: str) -> dict[str, float]:
    """The model's counters from /metrics: histogram sums and counts, counter totals."""
    out: dict[str, float] = {}
    for line in (await client.get("/metrics")).text.splitlines():
        m = _SAMPLE.match(line)
        if not m or line.startswith("#") or f'model="{model}"' not in (m.group(2) or ""):
            continue
        if m.group(1).endswith(("_sum", "_count", "_total")):
            out[m.group(1).removeprefix("ernie_deploy_")] = float(m.group(3))
    return out


# ---- load clients ------------------------------------------------------------------------------


def encode(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


class Sender(Protocol):
    async def post(self, path: str, body: bytes) -> int: ...

    async def close(self) -> None: ...


class RawConnection:
    """One keep-alive HTTP/1.1 connection sending POSTs one after another; reopened once when
    the server had closed it while idle (uvicorn drops keep-alive connections idle for 5 s)."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int
    ) -> None:
        self.reader, self.writer, self.port = reader, writer, port

    @classmethod
    async def open(cls, port: int) -> RawConnection:
        return cls(*await asyncio.open_connection("127.0.0.1", port), port)

    async def post(self, path: str, body: bytes) -> int:
        try:
            return await asyncio.wait_for(self._post(path, body), REQUEST_TIMEOUT_S)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                raise
            self.writer.close()
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            return await asyncio.wait_for(self._post(path, body), REQUEST_TIMEOUT_S)

    async def _post(self, path: str, body: bytes) -> int:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode("ascii") + body)
        lines = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = next(
            (
                int(v)
                for k, _, v in (h.partition(":") for h in lines[1:])
                if k.strip().lower() == "content-length"
            ),
            None,
        )
        if length is None:
            raise RuntimeError(f"response to {path} has no Content-Length: {lines[:3]}")
        await self.reader.readexactly(length)
        return status

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


class HttpxSender:
    """Requests through a shared httpx.AsyncClient (its own connection pool)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def post(self, path: str, body: bytes) -> int:
        headers = {"Content-Type": "application/json"}
        return (await self.client.post(path, content=body, headers=headers)).status_code

    async def close(self) -> None:
        pass


async def _senders(kind: str, server: Server, n: int, pool: httpx.AsyncClient) -> list[Sender]:
    if kind == "raw":
        return list(await asyncio.gather(*(RawConnection.open(server.port) for _ in range(n))))
    return [HttpxSender(pool)] * n


async def _load(
    server: Server,
    model: str,
    path: str,
    bodies: list[bytes],
    per_request: int,
    deadline: float,
    run: Run,
) -> None:
    level = run.level
    limits = httpx.Limits(max_connections=level, max_keepalive_connections=level)
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=REQUEST_TIMEOUT_S, limits=limits) as pool,
        httpx.AsyncClient(base_url=server.url, timeout=REQUEST_TIMEOUT_S) as meta,
    ):
        senders = await _senders(run.kind, server, level, pool)
        # one untimed request per connection opens them all before timing
        warm = await asyncio.gather(
            *(s.post(path, bodies[i % len(bodies)]) for i, s in enumerate(senders))
        )
        if any(code != 200 for code in warm):
            raise RuntimeError(f"warm-up requests got status {sorted(set(warm))}")
        before = await scrape(meta, model)
        next_index = 0

        async def worker(sender: Sender) -> None:
            nonlocal next_index
            while next_index < len(bodies):
                if time.perf_counter() > deadline:
                    run.cut = True
                    return
                i = next_index
                next_index += 1
                t0 = time.perf_counter()
                status = await sender.post(path, bodies[i])
                run.latencies.append(time.perf_counter() - t0)
                if status == 200:
                    run.requests += 1
                    run.texts += per_request
                else:
                    run.errors += 1

        client_clock, server_clock = c.Clock(), c.Clock(server.proc.pid)
        with client_clock, server_clock:
            await asyncio.gather(*(worker(s) for s in senders))
        run.wall, run.client_cpu, run.server_cpu = (
            client_clock.wall,
            client_clock.cpu,
            server_clock.cpu,
        )
        after = await scrape(meta, model)
        run.metrics = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
        for sender in senders:
            await sender.close()


def load_run(
    server: Server,
    model: str,
    path: str,
    bodies: list[bytes],
    per_request: int,
    deadline: float,
    run: Run,
) -> Run:
    """Send every body once from `run.level` concurrent clients of kind `run.kind`; fill `run`."""
    asyncio.run(_load(server, model, path, bodies, per_request, deadline, run))
    return run
