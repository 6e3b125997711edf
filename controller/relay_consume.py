"""Relay consumer (`serve --relay-consume URL`): pulls relayed deliveries and runs the normal pipeline.

Why this shape:

* outward connections only: a durable pull consumer, so the cluster needs no inbound port and its
  position in the stream survives restarts on either side;
* each message goes through `Pipeline.deliver`, exactly as an HTTP delivery would, with this
  cluster's secrets and GitRepo index: signatures are verified here, on the original bytes;
* acked only once the answer is final: 2xx, or 4xx (a permanent refusal: logged, acked, never
  retried forever); a 5xx (a GitRepo write failed, a Secret unreadable, busy) is nak'ed with a delay
  and comes back; after `--relay-max-deliver` attempts it is terminated with an error line;
* one message at a time, in stream order, so a backlog built while the cluster was offline is
  recorded in push order; a redelivered message is harmless (the delivery cache, the commit order
  and, with --shared-order, the GitRepo's ledger make a repeat an "unchanged", not a second write);
* a consumer killed between fetch and ack simply never acks: the broker redelivers after
  `--relay-ack-wait-seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from controller import relay
from controller.metrics import Metrics
from controller.pipeline import Answer, Pipeline, Receiver
from controller.providers.base import WebhookRequest
from controller.relay import BrokerUnavailable, EnvelopeError, Link
from controller.settings import Settings

log = logging.getLogger("fleet_webhook.relay")

FETCH_BATCH = 16
FETCH_WAIT_SECONDS = 5.0
RETRY_SECONDS = 2.0
MAX_NAK_DELAY_SECONDS = 60.0


def nak_delay(answer: Answer, attempt: int) -> float:
    """How long before a 5xx delivery is offered again: the answer's Retry-After, growing per attempt."""
    try:
        base = float(answer.headers.get("Retry-After", "5"))
    except ValueError:
        base = 5.0
    return min(MAX_NAK_DELAY_SECONDS, max(1.0, base) * attempt)


class Consumer:
    """The fetch loop and the per-message decision (ack, nak, term)."""

    def __init__(self, receiver: Receiver, link: Link, settings: Settings, metrics: Metrics) -> None:
        self.receiver = receiver
        self.pipeline = Pipeline(receiver)
        self.link = link
        self.settings = settings
        self.metrics = metrics
        self.stopping = asyncio.Event()
        self.busy = False  # a message is being processed (shutdown waits for it)

    async def run(self) -> None:
        """Until `stop`: wait for the index and the broker, bind the durable consumer, fetch, handle."""
        while not self.receiver.index.synced:  # noqa: ASYNC110 - a flag set by the watch callbacks
            await asyncio.sleep(0.1)
        await self.link.connected_once.wait()
        while not self.stopping.is_set():
            try:
                subscription = await self._bind(self.link.jetstream())
                await self._drain(subscription)
            except asyncio.CancelledError:
                raise
            except (BrokerUnavailable, nats.errors.Error, TimeoutError) as exc:
                log.warning("relay consumer waiting for the broker", extra={"error": f"{type(exc).__name__}: {exc}"})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), RETRY_SECONDS)
        await asyncio.Event().wait()  # stopped: idle until cancelled (returning would read as a crash)

    async def _bind(self, js: JetStreamContext) -> JetStreamContext.PullSubscription:
        """The stream (made if the edge has not yet) and the durable consumer with the current settings."""
        settings = self.settings
        await relay.ensure_stream(js, settings, update=False)  # the edge owns the stream's limits
        await js.add_consumer(settings.relay_stream, relay.consumer_config(settings))  # create or update
        subscription = await js.pull_subscribe_bind(durable=settings.relay_durable, stream=settings.relay_stream)
        log.info("relay consumer bound", extra={"stream": settings.relay_stream, "consumer": settings.relay_durable})
        return subscription

    async def _drain(self, subscription: JetStreamContext.PullSubscription) -> None:
        try:
            while not self.stopping.is_set():
                try:
                    messages = await subscription.fetch(FETCH_BATCH, timeout=FETCH_WAIT_SECONDS)
                except nats.errors.TimeoutError:
                    continue  # nothing queued
                for msg in messages:
                    if self.stopping.is_set():
                        return  # not acked: the broker offers it again after ack_wait
                    self.busy = True
                    try:
                        await self.handle(msg)
                    finally:
                        self.busy = False
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def handle(self, msg: Msg) -> str:
        """Run one message through the pipeline and settle it with the broker; returns the outcome."""
        meta = msg.metadata
        attempt = meta.num_delivered or 1
        try:
            request = relay.decode(msg.data)
        except EnvelopeError as exc:
            log.error(
                "relayed message is not a delivery; dropped", extra={"seq": meta.sequence.stream, "error": str(exc)}
            )
            await msg.term()
            return self._count("malformed")
        head = WebhookRequest(
            method=request.method, headers=dict(request.headers), body=request.body, query=dict(request.query)
        )
        try:
            answer = await self.pipeline.deliver(request.path, head)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug must not stop the queue: this message is retried, then given up
            log.exception("relayed delivery failed unexpectedly", extra={"seq": meta.sequence.stream})
            answer = Answer(500, {"error": "internal error"}, {"Retry-After": "5"}, "internal_error")
        if answer.status < 500:
            outcome = "accepted" if answer.status < 400 else "refused"
            await self._settle(msg.ack_sync)
        elif attempt >= self.settings.relay_max_deliver:
            outcome = "gave_up"
            await self._settle(msg.term)
        else:
            outcome = "retry"
            await self._settle(lambda: msg.nak(delay=nak_delay(answer, attempt)))
        level = logging.ERROR if outcome == "gave_up" else logging.INFO
        log.log(
            level,
            "relayed delivery consumed",
            extra={
                "seq": meta.sequence.stream,
                "attempt": attempt,
                "status": answer.status,
                "outcome": outcome,
                "provider": answer.provider,
                "delivery": answer.delivery,
                "queued_seconds": round(max(0.0, _age(meta)), 3),
            },
        )
        return self._count(outcome)

    async def _settle(self, action: Callable[[], Awaitable[Any]]) -> None:
        """Ack/nak/term; a broker gone meanwhile means the message comes back, which is harmless."""
        try:
            await action()
        except (nats.errors.Error, TimeoutError) as exc:
            log.warning(
                "relay acknowledgement not confirmed; it may be redelivered", extra={"error": type(exc).__name__}
            )

    def _count(self, outcome: str) -> str:
        self.metrics.relay_consumed.labels(outcome).inc()
        return outcome

    async def stop(self, within: float) -> None:
        """Fetch nothing more; give the message in progress up to `within` seconds to be settled."""
        self.stopping.set()
        deadline = asyncio.get_running_loop().time() + within
        while self.busy and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110 - a plain flag
            await asyncio.sleep(0.05)


def _age(meta: Msg.Metadata) -> float:
    """Seconds since the broker stored the message."""
    stamp = meta.timestamp
    return time.time() - stamp.timestamp() if stamp is not None else 0.0
