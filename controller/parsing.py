"""Where a body is parsed, so that no parse can stall the event loop or be bought by a stranger.

- Authenticated, held in memory (body.py keeps at most `limits.spoolAfterBytes` so): on the loop,
  a few milliseconds at most.
- Authenticated, large (spooled to a file by body.py): in one worker *process* (parse_worker.py).
  CPython's JSON decoder holds the GIL for the whole document (a 21 MiB push takes ~85 ms), so a
  thread would still stall every other delivery; in a process it costs the loop nothing. One
  worker answers requests in order, so at most one large document is in memory; it reads the
  spooled body straight from its file, through a descriptor of its own. Each answer carries its
  request's id. It is started on first use and restarted if it dies.
- Not authenticated (only when a GitRepo's own `spec.webhookSecret` might match, see pipeline.py):
  at most `limits.unverifiedParseBytes` and UNVERIFIED_MAX_CONTAINERS JSON objects/arrays (counted
  at C speed before anything is built), in one worker thread, one at a time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

from controller import parse_worker
from controller.body import Body
from controller.deliveries import Parsed
from controller.providers.base import PayloadError, Provider, UnsupportedMediaType, WebhookRequest, lower_keys

log = logging.getLogger("fleet_webhook.parsing")

UNVERIFIED_MAX_CONTAINERS = 10_000
# Large bodies waiting for the worker at most (each holds a descriptor of its spooled file).
MAX_PENDING_REQUESTS = 64


class ParserUnavailable(Exception):
    """The parse worker died (for example killed for memory); the delivery is answered 503."""


def container_count(body: bytes) -> int:
    """An upper bound of the JSON objects and arrays in `body` (brackets inside strings count too)."""
    return body.count(b"{") + body.count(b"[")


@dataclass
class _Pending:
    """A request the worker has not answered yet: the descriptor it reads, and who waits for it."""

    descriptor: int
    reply: asyncio.Future[Any]


class _WorkerDied(Exception):
    """The worker stopped before answering; the request is sent again to a new one."""


class Parsers:
    """The parse strategies above, with their workers; `close()` stops them.

    Large bodies go to the worker as `(id, ...)` requests; one reader task takes the answers and
    resolves the waiting delivery with the same id. A delivery that gave up (its request timed out)
    leaves its entry behind, so its late answer is dropped and its descriptor closed only then: no
    answer can reach another delivery, and no descriptor number is reused while the worker may
    still open it.
    """

    def __init__(self) -> None:
        self._worker: asyncio.subprocess.Process | None = None
        self._replies: asyncio.Task[None] | None = None
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count(1)
        self._worker_lock = asyncio.Lock()
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="unverified-parse")

    async def start(self) -> None:
        """Start the parse worker now (serve does, before listening) rather than on the first large body.

        Starting it costs a Python start-up of CPU (~0.3 s); paid at start-up, it cannot slow the
        deliveries that are in flight when the first large one arrives. It then idles at ~19 MiB RSS.
        """
        await self._running_worker()

    def worker_pid(self) -> int | None:
        """The running worker's process id (tests stop and resume it), or None before it starts."""
        worker = self._worker
        return worker.pid if worker is not None and worker.returncode is None else None

    async def authenticated(self, provider: Provider, head: WebhookRequest, body: Body) -> tuple[Parsed, ...]:
        """Parse a body whose credentials were verified."""
        if not body.spooled:
            return provider.parse(head.with_body(body.in_memory_bytes()))
        reply = await self._ask(provider.name, head, body)
        if reply[0] == "ok":
            events: tuple[Parsed, ...] = reply[1]
            return events
        if reply[1] == "media":
            raise UnsupportedMediaType(reply[2])
        raise PayloadError(reply[2])

    async def _ask(self, provider: str, head: WebhookRequest, body: Body) -> Any:
        for _ in range(2):  # a worker that died since the last request is replaced once
            worker = await self._running_worker()
            assert worker.stdin is not None
            if len(self._pending) >= MAX_PENDING_REQUESTS:
                raise ParserUnavailable("the parse worker has too many bodies queued; retry later")
            request_id = next(self._ids)
            descriptor = body.worker_descriptor()
            entry = self._pending[request_id] = _Pending(descriptor, asyncio.get_running_loop().create_future())
            path = f"/proc/{os.getpid()}/fd/{descriptor}"
            try:
                worker.stdin.write(
                    parse_worker.frame(
                        (request_id, provider, head.method, lower_keys(head.headers), dict(head.query), path)
                    )
                )
                await worker.stdin.drain()
                # Cancelled (the delivery timed out): the entry stays until the worker answers it.
                return await entry.reply
            except (ConnectionError, _WorkerDied):
                await self._stop_worker(worker)
        raise ParserUnavailable("the parse worker keeps stopping (out of memory?)")

    async def _running_worker(self) -> asyncio.subprocess.Process:
        async with self._worker_lock:
            if self._worker is None or self._worker.returncode is not None:
                self._worker = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "controller.parse_worker",
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    limit=64 * 1024 * 1024,
                )
                self._replies = asyncio.create_task(self._read_replies(self._worker), name="parse-worker-replies")
            return self._worker

    async def _read_replies(self, worker: asyncio.subprocess.Process) -> None:
        """Hand each answer to the delivery with its id; when the worker stops, fail what it held."""
        assert worker.stdout is not None
        try:
            while True:
                head = await worker.stdout.readexactly(parse_worker.HEADER.size)
                (size,) = parse_worker.HEADER.unpack(head)
                request_id, reply = parse_worker.decode(await worker.stdout.readexactly(size))
                entry = self._pending.pop(request_id, None)
                if entry is None:
                    continue
                os.close(entry.descriptor)
                if not entry.reply.done():  # done: the delivery gave up waiting; the answer is dropped
                    entry.reply.set_result(reply)
        except (asyncio.IncompleteReadError, ConnectionError):
            if self._worker is worker:  # died: the next request starts a new one instead of waiting here
                self._worker = self._replies = None
                log.error("parse worker died; starting a new one", extra={"returncode": worker.returncode})
        finally:
            self._fail_pending()

    def _fail_pending(self) -> None:
        """Every request the (single) worker still held: its waiter is told, its descriptor closed."""
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            os.close(entry.descriptor)
            if not entry.reply.done():
                entry.reply.set_exception(_WorkerDied())

    async def _stop_worker(self, worker: asyncio.subprocess.Process | None = None) -> None:
        if worker is not None and worker is not self._worker:
            if worker.returncode is None:
                worker.kill()  # the reply reader already let it go; make sure it is gone
                await worker.wait()
            return
        worker, self._worker = self._worker, None
        replies, self._replies = self._replies, None
        if worker is not None and worker.returncode is None:
            worker.kill()
            await worker.wait()
        if replies is not None:
            replies.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await replies
        self._fail_pending()

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
