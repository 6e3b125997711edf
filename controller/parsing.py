"""Where a body is parsed, so that no parse can stall the event loop or be bought by a stranger.

- Authenticated, held in memory (body.py keeps at most `limits.spoolAfterBytes` so): on the loop,
  a few milliseconds at most.
- Authenticated, large (spooled to a file by body.py): in one worker *process* (parse_worker.py).
  CPython's JSON decoder holds the GIL for the whole document (a 21 MiB push takes ~85 ms), so a
  thread would still stall every other delivery; in a process it costs the loop nothing. One
  worker, one request at a time, so at most one large document is in memory; it reads the spooled
  body straight from its file. It is started on first use and restarted if it dies.
- Not authenticated (only when a GitRepo's own `spec.webhookSecret` might match, see pipeline.py):
  at most `limits.unverifiedParseBytes` and UNVERIFIED_MAX_CONTAINERS JSON objects/arrays (counted
  at C speed before anything is built), in one worker thread, one at a time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sys
from typing import Any

from controller import parse_worker
from controller.body import Body
from controller.deliveries import Parsed
from controller.providers.base import PayloadError, Provider, UnsupportedMediaType, WebhookRequest

log = logging.getLogger("fleet_webhook.parsing")

UNVERIFIED_MAX_CONTAINERS = 10_000


class ParserUnavailable(Exception):
    """The parse worker died (for example killed for memory); the delivery is answered 503."""


def container_count(body: bytes) -> int:
    """An upper bound of the JSON objects and arrays in `body` (brackets inside strings count too)."""
    return body.count(b"{") + body.count(b"[")


class Parsers:
    """The parse strategies above, with their workers; `close()` stops them."""

    def __init__(self) -> None:
        self._worker: asyncio.subprocess.Process | None = None
        self._worker_lock = asyncio.Lock()
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="unverified-parse")

    async def start(self) -> None:
        """Start the parse worker now (serve does, before listening) rather than on the first large body.

        Starting it costs a Python start-up of CPU (~0.3 s); paid at start-up, it cannot slow the
        deliveries that are in flight when the first large one arrives. It then idles at ~19 MiB RSS.
        """
        async with self._worker_lock:
            await self._running_worker()

    async def authenticated(self, provider: Provider, head: WebhookRequest, body: Body) -> tuple[Parsed, ...]:
        """Parse a body whose credentials were verified."""
        if not body.spooled:
            return provider.parse(head.with_body(body.in_memory_bytes()))
        request = (provider.name, head.method, dict(head.headers), dict(head.query), body.path_for_worker())
        async with self._worker_lock:
            reply = await self._ask(request)
        if reply[0] == "ok":
            events: tuple[Parsed, ...] = reply[1]
            return events
        if reply[1] == "media":
            raise UnsupportedMediaType(reply[2])
        raise PayloadError(reply[2])

    async def _ask(self, request: tuple[Any, ...]) -> Any:
        for _ in range(2):  # a worker that died since the last request is replaced once
            worker = await self._running_worker()
            assert worker.stdin is not None
            assert worker.stdout is not None
            try:
                worker.stdin.write(parse_worker.frame(request))
                await worker.stdin.drain()
                head = await worker.stdout.readexactly(parse_worker.HEADER.size)
                (size,) = parse_worker.HEADER.unpack(head)
                return parse_worker.decode(await worker.stdout.readexactly(size))
            except (ConnectionError, asyncio.IncompleteReadError):
                log.error("parse worker died; starting a new one", extra={"returncode": worker.returncode})
                await self._stop_worker()
        raise ParserUnavailable("the parse worker keeps stopping (out of memory?)")

    async def _running_worker(self) -> asyncio.subprocess.Process:
        if self._worker is None or self._worker.returncode is not None:
            self._worker = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "controller.parse_worker",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=64 * 1024 * 1024,
            )
        return self._worker

    async def _stop_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None and worker.returncode is None:
            worker.kill()
            await worker.wait()

    async def unverified(
        self, provider: Provider, head: WebhookRequest, body: Body, max_bytes: int
    ) -> tuple[Parsed, ...]:
        """Parse a body no route secret vouches for, within the small budget; PayloadError beyond it."""
        if body.spooled or body.size > max_bytes:
            raise PayloadError(f"unauthenticated body larger than limits.unverifiedParseBytes ({max_bytes})")
        raw = body.in_memory_bytes()
        if container_count(raw) > UNVERIFIED_MAX_CONTAINERS:
            raise PayloadError(f"unauthenticated body with more than {UNVERIFIED_MAX_CONTAINERS} JSON containers")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, provider.parse, head.with_body(raw))

    async def close(self) -> None:
        """Stop the workers. The worker holds no state, so it is killed rather than waited for."""
        await self._stop_worker()
        self._thread.shutdown(wait=False, cancel_futures=True)
