"""Prometheus metrics of one node (a registry per node, so several nodes can share a process)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

#: Upper bounds (seconds) of the request latency histogram.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
#: Label sets kept at most (intent names come from the registry, but stay bounded anyway).
MAX_SERIES = 10_000


class RequestStats(Collector):
    """Per-request counters kept as plain numbers and turned into Prometheus metrics when scraped.

    ``request_done`` runs on every RPC: prometheus_client's Counter and Histogram take a lock
    and walk their label machinery on each update (about 5 µs per request for the three series),
    while these are a few list and dict updates on the event loop's thread (the only writer).
    """

    def __init__(self) -> None:
        self._requests: dict[tuple[str, str], int] = {}
        self._errors: dict[tuple[str, str], int] = {}
        #: intent -> [count per bucket (not cumulative) ..., +Inf bucket, sum of seconds]
        self._latency: dict[str, list[float]] = {}

    def request_done(self, intent: str, status: str, code: int, seconds: float) -> None:
        """Count one answered request."""
        if len(self._requests) > MAX_SERIES or len(self._errors) > MAX_SERIES:
            self._requests.clear()
            self._errors.clear()
            self._latency.clear()
        key = (intent, status)
        self._requests[key] = self._requests.get(key, 0) + 1
        if status == "error":
            ekey = (intent, str(code))
            self._errors[ekey] = self._errors.get(ekey, 0) + 1
        hist = self._latency.get(intent)
        if hist is None:
            hist = self._latency[intent] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        hist[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        hist[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        """The three request metrics, as prometheus_client's Counter and Histogram would name them."""
        requests = CounterMetricFamily("cloudisense_requests", "RPC requests answered", labels=["intent", "status"])
        for (intent, status), n in list(self._requests.items()):
            requests.add_metric([intent, status], n)
        yield requests
        latency = HistogramMetricFamily("cloudisense_request_seconds", "RPC handling time", labels=["intent"])
        for intent, hist in list(self._latency.items()):
            cumulative = 0.0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip((*(str(float(b)) for b in LATENCY_BUCKETS), "+Inf"), hist[:-1], strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            latency.add_metric([intent], buckets, hist[-1])
        yield latency
        errors = CounterMetricFamily("cloudisense_request_errors", "RPC requests answered with an error",
                                     labels=["intent", "code"])
        for (intent, code), n in list(self._errors.items()):
            errors.add_metric([intent, code], n)
        yield errors


class Metrics:
    """Counters and histograms exported at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = RequestStats()
        self.registry.register(self.requests)
        self.clients = Gauge("cloudisense_connected_clients", "Open WebSocket connections", registry=self.registry)
        self.dropped = Counter(
            "cloudisense_events_dropped", "Events dropped because a client's queue was full", registry=self.registry
        )
        self.logins = Counter("cloudisense_logins", "Login attempts", ["outcome"], registry=self.registry)

    def request_done(self, intent: str, status: str, code: int, seconds: float) -> None:
        """Count one answered request (this runs on every RPC)."""
        self.requests.request_done(intent, status, code, seconds)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
