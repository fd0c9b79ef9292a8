"""Prometheus metrics of one node (a registry per node, so several nodes can share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    """Counters and histograms exported at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cloudisense_requests", "RPC requests answered", ["intent", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "cloudisense_request_seconds", "RPC handling time", ["intent"], registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.errors = Counter(
            "cloudisense_request_errors", "RPC requests answered with an error", ["intent", "code"],
            registry=self.registry,
        )
        self.clients = Gauge("cloudisense_connected_clients", "Open WebSocket connections", registry=self.registry)
        self.dropped = Counter(
            "cloudisense_events_dropped", "Events dropped because a client's queue was full", registry=self.registry
        )
        self.logins = Counter("cloudisense_logins", "Login attempts", ["outcome"], registry=self.registry)
        self._children: dict[tuple[str, str], tuple] = {}

    def request_done(self, intent: str, status: str, code: int, seconds: float) -> None:
        """Count one answered request (label children are cached: this runs on every RPC)."""
        key = (intent, status)
        children = self._children.get(key)
        if children is None:
            if len(self._children) > 10_000:  # intent names come from the registry, but stay bounded anyway
                self._children.clear()
            children = self._children[key] = (self.requests.labels(intent, status), self.latency.labels(intent))
        children[0].inc()
        children[1].observe(seconds)
        if status == "error":
            self.errors.labels(intent, str(code)).inc()

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
