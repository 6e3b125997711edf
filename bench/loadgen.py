"""Closed-loop HTTP/1.1 load generator: `python -m bench.loadgen --port P --request FILE ...`.

C keep-alive connections each send one request, read the whole response, and send the next.
It speaks raw HTTP over asyncio streams (no client library), so one core pushes far more requests
than the servers it measures can answer; its own CPU use is reported so a run where the generator
was the bottleneck can be seen. Every request carries a fresh delivery id in the header named by
the request file (the signature covers the body only, so it stays valid), which keeps the
receiver's duplicate-delivery cache from answering instead of the handler.

Request file (JSON): {"path": "/", "headers": {...}, "id_header": "X-GitHub-Delivery", "body_b64": "..."}.
Prints one JSON line: completed requests in the measured window, req/s, status counts, latency
percentiles (ms) and the generator's CPU use.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import json
import socket
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.stats import percentile


class Generator:
    """Shared state of all connections: request bytes, counters, the measuring window."""

    def __init__(self, spec: dict[str, Any], port: int) -> None:
        body = base64.b64decode(spec["body_b64"])
        id_header = spec["id_header"]
        lines = [f"POST {spec.get('path', '/')} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: keep-alive"]
        lines += [f"{k}: {v}" for k, v in spec["headers"].items() if k.lower() not in (id_header.lower(), "host")]
        lines += [f"Content-Length: {len(body)}", f"{id_header}: "]
        self.prefix = "\r\n".join(lines).encode()
        self.suffix = b"\r\n\r\n" + body
        self.run_id = uuid.uuid4().hex[:8]
        self.sent = 0
        self.running = True
        self.window: tuple[float, float] = (float("inf"), float("inf"))
        self.latencies: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.lost = 0
        self.open = 0
        self.total = 0

    def request(self) -> bytes:
        self.sent += 1
        return self.prefix + f"{self.run_id}-{self.sent:012d}-bench".encode() + self.suffix

    def done(self, status: int, started: float, now: float) -> None:
        self.total += 1
        if self.window[0] <= now < self.window[1]:
            self.latencies.append(now - started)
            self.statuses[status] += 1


def _content_length(head: bytes) -> int:
    """The Content-Length of a lower-cased response head (0 when absent)."""
    pos = head.find(b"\r\ncontent-length:")
    if pos < 0:
        return 0
    end = head.find(b"\r\n", pos + 2)
    return int(head[pos + 17 : end if end != -1 else len(head)])


class Connection(asyncio.Protocol):
    """One keep-alive connection sending requests back to back."""

    def __init__(self, gen: Generator, closed: asyncio.Future[None]) -> None:
        self.gen = gen
        self.closed = closed
        self.buf = bytearray()
        self.need = -1
        self.status = 0
        self.started = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:  # one write per request: never wait for a delayed ACK (Nagle)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.gen.open += 1
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.started = time.perf_counter()
        self.transport.write(self.gen.request())

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.need < 0:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buf[:end]).lower()
                self.status = int(head[9:12])
                self.need = end + 4 + _content_length(head)
            if len(self.buf) < self.need:
                return
            del self.buf[: self.need]
            self.need = -1
            self.gen.done(self.status, self.started, time.perf_counter())
            if not self.gen.running:
                assert self.transport is not None
                self.transport.close()
                return
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gen.open -= 1
        if self.gen.running:
            self.gen.lost += 1
        if not self.closed.done():
            self.closed.set_result(None)


async def run(spec: dict[str, Any], port: int, connections: int, warmup: float, duration: float) -> dict[str, Any]:
    """Drive the server for warmup + duration seconds; measure the last `duration` seconds."""
    loop = asyncio.get_running_loop()
    gen = Generator(spec, port)
    closed: list[asyncio.Future[None]] = []
    for _ in range(connections):
        fut: asyncio.Future[None] = loop.create_future()
        closed.append(fut)
        await loop.create_connection(functools.partial(Connection, gen, fut), "127.0.0.1", port)
    start = time.perf_counter()
    gen.window = (start + warmup, start + warmup + duration)
    await asyncio.sleep(warmup)
    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(max(0.0, gen.window[1] - time.perf_counter()))
    cpu1, t1 = time.process_time(), time.perf_counter()
    gen.running = False
    await asyncio.wait(closed, timeout=5)
    measured = t1 - t0
    lat_ms = [x * 1000 for x in gen.latencies]
    return {
        "connections": connections,
        "seconds": round(measured, 3),
        "completed": len(gen.latencies),
        "completed_incl_warmup": gen.total,
        "rps": round(len(gen.latencies) / measured, 1) if measured > 0 else 0.0,
        "statuses": {str(k): v for k, v in sorted(gen.statuses.items())},
        "lost_connections": gen.lost,
        "latency_ms": {
            "p50": round(percentile(lat_ms, 50), 3),
            "p90": round(percentile(lat_ms, 90), 3),
            "p99": round(percentile(lat_ms, 99), 3),
            "max": round(max(lat_ms), 3) if lat_ms else None,
        },
        "loadgen_cpu_util": round((cpu1 - cpu0) / measured, 3) if measured > 0 else None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--request", required=True, help="request file (JSON)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=3.0)
    args = parser.parse_args(argv)
    spec = json.loads(Path(args.request).read_text())
    result = asyncio.run(run(spec, args.port, args.connections, args.warmup, args.duration))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
