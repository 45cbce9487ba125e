"""Prometheus metrics of the rerank service (prometheus-client).

Each application gets its own registry. When ``PROMETHEUS_MULTIPROC_DIR`` is set (``serve
--workers N`` sets it), prometheus-client keeps the values in files shared by the worker
processes and ``/metrics`` answers with the sum over all workers, whichever worker serves it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (0, 1, 5, 10, 20, 50, 100, 200, 500, 1000)
WINDOW_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 32, 64)
UNMATCHED_ROUTE = "unmatched"


def multiprocess_mode() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


ROUTE_METHOD_STATUS = ("route", "method", "status")
M = TypeVar("M", Counter, Gauge, Histogram)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)

        def metric(kind: type[M], name: str, documentation: str, labels: tuple[str, ...] = (), **options: Any) -> M:
            return kind(name, documentation, labels, registry=self.registry, **options)

        self.requests = metric(Counter, "lrt_rerank_requests", "HTTP requests by route, method and status.", ROUTE_METHOD_STATUS)
        self.latency = metric(Histogram, "lrt_rerank_request_duration_seconds", "HTTP request latency by route, method and status.", ROUTE_METHOD_STATUS, buckets=LATENCY_BUCKETS)
        self.in_progress = metric(Gauge, "lrt_rerank_requests_in_progress", "HTTP requests being served, by route.", ("route",), multiprocess_mode="livesum")
        self.batch_size = metric(Histogram, "lrt_rerank_batch_size", "Documents per rerank request.", buckets=BATCH_BUCKETS)
        self.score_seconds = metric(Histogram, "lrt_rerank_score_duration_seconds", "Time to score one request's documents (cache look-ups and model).", buckets=LATENCY_BUCKETS)
        self.scoring_errors = metric(Counter, "lrt_rerank_scoring_errors", "Rerank requests whose scoring failed (answered 503 with Retry-After), by exception type.", ("error",))
        self.scoring_slots = metric(
            Gauge, "lrt_rerank_scoring_slots",
            "Requests a worker scores at the same time (--max-concurrent-scoring); the rest queue.", multiprocess_mode="max",
        )
        self.scoring_in_progress = metric(Gauge, "lrt_rerank_scoring_in_progress", "Requests being scored now (holding a scoring slot).", multiprocess_mode="livesum")
        self.scoring_in_progress_peak = metric(
            Gauge, "lrt_rerank_scoring_in_progress_peak",
            "Most requests a worker has scored at the same time since it started (at most lrt_rerank_scoring_slots).", multiprocess_mode="max",
        )
        self.cache_hits = metric(Counter, "lrt_rerank_cache_hits", "Score cache hits by tier.", ("tier",))
        self.cache_misses = metric(Counter, "lrt_rerank_cache_misses", "Score cache misses by tier.", ("tier",))
        self.cache_evictions = metric(Counter, "lrt_rerank_cache_evictions", "Entries evicted from the in-process score cache.")
        self.cache_entries = metric(Gauge, "lrt_rerank_cache_entries", "Entries in the in-process score cache.", multiprocess_mode="livesum")
        self.redis_errors = metric(Counter, "lrt_rerank_redis_errors", "Redis failures (each starts a back-off period).")
        self.model_info = metric(
            Gauge, "lrt_rerank_model_info",
            "The served model: name, sha256 of model.onnx and maximum sequence length (value is 1).", ("name", "sha256", "max_length"), multiprocess_mode="max",
        )
        self.tokens_dropped = metric(Counter, "lrt_rerank_tokens_dropped", "Document tokens that no scored window read (truncated, past max_windows or max_tokens_per_doc).")
        self.documents_truncated = metric(Counter, "lrt_rerank_documents_truncated", "Documents with tokens that no scored window read.")
        self.windows_per_document = metric(Histogram, "lrt_rerank_windows_per_document", "Windows (model pairs) scored per document: 1 under truncation.", buckets=WINDOW_BUCKETS)
        self.document_cache_hits = metric(
            Counter, "lrt_rerank_document_cache_hits",
            "Late-interaction document token matrices found in the document cache, by tier (not encoded).", ("tier",),
        )
        self.document_cache_misses = metric(
            Counter, "lrt_rerank_document_cache_misses",
            "Late-interaction documents found in no tier of the document cache (encoded by the model).",
        )
        self.document_cache_evictions = metric(Counter, "lrt_rerank_document_cache_evictions", "Entries evicted from the in-process document cache.")
        self.document_cache_bytes = metric(
            Gauge, "lrt_rerank_document_cache_bytes",
            "Bytes of packed fp16 token matrices in the in-process document cache (at most --document-cache-mib).", multiprocess_mode="livesum",
        )
        self.document_cache_entries = metric(Gauge, "lrt_rerank_document_cache_entries", "Documents in the in-process document cache.", multiprocess_mode="livesum")
        self._seen: dict[str, int] = {}
        self._seen_lock = threading.Lock()

    def set_model(self, name: str, sha256: str, max_length: int) -> None:
        self.model_info.labels(name=name, sha256=sha256, max_length=str(max_length)).set(1)

    def count_reads(self, tokens_dropped: int, documents_truncated: int, windows_per_document: tuple[int, ...]) -> None:
        """Count what one request read of its documents."""
        if tokens_dropped > 0:
            self.tokens_dropped.inc(tokens_dropped)
        if documents_truncated > 0:
            self.documents_truncated.inc(documents_truncated)
        for w in windows_per_document:
            self.windows_per_document.observe(w)

    def mirror_cache(self, local: dict[str, int], redis: dict[str, int] | None) -> None:
        """Add what the caches counted since the last call to the Prometheus counters."""
        with self._seen_lock:
            self._add("local_hits", local["hits"], self.cache_hits.labels(tier="local"))
            self._add("local_misses", local["misses"], self.cache_misses.labels(tier="local"))
            self._add("local_evictions", local["evictions"], self.cache_evictions)
            if redis is not None:
                self._add("redis_hits", redis["hits"], self.cache_hits.labels(tier="redis"))
                self._add("redis_misses", redis["misses"], self.cache_misses.labels(tier="redis"))
                self._add("redis_errors", redis["errors"], self.redis_errors)
        self.cache_entries.set(local["len"])

    def mirror_document_cache(self, stats: dict[str, int]) -> None:
        """Add what the document cache (:meth:`lrt_rerank.late.cache.DocumentCache.stats`) counted since the last call."""
        with self._seen_lock:
            self._add("document_hits", stats["hits"], self.document_cache_hits.labels(tier="local"))
            self._add("document_shared_hits", stats["shared_hits"], self.document_cache_hits.labels(tier="redis"))
            self._add("document_misses", stats["misses"], self.document_cache_misses)
            self._add("document_evictions", stats["evictions"], self.document_cache_evictions)
        self.document_cache_bytes.set(stats["bytes"])
        self.document_cache_entries.set(stats["entries"])

    def _add(self, name: str, total: int, counter: Counter) -> None:
        delta = total - self._seen.get(name, 0)
        if delta > 0:
            counter.inc(delta)
        self._seen[name] = total

    def exposition(self) -> tuple[bytes, str]:
        if multiprocess_mode():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def close(self) -> None:
        if multiprocess_mode():
            multiprocess.mark_process_dead(os.getpid())


class HttpMiddleware:
    """An ASGI middleware: HTTP requests go to :meth:`handle`, anything else (lifespan) straight to the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class MetricsMiddleware(HttpMiddleware):
    """Counts and times every HTTP request by route, method and final status (ASGI middleware)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, routes: frozenset[str]) -> None:
        super().__init__(app)
        self.metrics = metrics
        self.routes = routes

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = scope["path"] if scope["path"] in self.routes else UNMATCHED_ROUTE
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        gauge = self.metrics.in_progress.labels(route=route)
        gauge.inc()
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send_status)
        finally:
            gauge.dec()
            labels = {"route": route, "method": scope["method"], "status": str(status)}
            self.metrics.requests.labels(**labels).inc()
            self.metrics.latency.labels(**labels).observe(time.perf_counter() - start)
