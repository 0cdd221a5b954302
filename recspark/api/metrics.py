"""The service's Prometheus metrics (``GET /metrics``), in a registry of its own."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

# Request latency inside the service, in seconds: fine below the 5 ms aim, coarse above.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
RELOAD_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST
# The impression sink's counters (api/impressions.py) that count lists dropped, by cause.
IMPRESSION_DROPS = {
    "dropped_queue_full": "queue full",
    "dropped_write_failed": "write failed",
    "dropped_at_close": "at shutdown",
}


class ImpressionCollector(Collector):
    """The impression sink's totals, read from the sink when scraped."""

    def __init__(self, counters: Callable[[], dict[str, Any]]) -> None:
        self.counters = counters

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        counts = self.counters()
        yield CounterMetricFamily(
            "recspark_api_impressions_offered",
            "Served lists handed to the impression log",
            value=counts["offered"],
        )
        yield CounterMetricFamily(
            "recspark_api_impressions_written",
            "Impressions written to the ingest source",
            value=counts["written"],
        )
        dropped = CounterMetricFamily(
            "recspark_api_impressions_dropped",
            "Impressions dropped, by reason (the request never waits for the log)",
            labels=["reason"],
        )
        for counter, reason in IMPRESSION_DROPS.items():
            dropped.add_metric([reason], counts[counter])
        yield dropped
        yield GaugeMetricFamily(
            "recspark_api_impressions_queued", "Impressions waiting to be written", value=counts["queued"]
        )


class ServiceMetrics:
    """Requests by endpoint and status, their latency, and per table the version held, its rows,
    the age of its newest commit, and reloads (full or incremental) with their time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # memory and CPU of the service process
        self.requests = Counter(
            "recspark_api_requests",
            "Requests answered, by endpoint and HTTP status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "recspark_api_request_seconds",
            "Time from a request reaching its endpoint to its response, by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.fallback_lists = Counter(
            "recspark_api_fallback_lists",
            "Lists served from the fallback list (a user or item without a list of its own)",
            ["endpoint"],
            registry=self.registry,
        )
        self.table_version = Gauge(
            "recspark_api_table_version",
            "Delta version of the table held in memory",
            ["table"],
            registry=self.registry,
        )
        self.table_rows = Gauge(
            "recspark_api_table_rows", "Rows of the table held in memory", ["table"], registry=self.registry
        )
        self.commit_age = Gauge(
            "recspark_api_newest_commit_age_seconds",
            "Seconds since the newest commit of the table the service has seen",
            ["table"],
            registry=self.registry,
        )
        self.reloads = Counter(
            "recspark_api_reloads",
            "Table versions brought into memory: kind full (the table read again) or incremental "
            "(its change feed applied), outcome ok or error",
            ["table", "kind", "outcome"],
            registry=self.registry,
        )
        self.reload_seconds = Histogram(
            "recspark_api_reload_seconds",
            "Time to bring a new table version into memory, by table and kind",
            ["table", "kind"],
            buckets=RELOAD_BUCKETS,
            registry=self.registry,
        )

        self.impressions_not_logged = Counter(
            "recspark_api_impressions_not_logged",
            "Lists answered that are no impression: no user named (a similar-items request without "
            "user_id) or no items",
            ["reason"],
            registry=self.registry,
        )

    def follow_impressions(self, counters: Callable[[], dict[str, Any]]) -> None:
        """Report the impression sink's counters (read when scraped)."""
        self.registry.register(ImpressionCollector(counters))

    def request_observer(self, endpoint: str) -> Callable[[int, float], None]:
        """A cheap recorder of one endpoint's requests: (status, seconds)."""
        latency = self.latency.labels(endpoint)
        by_status: dict[int, Counter] = {}

        def observe(status: int, seconds: float) -> None:
            counter = by_status.get(status)
            if counter is None:
                counter = by_status[status] = self.requests.labels(endpoint, str(status))
            counter.inc()
            latency.observe(seconds)

        return observe

    def follow_commit_age(self, table: str, newest_commit_at: Callable[[], float | None]) -> None:
        """Report the age of the table's newest commit, computed when scraped."""

        def age() -> float:
            at = newest_commit_at()
            return float("nan") if at is None else time.time() - at

        self.commit_age.labels(table).set_function(age)

    def table_loaded(self, table: str, version: int, rows: int) -> None:
        self.table_version.labels(table).set(version)
        self.table_rows.labels(table).set(rows)

    def reloaded(self, table: str, kind: str, ok: bool, seconds: float) -> None:
        self.reloads.labels(table, kind, "ok" if ok else "error").inc()
        if ok:
            self.reload_seconds.labels(table, kind).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
