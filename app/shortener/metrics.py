"""Prometheus metrics. Names and labels are an interface: the infra's alert rules read them, and
app/README.md documents them. Change them only together."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import __version__
from .cache import TTLCache

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED_ROUTE = "<unmatched>"


class _StateCollector(Collector):
    """Read at scrape time: the pool's and the cache's own counters, so nothing drifts."""

    def __init__(self, cache: TTLCache[Any], pool_stats: Callable[[], dict[str, int]]) -> None:
        self.cache = cache
        self.pool_stats = pool_stats

    def collect(self) -> Iterator[Metric]:
        c = self.cache
        yield CounterMetricFamily(
            "app_cache_hits", "Redirect lookups answered from the cache.", value=c.hits
        )
        yield CounterMetricFamily(
            "app_cache_misses", "Redirect lookups that went to the database.", value=c.misses
        )
        yield CounterMetricFamily(
            "app_cache_evictions",
            "Cache entries evicted because the cache was full.",
            value=c.evictions,
        )
        yield GaugeMetricFamily("app_cache_entries", "Entries in the cache.", value=len(c))
        yield GaugeMetricFamily(
            "app_cache_max_entries", "Configured cache capacity.", value=c.max_entries
        )

        s = self.pool_stats()
        yield GaugeMetricFamily(
            "app_db_pool_size",
            "Connections held by the pool (idle, in use or being opened).",
            value=s.get("pool_size", 0),
        )
        yield GaugeMetricFamily(
            "app_db_pool_available",
            "Idle connections ready in the pool.",
            value=s.get("pool_available", 0),
        )
        yield GaugeMetricFamily(
            "app_db_pool_in_use",
            "Connections lent to requests right now.",
            value=max(s.get("pool_size", 0) - s.get("pool_available", 0), 0),
        )
        yield GaugeMetricFamily(
            "app_db_pool_max_size", "Configured pool maximum.", value=s.get("pool_max", 0)
        )
        yield GaugeMetricFamily(
            "app_db_pool_requests_waiting",
            "Requests queued waiting for a connection.",
            value=s.get("requests_waiting", 0),
        )
        yield CounterMetricFamily(
            "app_db_pool_connection_errors",
            "Failed attempts to open a database connection.",
            value=s.get("connections_errors", 0),
        )
        yield CounterMetricFamily(
            "app_db_pool_request_timeouts",
            "Requests that gave up waiting for a connection.",
            value=s.get("requests_errors", 0),
        )


class Metrics:
    """One registry per app instance (tests build several apps in one process)."""

    def __init__(self, cache: TTLCache[Any], pool_stats: Callable[[], dict[str, int]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency by route template, method and status.",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_progress = Gauge(
            "http_requests_in_progress", "HTTP requests being served now.", registry=r
        )
        self.ready = Gauge(
            "app_ready",
            "1 when the last readiness check reached the database, else 0.",
            registry=r,
        )
        self.links_created = Counter("app_links_created_total", "Short links created.", registry=r)
        self.redirects = Counter("app_redirects_total", "Redirects served.", registry=r)
        self.db_errors = Counter(
            "app_db_errors_total",
            "Requests answered 503 because the database failed.",
            ["operation"],
            registry=r,
        )
        self.clicks_pending = Gauge(
            "app_clicks_pending", "Click counts buffered in memory, not yet written.", registry=r
        )
        info = Gauge("app_info", "Build information.", ["version"], registry=r)
        info.labels(version=__version__).set(1)
        r.register(_StateCollector(cache, pool_stats))

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        labels = (route, method, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
