"""Prometheus metrics. Names and labels are an interface: the infra's alert rules read them, and
app/README.md documents them. Change them only together.

Served on their own port (METRICS_PORT, see __main__.py), never on the app's: the load balancer
forwards to the app's port only."""

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

    def __init__(
        self,
        cache: TTLCache[Any],
        pool_stats: Callable[[], dict[str, int]],
        store: Any = None,
        clicks: Any = None,
    ) -> None:
        self.cache = cache
        self.pool_stats = pool_stats
        self.store = store
        self.clicks = clicks

    def collect(self) -> Iterator[Metric]:
        if self.store is not None:
            state, creds = self.store.state, self.store.credentials
            yield GaugeMetricFamily(
                "app_db_up",
                "1 when the last database check (or query) succeeded, else 0.",
                value=1 if state.up else 0,
            )
            yield CounterMetricFamily(
                "app_db_check_failures",
                "Background database checks that failed (down, unreachable, refused, slow).",
                value=state.check_failures,
            )
            yield GaugeMetricFamily(
                "app_db_schema_version",
                "Schema version the last database check read.",
                value=state.schema_version,
            )
            yield CounterMetricFamily(
                "app_db_auth_failures",
                "Database logins refused (a rotated password not yet re-read).",
                value=creds.auth_failures,
            )
            reads = CounterMetricFamily(
                "app_db_credential_reads",
                "Reads of the rotating database secret, by result.",
                labels=["result"],
            )
            reads.add_metric(["ok"], creds.reads_ok)
            reads.add_metric(["failed"], creds.reads_failed)
            yield reads
        if self.clicks is not None:
            yield GaugeMetricFamily(
                "app_clicks_pending",
                "Click counts buffered in memory, not yet written.",
                value=len(self.clicks.pending),
            )
            yield CounterMetricFamily(
                "app_clicks_dropped",
                "Clicks not counted because the buffer was full (database down too long).",
                value=self.clicks.dropped,
            )
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

    def __init__(
        self,
        cache: TTLCache[Any],
        pool_stats: Callable[[], dict[str, int]],
        store: Any = None,
        clicks: Any = None,
    ) -> None:
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
            "1 when /readyz answers 200 (started, schema current, not shutting down), else 0. "
            "Does not follow the database: app_db_up does.",
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
        self.stale_redirects = Counter(
            "app_redirects_stale_total",
            "Redirects served from a cache entry past its TTL because the database was down.",
            registry=r,
        )
        self.expired = Counter(
            "app_links_expired_total",
            "Redirects refused (410) because the link expired.",
            registry=r,
        )
        info = Gauge("app_info", "Build information.", ["version"], registry=r)
        info.labels(version=__version__).set(1)
        r.register(_StateCollector(cache, pool_stats, store, clicks))

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        labels = (route, method, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
