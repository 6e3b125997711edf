"""A real aiohttp server on loopback for tests that need raw sockets (bad HTTP, slow clients, fuzzing).

`LiveServer` runs an app in its own event loop thread with the same connection options `serve` uses
(`controller.runtime.server_options`), so tests can talk to it with plain blocking sockets, including
from Hypothesis tests, which cannot be async. `raw_request` sends bytes exactly as given and parses the
answer. `FakeUpdater` stands in for the Kubernetes writer: it records what it was asked to write.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from controller.app import WebhookRunner, make_app
from controller.config import PollingPolicy
from controller.deliveries import PushEvent
from controller.index import GitRepoInfo
from controller.pipeline import Receiver
from controller.runtime import server_options
from controller.updater import Outcome, WriteResult

# Every status code the receiver documents (controller/app.py); anything else is a bug.
DOCUMENTED_CODES = frozenset({200, 400, 401, 404, 405, 408, 413, 415, 503})


@dataclass
class FakeUpdater:
    """Records writes instead of calling Kubernetes; `delay` simulates a slow API."""

    delay: float = 0.0
    written: list[tuple[str, str, str]] = field(default_factory=list)

    async def record(
        self, info: GitRepoInfo, event: PushEvent, policy: PollingPolicy, deadline: float, *_rest: Any
    ) -> WriteResult:
        if self.delay:
            await asyncio.sleep(self.delay)
        self.written.append((info.namespace, info.name, event.commit))
        return WriteResult(info, Outcome.UPDATED, "commit recorded")

    async def drain(self, within: float) -> None:
        return None


class LiveServer:
    """`make_app(receiver)` served on 127.0.0.1:<free port> from a background event loop."""

    def __init__(self, receiver: Receiver, *, header_timeout: float = 10.0) -> None:
        self.receiver = receiver
        self.header_timeout = header_timeout
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="live-server", daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    def __enter__(self) -> LiveServer:
        self._thread.start()
        self.run(self._start())
        return self

    def __exit__(self, *_exc: object) -> None:
        self.run(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> None:
        self._runner = WebhookRunner(
            make_app(self.receiver), access_log=None, shutdown_timeout=2.0, **server_options(self.header_timeout)
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _connections(self) -> int:
        assert self._runner is not None
        assert self._runner.server is not None
        return len(self._runner.server.connections)

    def open_connections(self) -> int:
        """Connections the server currently holds."""
        return int(self.run(self._connections()))

    def connect(self, timeout: float = 10.0) -> socket.socket:
        """A fresh client socket to the server."""
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)


@dataclass
class RawResponse:
    """What came back on a raw connection: status (0 when the server closed without answering)."""

    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float


def build_request(
    headers: dict[str, str] | list[tuple[str, str]],
    body: bytes,
    *,
    method: str = "POST",
    path: str = "/",
    content_length: bool = True,
) -> bytes:
    """An HTTP/1.1 request with `Connection: close`, headers exactly as given (UTF-8 encoded)."""
    items = list(headers.items()) if isinstance(headers, dict) else list(headers)
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if content_length:
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{name}: {value}" for name, value in items]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


def read_response(sock: socket.socket, started: float) -> RawResponse:
    """Read until the server closes, then split status, headers and body."""
    chunks: list[bytes] = []
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    except (ConnectionResetError, TimeoutError):
        pass
    raw = b"".join(chunks)
    seconds = time.monotonic() - started
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1."):
        return RawResponse(0, {}, raw, seconds)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(status, headers, body, seconds)


def raw_request(server: LiveServer, data: bytes, *, timeout: float = 10.0) -> RawResponse:
    """Send `data` on a new connection and read the whole answer."""
    started = time.monotonic()
    with server.connect(timeout) as sock:
        # The server may answer (413) and close before the whole body was sent.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        return read_response(sock, started)
