"""`fleet-webhook serve`: wires config, index, watchers, reloader and HTTP server, and shuts down cleanly.

Shutdown on SIGTERM/SIGINT: readiness turns false, the listener closes, in-flight deliveries get
up to `shutdown_grace_seconds` to finish, background Events are flushed, watchers stop, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from controller import polling, relay
from controller.api_pool import keep_warm
from controller.app import WebhookRunner, make_app, make_probe_app
from controller.body import BodyBudget
from controller.config import Config, default_config, load_file
from controller.dedupe import DeliveryCache
from controller.heap import freeze_once_synced
from controller.index import GitRepoIndex
from controller.kube import Kube, load_api_client
from controller.metrics import Metrics
from controller.pipeline import Pipeline, Receiver
from controller.relay import Link, RelayConfigError
from controller.relay_consume import Consumer
from controller.relay_publish import Publisher
from controller.reload import ConfigHolder, ConfigReloader, file_digest
from controller.secrets import SecretStore
from controller.settings import Settings
from controller.sync import IndexSync, keyer_for
from controller.updater import GitRepoUpdater

log = logging.getLogger("fleet_webhook.serve")

# Slow clients. aiohttp has no separate header-read timeout, but its keep-alive timer is armed as soon
# as a connection is accepted (and again after each response), and when it fires it closes the
# connection if no complete request head has arrived (aiohttp >= 3.10,
# `web_protocol.RequestHandler._process_keepalive`). So `keepalive_timeout` is the header timeout:
# a client that connects and sends nothing, or trickles its headers byte by byte (slow loris), is
# disconnected after HEADER_TIMEOUT_SECONDS, and idle keep-alive connections are bounded by the same
# value. Once the head is complete the handler runs and the body must arrive within
# `limits.readTimeoutSeconds` (408). After a 408/413 answer aiohttp keeps reading and discarding the
# unread body for `lingering_time` so the client sees the answer; LINGERING_SECONDS caps that.
# Request line and header sizes stay at aiohttp's limits (8190 bytes, 128 headers; larger is 400).
# tests/unit/test_bad_input.py proves these against the pinned aiohttp.
HEADER_TIMEOUT_SECONDS = 10.0
LINGERING_SECONDS = 2.0


# Graceful shutdown. aiohttp's `runner.cleanup()` marks every open connection as closing before it waits
# for handlers, and a closing connection stops reading: a delivery whose body was still arriving at
# SIGTERM could never complete (it got 408 once limits.readTimeoutSeconds ran out). So `serve` closes
# the listener itself, waits up to the grace period for the deliveries in progress (`Receiver.in_flight`
# counts them from before their body is read), and only then lets aiohttp close what is left; a handler
# still running at that point gets FINAL_CANCEL_SECONDS more. tests/integration/test_shutdown.py.
FINAL_CANCEL_SECONDS = 1.0


async def drain_deliveries(receiver: Receiver, within: float) -> None:
    """Wait until no delivery is in progress, for at most `within` seconds."""
    deadline = time.monotonic() + within
    while receiver.in_flight and time.monotonic() < deadline:  # noqa: ASYNC110 - a counter, not an event
        await asyncio.sleep(0.05)


def server_options(header_timeout: float = HEADER_TIMEOUT_SECONDS) -> dict[str, Any]:
    """Connection-level limits for aiohttp's request handler (see HEADER_TIMEOUT_SECONDS above)."""
    return {"keepalive_timeout": header_timeout, "lingering_time": LINGERING_SECONDS}


def initial_config(settings: Settings) -> tuple[Config, str]:
    """The config to start with (raises ConfigError: a bad file at start-up is fatal)."""
    if settings.config is None:
        return default_config(), ""
    return load_file(settings.config), file_digest(settings.config)


async def polling_fallback(receiver: Receiver, updater: GitRepoUpdater, stop: asyncio.Event) -> None:
    """Periodically remove the interval we set from GitRepos that stopped receiving webhooks."""
    while not stop.is_set():
        policy = receiver.holder.current.polling
        period = 60.0 if policy.fallback_after_seconds <= 0 else min(60.0, max(1.0, policy.fallback_after_seconds / 10))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), period)
        if stop.is_set() or not policy.manage or policy.fallback_after_seconds <= 0 or not receiver.index.synced:
            continue  # with manage off the controller may not patch GitRepos at all (the chart drops that right)
        now = time.time()
        for info in receiver.index:
            if polling.fallback_due(
                info, policy.fallback_after_seconds, now, updater.seen_at.get(info.ref), updater.started_at
            ):
                await updater.revert_polling(info)


@dataclass
class Components:
    """Everything `serve` runs, built once; tests build the same thing against their own cluster."""

    receiver: Receiver
    sync: IndexSync
    updater: GitRepoUpdater
    kube: Kube

    async def wait_synced(self, within: float = 30.0) -> None:
        """Wait until the GitRepo index has been listed (raises TimeoutError)."""
        async with asyncio.timeout(within):
            while not self.receiver.index.synced:  # noqa: ASYNC110 - a plain flag set by watch callbacks
                await asyncio.sleep(0.02)

    async def close(self) -> None:
        """Stop watchers, flush Events, release the API client."""
        await self.updater.drain(within=2.0)
        await self.receiver.parsers.close()
        self.sync.stop()
        await self.sync.join(5.0)
        self.kube.close()


def build(settings: Settings, config: Config, digest: str, kube: Kube) -> Components:
    """Wire the receiver's parts together; nothing is started yet except what `start` does."""
    holder = ConfigHolder(config, digest)
    metrics = Metrics()
    metrics.config_last_success.set(time.time())
    metrics.config_valid.set(1)
    kube.http.on_connection_opened = metrics.api_connections.inc
    index = GitRepoIndex(keyer_for(config.watch))

    updater = GitRepoUpdater(
        kube,
        metrics,
        index.upsert,
        index.get,
        shared_order=settings.shared_order,
        event_window=settings.event_interval_seconds,
    )
    secrets = SecretStore(kube.read_secret, settings.namespace, config.secrets.cache_seconds)
    receiver = Receiver(
        holder=holder,
        index=index,
        secrets=secrets,
        metrics=metrics,
        updater=updater,
        dedupe=DeliveryCache(config.limits.dedupe_seconds, config.limits.dedupe_entries),
        budget=body_budget(config, settings),
        shared_order=settings.shared_order,
    )
    sync = IndexSync(kube, index)
    holder.on_change(sync.on_config_change)
    holder.on_change(_limits_follower(receiver))
    return Components(receiver, sync, updater, kube)


def _limits_follower(receiver: Receiver) -> Callable[[Config, Config], None]:
    """A config-change callback that applies reloaded cache and memory limits to the running receiver."""

    def apply_limits(_old: Config, new: Config) -> None:
        receiver.secrets.ttl = new.secrets.cache_seconds
        receiver.dedupe.resize(new.limits.dedupe_seconds, new.limits.dedupe_entries)
        receiver.budget.resize(new.limits)

    return apply_limits


@dataclass
class Edge:
    """A relay edge (--relay-publish): the receiver's intake, no Kubernetes, a publisher at the end."""

    receiver: Receiver
    link: Link
    publisher: Publisher

    async def close(self) -> None:
        """Close the broker connection and the parse worker."""
        await self.receiver.parsers.close()
        await self.link.close()


async def _no_kubernetes(_namespace: str, _name: str) -> None:
    """The edge's Secret reader: it has no Kubernetes API, so every Kubernetes Secret is "not here"
    (a delivery then is judged by the cluster's consumer; a mounted folder source still verifies)."""
    return None


def build_edge(settings: Settings, config: Config, digest: str) -> Edge:
    """Wire a relay edge. Its GitRepo index stays empty and counts as synced: GitRepos are the cluster's."""
    metrics = Metrics()
    metrics.config_last_success.set(time.time())
    metrics.config_valid.set(1)
    index = GitRepoIndex(keyer_for(config.watch))
    index.synced = True
    receiver = Receiver(
        holder=ConfigHolder(config, digest),
        index=index,
        secrets=SecretStore(_no_kubernetes, settings.namespace, config.secrets.cache_seconds),
        metrics=metrics,
        updater=None,
        dedupe=DeliveryCache(config.limits.dedupe_seconds, config.limits.dedupe_entries),
        budget=body_budget(config, settings),
        relay_edge=True,
    )
    receiver.holder.on_change(_limits_follower(receiver))
    link = Link(settings, "edge")
    return Edge(receiver, link, Publisher(Pipeline(receiver), link, settings, metrics))


def build_consumer(settings: Settings, receiver: Receiver) -> tuple[Link, Consumer]:
    """The relay consumer (--relay-consume) in front of a receiver built by `build`."""
    link = Link(settings, "consumer")
    return link, Consumer(receiver, link, settings, receiver.metrics)


def body_budget(config: Config, settings: Settings) -> BodyBudget:
    """The one memory (and spool) budget of all request bodies in flight."""
    spool_dir = str(settings.spool_dir) if settings.spool_dir else None
    return BodyBudget.from_limits(config.limits, spool_dir)


def reload_callback(metrics: Metrics) -> Callable[[bool], None]:
    """Record a reload attempt's result in the metrics."""

    def on_reload(ok: bool) -> None:
        metrics.config_reloads.labels("success" if ok else "failure").inc()
        metrics.config_valid.set(1 if ok else 0)
        if ok:
            metrics.config_last_success.set(time.time())

    return on_reload


async def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code.

    Three roles: the receiver (default), a relay edge (--relay-publish: no Kubernetes API at all) and
    a receiver that also consumes relayed deliveries (--relay-consume). docs/relay.md.
    """
    config, digest = initial_config(settings)
    loop = asyncio.get_running_loop()
    parts: Components | None = None
    edge: Edge | None = None
    consumer: Consumer | None = None
    link: Link | None = None
    try:
        if settings.relay_publish:
            edge = build_edge(settings, config, digest)
            receiver, link = edge.receiver, edge.link
        else:
            parts = build(settings, config, digest, Kube(load_api_client(settings.kubeconfig)))
            receiver = parts.receiver
            if settings.relay_consume:
                link, consumer = build_consumer(settings, receiver)
    except RelayConfigError as exc:
        log.error("relay settings rejected", extra={"error": str(exc)})
        return 2
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    if parts is not None:
        parts.sync.start(config.watch)
    await receiver.parsers.start()
    separate_probes = settings.probe_port is not None and settings.probe_port != settings.port
    app = make_app(receiver, probes=not separate_probes, complete=edge.publisher.complete if edge else None)
    probe_runner: web.AppRunner | None = None
    if separate_probes:
        probe_runner = WebhookRunner(make_probe_app(receiver), handle_signals=False, access_log=None)
        await probe_runner.setup()
        await web.TCPSite(probe_runner, settings.host, settings.probe_port, reuse_address=True).start()
    runner = WebhookRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=FINAL_CANCEL_SECONDS,  # the grace period itself is `drain_deliveries`
        **server_options(),
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, backlog=512, reuse_address=True)
    await site.start()
    log.info(
        "serving",
        extra={
            "host": settings.host,
            "port": settings.port,
            "probe_port": settings.probe_port if separate_probes else settings.port,
            "namespace": settings.namespace,
            "config": config.source,
            "summary": config.summary(),
            "role": "relay edge" if edge else "relay consumer" if consumer else "receiver",
        },
    )
    # Not a supervised background task: it ends by design once it has run.
    freezing = asyncio.create_task(freeze_once_synced(parts.receiver.index if parts else None), name="heap-freeze")
    background = receiver.background
    if parts is not None:
        background.start("polling fallback", polling_fallback(receiver, parts.updater, stop))
        if settings.api_warm_connections:
            background.start("API connection pool", keep_warm(parts.kube.http, settings.api_warm_connections))
    if link is not None:
        background.start("relay link", link.run(edge.publisher.ensure_stream if edge else None))
        background.start("relay queue metrics", relay.report_queue(link, receiver.metrics.relay_queue))
    if consumer is not None:
        background.start("relay consumer", consumer.run())
    reloader = None
    if settings.config is not None:
        reloader = ConfigReloader(settings.config, receiver.holder, reload_callback(receiver.metrics))
        background.start("config reloader", reloader.run())

    await stop.wait()
    freezing.cancel()
    receiver.accepting = False  # /readyz now answers 503
    if settings.shutdown_delay_seconds > 0:
        # Keep serving while Kubernetes removes the pod from the Service's endpoints; a delivery routed
        # here in the meantime would otherwise be refused, and GitHub does not retry.
        log.info("shutting down: not ready, still serving", extra={"delay_seconds": settings.shutdown_delay_seconds})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.Event().wait(), settings.shutdown_delay_seconds)
    log.info("shutting down: finishing in-flight deliveries", extra={"grace_seconds": settings.shutdown_grace_seconds})
    if reloader is not None:
        reloader.stop()
    if consumer is not None:  # the message in progress is settled; the rest waits in the stream
        await consumer.stop(settings.shutdown_grace_seconds)
    await site.stop()  # no new connections; open ones are still read (see FINAL_CANCEL_SECONDS)
    await drain_deliveries(receiver, settings.shutdown_grace_seconds)
    await runner.cleanup()  # closes idle keep-alive connections, cancels what is still running
    if probe_runner is not None:
        await probe_runner.cleanup()  # last, so /readyz kept saying "not ready" until the end
    await background.stop()
    if link is not None:
        await link.close()  # after the consumer, so its last ack is flushed
    if parts is not None:
        await parts.close()
    if edge is not None:
        await edge.receiver.parsers.close()
    log.info("stopped")
    return 0
