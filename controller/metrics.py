"""Prometheus metrics, one registry per app so tests and several apps in one process stay apart."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from controller.polling import parse_time

PREFIX = "fleet_webhook"

# (GitRepo namespace, GitRepo name, its status.lastWebhookTime as the API server returns it).
WebhookTime = tuple[str, str, str]


class LastWebhookTimes(Collector):
    """`fleet_webhook_gitrepo_last_webhook_timestamp_seconds`: one series per GitRepo that ever got a webhook.

    The values are the GitRepos' own `status.lastWebhookTime` (written by any receiver, Fleet's
    included), handed over as a snapshot of the index at each scrape. That makes them survive a
    restart and agree between replicas, and a deleted GitRepo's series ends with the next scrape,
    where a labelled Gauge would keep reporting it forever. The labels are `gitrepo_namespace`, not
    `namespace`, which Prometheus sets to the scraped pod's namespace. The times are parsed in
    `collect`, so the loop thread only copies strings and the rendering thread does the work.
    """

    name = f"{PREFIX}_gitrepo_last_webhook_timestamp_seconds"
    documentation = "Unix time of the GitRepo's status.lastWebhookTime (GitRepos that got a webhook)."
    labels = ("gitrepo_namespace", "gitrepo")

    def __init__(self) -> None:
        self._times: tuple[WebhookTime, ...] = ()

    def replace(self, times: Iterable[WebhookTime]) -> None:
        """Swap in a new snapshot (the loop thread owns the index; a scrape only reads this tuple)."""
        self._times = tuple(times)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(self.name, self.documentation, labels=self.labels)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        for namespace, name, text in self._times:
            stamp = parse_time(text)
            if stamp is not None:  # an unreadable time is left out rather than exported as 0 (1970)
                family.add_metric((namespace, name), stamp)
        yield family


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
        self.paths_rule = Counter(
            f"{PREFIX}_paths_rule",
            "Monorepo paths rule verdicts per GitRepo and push, by outcome (skipped = a Job saved).",
            ["outcome"],
            registry=r,
        )
        self.gitrepo_write_failures = Counter(
            f"{PREFIX}_gitrepo_write_failures",
            "GitRepo writes that failed after retries.",
            ["reason"],
            registry=r,
        )
        self.write_conflicts = Counter(
            f"{PREFIX}_gitrepo_write_conflicts",
            "Conditional GitRepo writes refused with 409 (the object changed since it was read: Fleet's "
            "controller, another replica, a user); each is re-read and decided again. By write: status, "
            "ledger (--shared-order), polling (spec.pollingInterval).",
            ["write"],
            registry=r,
        )
        self.api_write_seconds = Histogram(
            f"{PREFIX}_api_write_seconds",
            "Latency of one GitRepo status write, retries included.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.api_connections = Counter(
            f"{PREFIX}_api_connections_opened_total",
            "TCP (and TLS) connections opened to the API server for GitRepo and Event writes and Secret "
            "reads. Each is a handshake on some delivery's path; a steady rise means the pool is too small "
            "or connections are being dropped.",
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
        self.last_webhook = LastWebhookTimes()
        r.register(self.last_webhook)
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

        # Relay mode (docs/relay.md). The edge counts what it stored; the consumer what it took and how
        # it ended; both report the durable consumer's backlog (the edge also while the cluster is away).
        self.relay_published = Counter(
            f"{PREFIX}_relay_published",
            "Deliveries the relay edge stored in the JetStream stream (answered 202), duplicates included.",
            registry=r,
        )
        self.relay_consumed = Counter(
            f"{PREFIX}_relay_consumed",
            "Relayed deliveries the consumer ran through the pipeline, by outcome: accepted (2xx, acked), "
            "refused (4xx, acked: a permanent answer), retry (5xx, redelivered later), gave_up (5xx on the "
            "last allowed attempt, terminated), malformed (not a relay message, terminated).",
            ["outcome"],
            registry=r,
        )
        self.relay_queue_depth = Gauge(
            f"{PREFIX}_relay_queue_depth",
            "Relayed deliveries the durable consumer has not acknowledged yet (pending + in flight).",
            registry=r,
        )
        self.relay_oldest_age = Gauge(
            f"{PREFIX}_relay_oldest_age_seconds",
            "Age of the oldest relayed delivery not acknowledged yet (0 when none).",
            registry=r,
        )

    def relay_queue(self, depth: int, oldest_age: float) -> None:
        """Record the relay consumer's backlog (relay.report_queue)."""
        self.relay_queue_depth.set(depth)
        self.relay_oldest_age.set(oldest_age)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
