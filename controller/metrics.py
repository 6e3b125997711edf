"""Prometheus metrics, one registry per app so tests and several apps in one process stay apart."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

PREFIX = "fleet_webhook"


class Metrics:
    """Every metric the receiver exports. Labels never carry secrets or payload-controlled text."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_requests",
            "Deliveries answered, by provider, route, outcome and status code.",
            ["provider", "route", "outcome", "code"],
            registry=r,
        )
        self.verification_failures = Counter(
            f"{PREFIX}_verification_failures",
            "Deliveries refused because credentials were missing or wrong.",
            ["provider", "reason"],
            registry=r,
        )
        self.gitrepos_updated = Counter(
            f"{PREFIX}_gitrepos_updated",
            "GitRepos whose status.webhookCommit was written.",
            ["provider"],
            registry=r,
        )
        self.gitrepo_write_failures = Counter(
            f"{PREFIX}_gitrepo_write_failures",
            "GitRepo writes that failed after retries.",
            ["reason"],
            registry=r,
        )
        self.api_write_seconds = Histogram(
            f"{PREFIX}_api_write_seconds",
            "Latency of one GitRepo status write, retries included.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.request_seconds = Histogram(
            f"{PREFIX}_request_seconds",
            "Time to answer a delivery.",
            ["provider"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=r,
        )
        self.index_size = Gauge(f"{PREFIX}_index_gitrepos", "GitRepos in the in-memory index.", registry=r)
        self.index_synced = Gauge(f"{PREFIX}_index_synced", "1 once the GitRepo index has been listed.", registry=r)
        self.config_reloads = Counter(
            f"{PREFIX}_config_reloads",
            "Config reload attempts by result.",
            ["result"],
            registry=r,
        )
        self.config_last_success = Gauge(
            f"{PREFIX}_config_last_success_timestamp_seconds",
            "When a config was last loaded.",
            registry=r,
        )
        self.config_valid = Gauge(
            f"{PREFIX}_config_last_reload_valid",
            "0 when the newest config file was rejected (the old one serves).",
            registry=r,
        )
        self.dedupe_hits = Counter(
            f"{PREFIX}_dedupe_hits",
            "Deliveries answered from the delivery-id cache without writing.",
            ["provider"],
            registry=r,
        )
        self.polling_changes = Counter(
            f"{PREFIX}_polling_interval_changes",
            "pollingInterval set or reverted by the polling policy.",
            ["action"],
            registry=r,
        )
        self.unauthenticated = Counter(
            f"{PREFIX}_unauthenticated_accepted",
            "Deliveries accepted without a secret (allowUnauthenticated).",
            ["provider"],
            registry=r,
        )

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
