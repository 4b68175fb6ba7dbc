"""Helpers for the server tests: concurrent requests and reading /metrics."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

import httpx


def post_concurrently(
    url: str, path: str, bodies: Sequence[Any], headers: dict[str, str] | None = None
) -> list[httpx.Response]:
    """POST every body at once (one connection each) and return the responses in order."""

    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(bodies))
        async with httpx.AsyncClient(
            base_url=url, headers=headers or {}, timeout=60, limits=limits
        ) as client:
            return list(await asyncio.gather(*(client.post(path, json=b) for b in bodies)))

    return asyncio.run(run())


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus exposition text (0 when absent)."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return 0.0
