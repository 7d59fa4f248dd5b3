"""Prometheus metrics: requests by route and status, latency, database pool in use."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Paths that matched no route share one label, so scanners cannot grow the series count.
UNMATCHED = "<unmatched>"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class PoolCollector(Collector):
    """Reads the pool's figures at scrape time; the engine may not exist yet."""

    def __init__(self, in_use: Callable[[], int | None]) -> None:
        self._in_use = in_use

    def collect(self) -> Iterable[Metric]:
        value = self._in_use()
        gauge = GaugeMetricFamily(
            "db_pool_connections_in_use", "Database connections checked out of the pool"
        )
        gauge.add_metric([], float(value or 0))
        yield gauge


class Metrics:
    """One registry per app, so several apps (tests) never collide."""

    def __init__(self, pool_in_use: Callable[[], int | None]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests by route template, method and status code",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(PoolCollector(pool_in_use))
        # (route, method, status) -> its counter and histogram series: prometheus_client's
        # labels() converts, checks and locks on every call; these are looked up once.
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        key = (route, method, status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = (
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route, method),
            )
        series[0].inc()
        series[1].observe(seconds)


class MetricsMiddleware:
    """Pure ASGI middleware (no BaseHTTPMiddleware): times each request and counts its status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", UNMATCHED) if isinstance(route, BaseRoute) else UNMATCHED
            method = str(scope.get("method", ""))
            self.metrics.observe(label, method, status, time.perf_counter() - started)
