"""Relay edge (`serve --relay-publish URL`): the same intake, then the delivery goes to JetStream.

Why: a cluster the internet cannot reach still gets its webhooks if something reachable stores them
until the cluster asks. The edge is that something, and it must not be an open relay for whoever
finds its URL, nor lose what it said it took:

* the same admission as the receiver (route, method, size caps, provider detection, enabled and
  routed providers), the same capped, timed read into the shared memory budget;
* where the edge holds the route's secret (the config's `secrets.source`, usually a mounted
  folder: the edge has no Kubernetes API), the signature is checked and a forged delivery gets the
  receiver's own 401; with `secrets.gitRepoSecrets` on, a GitRepo's own spec.webhookSecret might
  sign what the route's secret does not, and only the cluster knows those, so such a body is
  passed on (within limits.unverifiedParseBytes) and judged there;
* 202 only once the broker acknowledged the message (file storage: it survives an edge or broker
  restart); anything else is a 503 with Retry-After, so a host that retries does.

What the edge cannot check: GitRepo secrets, which GitRepos match, whether a write would succeed.
The consumer answers all of that, verifying the signature again on the original bytes.
"""

from __future__ import annotations

import logging

import nats.errors
import nats.js.errors
from nats.js.api import PubAck

from controller import relay
from controller.body import Body
from controller.metrics import Metrics
from controller.pipeline import Admission, Answer, Pipeline, Refusal, busy
from controller.relay import BrokerUnavailable, Link, RelayedRequest
from controller.settings import Settings

log = logging.getLogger("fleet_webhook.relay")


class Publisher:
    """The edge's last step of a delivery: publish it and answer 202, or 503 when it was not stored."""

    def __init__(self, pipeline: Pipeline, link: Link, settings: Settings, metrics: Metrics) -> None:
        self.pipeline = pipeline
        self.link = link
        self.settings = settings
        self.metrics = metrics
        self._stream_ready = False

    async def ensure_stream(self) -> None:
        """Create or update the stream (the edge owns its limits); waits for the first connection."""
        await self.link.connected_once.wait()
        await relay.ensure_stream(self.link.jetstream(), self.settings, update=True)
        self._stream_ready = True

    async def complete(self, admission: Admission, body: Body) -> Answer:
        """In place of `Pipeline.complete` at the edge: check what can be checked, store, answer."""
        verified = await self.pipeline.edge_verdict(admission, body)  # raises the 401
        raw = await body.read()
        head = admission.head
        payload = relay.encode(RelayedRequest(head.method, admission.path, head.query, head.headers, raw))
        provider = admission.provider.name
        msg_id = relay.message_id(provider, admission.delivery, raw)
        ack = await self._publish(admission, payload, msg_id)
        self.metrics.relay_published.inc()
        answer = {
            "relayed": True,
            "provider": provider,
            "delivery": admission.delivery,
            "stream": ack.stream,
            "seq": ack.seq,
            "duplicate": bool(ack.duplicate),
            "verifiedAtEdge": verified,
        }
        log.info(
            "delivery relayed",
            extra={
                "provider": provider,
                "delivery": admission.delivery,
                "seq": ack.seq,
                "duplicate": bool(ack.duplicate),
                "bytes": len(raw),
                "verified_at_edge": verified,
            },
        )
        return Answer(202, answer, {}, "relayed", provider, admission.delivery)

    async def _publish(self, admission: Admission, payload: bytes, msg_id: str | None) -> PubAck:
        settings = self.settings
        try:
            js = self.link.jetstream(settings.relay_publish_timeout_seconds)
            max_payload = self.link.nc.max_payload if self.link.nc is not None else 0
            if max_payload and len(payload) > max_payload:
                reason = (
                    f"delivery of {len(payload)} bytes is over the relay broker's max_payload ({max_payload}); "
                    "raise max_payload in the nats-server config (docs/relay.md)"
                )
                raise admission.fail(Refusal(413, reason, "relay_too_large"))
            if not self._stream_ready:
                await self.ensure_stream()
            headers = {"Nats-Msg-Id": msg_id} if msg_id else None
            return await js.publish(
                settings.relay_subject,
                payload,
                timeout=settings.relay_publish_timeout_seconds,
                stream=settings.relay_stream,
                headers=headers,
            )
        except BrokerUnavailable as exc:
            raise self._unavailable(admission, str(exc)) from None
        except nats.js.errors.NoStreamResponseError:
            self._stream_ready = False  # a broker that lost its store: the stream is made again on the retry
            raise self._unavailable(admission, "the relay stream does not answer") from None
        except nats.js.errors.APIError as exc:
            full = "exceeded" in (exc.description or "")  # DiscardPolicy.NEW at max_bytes: "maximum bytes exceeded"
            reason = "the relay stream is full (relay max bytes)" if full else f"the relay broker refused it: {exc}"
            raise self._unavailable(admission, reason) from None
        except (TimeoutError, nats.errors.Error) as exc:
            raise self._unavailable(
                admission, f"no acknowledgement from the relay broker ({type(exc).__name__})"
            ) from None

    def _unavailable(self, admission: Admission, reason: str) -> Refusal:
        log.warning("delivery not relayed", extra={"delivery": admission.delivery, "reason": reason})
        return admission.fail(busy(f"not stored: {reason}; retry later", "relay_unavailable", 5))
