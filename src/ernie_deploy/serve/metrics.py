"""Prometheus metrics of one app: requests, latency, batch sizes, queue depth, tokens."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from ernie_deploy.serve.batcher import BatchStats

PREFIX = "ernie_deploy"
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """The app's collectors, in a registry of its own (several apps may live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_requests",
            "HTTP requests by route and status.",
            ["route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "HTTP request latency by route.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            f"{PREFIX}_queue_depth", "Requests waiting or running, by model.", ["model"], registry=r
        )
        self.batch_rows = Histogram(
            f"{PREFIX}_batch_size",
            "Rows (sequences) per session.run, by model.",
            ["model"],
            buckets=_SIZE_BUCKETS,
            registry=r,
        )
        self.batch_requests = Histogram(
            f"{PREFIX}_batch_requests",
            "Requests merged into one session.run, by model.",
            ["model"],
            buckets=_SIZE_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            f"{PREFIX}_batch_duration_seconds",
            "session.run time per batch, by model.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            f"{PREFIX}_tokens",
            "Tokens run through the model (no padding), by model.",
            ["model"],
            registry=r,
        )
        self.padded_tokens = Counter(
            f"{PREFIX}_padded_tokens",
            "Tokens run including padding, by model.",
            ["model"],
            registry=r,
        )
        self.rejected = Counter(
            f"{PREFIX}_rejected",
            "Requests answered 429 (queue full), by model.",
            ["model"],
            registry=r,
        )

    def batch_observer(self, model: str) -> Any:
        """A Batcher `on_batch` callback recording into this model's series."""
        rows = self.batch_rows.labels(model)
        requests = self.batch_requests.labels(model)
        seconds = self.batch_seconds.labels(model)
        tokens = self.tokens.labels(model)
        padded = self.padded_tokens.labels(model)

        def observe(stats: BatchStats) -> None:
            rows.observe(stats.rows)
            requests.observe(stats.requests)
            seconds.observe(stats.seconds)
            tokens.inc(stats.tokens)
            padded.inc(stats.padded_tokens)

        return observe

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """ASGI middleware counting every HTTP request by route template and status, with latency."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
