"""Relay mode's shared parts: what a delivery becomes on the broker, and the NATS link both roles hold.

Why relay at all: many Fleet clusters cannot accept inbound webhooks. An edge process on the internet
(`--relay-publish`, relay_publish.py) stores each delivery in a durable JetStream stream; the cluster
(`--relay-consume`, relay_consume.py) connects outward, pulls, and runs the normal pipeline with its
own secrets. docs/relay.md has the operator's view.

The message is a small binary envelope, never JSON around the body: a signature is over the exact
bytes the git host sent, so the body travels untouched after the request's metadata:

    b"FWR1" | uint32 big-endian length of the metadata | metadata (JSON) | body bytes, as received

The metadata is method, path, query and the headers (names lower-cased, as the HTTP layer hands them
to the pipeline). It is encoded with the standard library's `json` (ASCII escapes): aiohttp hands
header bytes that are not UTF-8 over as lone surrogates, and those must round-trip unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import json
import logging
import ssl
import struct
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from controller.providers.base import lower_keys
from controller.settings import Settings

log = logging.getLogger("fleet_webhook.relay")

MAGIC = b"FWR1"
_LENGTH = struct.Struct(">I")
MAX_METADATA_BYTES = 256 * 1024  # 128 headers of 8190 bytes at most (aiohttp's limits), with room
# The broker drops a repeated Nats-Msg-Id within this window: a git host's retry of a delivery that
# was stored but whose 202 was lost (edge restart, network) is stored once.
DUPLICATE_WINDOW_SECONDS = 120.0
CONNECT_RETRY_SECONDS = 2.0
STATS_INTERVAL_SECONDS = 5.0


class EnvelopeError(ValueError):
    """A message on the relay subject that is not a delivery this code wrote (says what is wrong)."""


class RelayConfigError(ValueError):
    """A relay setting that cannot work (a TLS file that cannot be read); names the flag."""


class BrokerUnavailable(Exception):
    """The broker cannot take or give messages now (not connected, no answer in time, stream full)."""


@dataclass(frozen=True, slots=True)
class RelayedRequest:
    """A webhook request as the edge received it, for the consumer's pipeline."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]  # names lower-cased
    body: bytes


def encode(request: RelayedRequest) -> bytes:
    """The envelope of `request` (see the module docstring); the body is appended untouched."""
    meta = json.dumps(
        {
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            # Lower-case names (the head may be aiohttp's case-insensitive map); the body travels as
            # aiohttp handed it over, already inflated, so its Content-Encoding no longer applies.
            "headers": {k: v for k, v in lower_keys(request.headers).items() if k != "content-encoding"},
        },
        separators=(",", ":"),
        ensure_ascii=True,
    ).encode("ascii")
    return b"".join((MAGIC, _LENGTH.pack(len(meta)), meta, request.body))


def decode(data: bytes) -> RelayedRequest:
    """The request in an envelope; EnvelopeError says what is wrong with anything else."""
    if not data.startswith(MAGIC):
        raise EnvelopeError(f"not a fleet-webhook relay message (starts {data[:4]!r}, expected {MAGIC!r})")
    if len(data) < len(MAGIC) + _LENGTH.size:
        raise EnvelopeError("relay message truncated before its metadata length")
    (size,) = _LENGTH.unpack_from(data, len(MAGIC))
    start = len(MAGIC) + _LENGTH.size
    if size > MAX_METADATA_BYTES or start + size > len(data):
        raise EnvelopeError(f"relay message metadata length {size} does not fit the message ({len(data)} bytes)")
    try:
        meta = json.loads(data[start : start + size].decode("ascii"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EnvelopeError(f"relay message metadata is not JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise EnvelopeError("relay message metadata is not a JSON object")
    method, path = meta.get("method"), meta.get("path")
    if not (isinstance(method, str) and isinstance(path, str) and path.startswith("/")):
        raise EnvelopeError("relay message metadata: method and path (starting with /) must be strings")
    return RelayedRequest(method, path, _strings(meta, "query"), _strings(meta, "headers"), data[start + size :])


def _strings(meta: Mapping[str, Any], name: str) -> dict[str, str]:
    value = meta.get(name)
    if not (isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())):
        raise EnvelopeError(f"relay message metadata: {name} must map strings to strings")
    return value


def message_id(provider: str, delivery: str | None, body: bytes) -> str | None:
    """The Nats-Msg-Id the broker deduplicates on: provider, delivery id and a digest of the body.

    Not the delivery id alone: it is an unsigned header, and the edge may store deliveries it could
    not verify. A stranger who sent a forged body under a real delivery id first would otherwise make
    the broker drop the genuine delivery as a duplicate. Only a byte-identical retry is dropped.
    """
    if not delivery:
        return None
    digest = hashlib.blake2b(digest_size=16)
    for part in (provider.encode(), delivery.encode("utf-8", "backslashreplace"), body):
        digest.update(len(part).to_bytes(8, "big") + part)
    return f"{provider}-{digest.hexdigest()}"


def stream_config(settings: Settings) -> StreamConfig:
    """The stream the edge creates: file storage, limits retention, refuse new when full."""
    return StreamConfig(
        name=settings.relay_stream,
        description="fleet-webhook relayed deliveries (docs/relay.md)",
        subjects=[settings.relay_subject],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=settings.relay_max_age_seconds,
        max_bytes=settings.relay_max_bytes,
        discard=DiscardPolicy.NEW,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
    )


def consumer_config(settings: Settings) -> ConsumerConfig:
    """The durable pull consumer: explicit acks, every delivery from the first one kept."""
    return ConsumerConfig(
        name=settings.relay_durable,
        durable_name=settings.relay_durable,
        description="fleet-webhook cluster consumer (docs/relay.md)",
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.relay_ack_wait_seconds,
        max_deliver=settings.relay_max_deliver,
        filter_subject=settings.relay_subject,
    )


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for the broker, from the CA and client certificate files (None: no files given)."""
    if not (settings.relay_tls_ca_file or settings.relay_tls_cert_file):
        return None
    try:
        context = ssl.create_default_context(
            cafile=str(settings.relay_tls_ca_file) if settings.relay_tls_ca_file else None
        )
    except (OSError, ssl.SSLError) as exc:
        raise RelayConfigError(f"--relay-tls-ca-file {settings.relay_tls_ca_file}: {exc}") from None
    if settings.relay_tls_cert_file and settings.relay_tls_key_file:
        try:
            context.load_cert_chain(str(settings.relay_tls_cert_file), str(settings.relay_tls_key_file))
        except (OSError, ssl.SSLError) as exc:
            where = f"{settings.relay_tls_cert_file} / {settings.relay_tls_key_file}"
            raise RelayConfigError(f"--relay-tls-cert-file/--relay-tls-key-file {where}: {exc}") from None
    return context


def connect_options(settings: Settings, name: str) -> dict[str, Any]:
    """Options of `nats.connect` for either role; raises RelayConfigError for unreadable files."""
    options: dict[str, Any] = {
        "servers": settings.relay_urls,
        "name": name,
        "connect_timeout": 5,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,  # a broker restart must not leave the process disconnected for good
        "reconnect_time_wait": 1,
    }
    creds = settings.relay_credentials_file
    if creds is not None:
        if not creds.is_file():
            raise RelayConfigError(f"--relay-credentials-file {creds}: no such file")
        options["user_credentials"] = str(creds)
    context = tls_context(settings)
    if context is not None:
        options["tls"] = context
    return options


class Link:
    """One NATS connection, (re)established in the background so a process starts while the broker is down.

    nats-py reconnects by itself once it was connected; only the first connection is retried here.
    """

    def __init__(self, settings: Settings, role: str) -> None:
        self.settings = settings
        self.role = role
        self._options = connect_options(settings, f"fleet-webhook-{role}")
        self.nc: Client | None = None
        self.connected_once = asyncio.Event()
        self.last_error: str | None = None
        self._closing = False

    @property
    def connected(self) -> bool:
        """Whether the broker can be talked to right now."""
        return self.nc is not None and self.nc.is_connected

    def jetstream(self, timeout: float = 5.0) -> JetStreamContext:
        """The JetStream context (raises BrokerUnavailable when not connected)."""
        if self.nc is None or not self.nc.is_connected:
            raise BrokerUnavailable(f"not connected to the relay broker ({self.last_error or 'connecting'})")
        return self.nc.jetstream(timeout=timeout)

    async def run(self, on_connected: Callable[[], Awaitable[None]] | None = None) -> None:
        """Connect, retrying every CONNECT_RETRY_SECONDS, run `on_connected` once, then hold the
        connection for the life of the process (nats-py reconnects by itself; returning would read
        as a crash to the supervisor)."""
        await self.connect()
        if on_connected is not None:
            try:
                await on_connected()
            except (BrokerUnavailable, nats.errors.Error, TimeoutError) as exc:
                self._remember(exc, "relay broker set-up failed; retried with the first delivery")
        await asyncio.Event().wait()

    async def connect(self) -> None:
        """Connect, retrying every CONNECT_RETRY_SECONDS until the broker answers."""
        while self.nc is None:
            try:
                self.nc = await nats.connect(
                    **self._options,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._remember(exc, "cannot connect to the relay broker; retrying")
                await asyncio.sleep(CONNECT_RETRY_SECONDS)
        self.last_error = None
        log.info("relay broker connected", extra={"role": self.role, "server": self._server()})
        self.connected_once.set()

    def _server(self) -> str:
        url = self.nc.connected_url if self.nc is not None else None
        return f"{url.hostname}:{url.port}" if url is not None else ""

    def _remember(self, exc: BaseException, message: str) -> None:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if reason != self.last_error:  # one line per change of state, not one per retry
            log.warning(message, extra={"role": self.role, "error": reason})
        self.last_error = reason

    async def _on_error(self, exc: Exception) -> None:
        self._remember(exc, "relay broker connection error")

    async def _on_disconnected(self) -> None:
        if not self._closing:  # closing at shutdown is not news
            log.warning("relay broker disconnected; reconnecting", extra={"role": self.role})

    async def _on_reconnected(self) -> None:
        self.last_error = None
        log.info("relay broker reconnected", extra={"role": self.role, "server": self._server()})

    async def close(self) -> None:
        """Flush and close the connection (pending acks and publishes go out first)."""
        self._closing = True
        if self.nc is not None and not self.nc.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.nc.drain(), 5)
            with contextlib.suppress(Exception):
                await self.nc.close()


async def ensure_stream(js: JetStreamContext, settings: Settings, *, update: bool) -> None:
    """Create the stream when missing; with `update` (the edge, which owns it) also apply new limits."""
    wanted = stream_config(settings)
    try:
        await js.stream_info(settings.relay_stream)
    except nats.js.errors.NotFoundError:
        await js.add_stream(wanted)
        log.info("relay stream created", extra={"stream": settings.relay_stream, "subject": settings.relay_subject})
        return
    if update:
        await js.update_stream(wanted)


async def queue_stats(js: JetStreamContext, settings: Settings) -> tuple[int, float] | None:
    """(deliveries the consumer has not acknowledged, age in seconds of the oldest), None: no consumer yet."""
    try:
        info = await js.consumer_info(settings.relay_stream, settings.relay_durable)
    except nats.js.errors.NotFoundError:
        return None
    depth = (info.num_pending or 0) + (info.num_ack_pending or 0)
    if depth == 0:
        return 0, 0.0
    floor = info.ack_floor.stream_seq if info.ack_floor is not None else 0
    try:
        oldest = await js.get_msg(settings.relay_stream, seq=floor + 1, subject=settings.relay_subject, next=True)
    except nats.js.errors.NotFoundError:
        return depth, 0.0
    if oldest.time is None:
        return depth, 0.0
    age = datetime.datetime.now(datetime.UTC).timestamp() - oldest.time.timestamp()
    return depth, max(0.0, age)


async def report_queue(link: Link, report: Callable[[int, float], None]) -> None:
    """Keep `report(depth, oldest age)` current (both roles: the edge sees the backlog grow while the
    cluster is offline, when no consumer is there to report it)."""
    await link.connected_once.wait()
    while True:
        started = time.monotonic()
        with contextlib.suppress(BrokerUnavailable, nats.errors.Error, asyncio.TimeoutError):
            stats = await queue_stats(link.jetstream(), link.settings)
            if stats is not None:
                report(*stats)
        await asyncio.sleep(max(0.5, STATS_INTERVAL_SECONDS - (time.monotonic() - started)))
