"""The watcher's protocol against a scripted API server, for what the real one won't do on cue.

An ERROR event with code 410 in the middle of a stream, a bookmark followed by the end of the watch,
a 500, a watch that ends at once, a line split across many small writes: the real kube-apiserver
produces these only by chance (tests/integration/test_faults.py provokes its 410 through a
compacted etcd). The scripted server speaks the same HTTP: lists with `limit`/`continue`, watches as
one JSON event per line, streamed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiohttp import web
from kubernetes import client as k8s

from controller.kube import GitRepoWatcher, Kube, WatchEvent
from tests.integration.watch_support import Seen, wait_for

NAMESPACE = "scripted"
WatchScript = Callable[[web.Request], Awaitable[web.StreamResponse]]


def gitrepo(name: str, rv: str, **annotations: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": NAMESPACE, "resourceVersion": rv}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "fleet.cattle.io/v1alpha1", "kind": "GitRepo", "metadata": meta, "spec": {"repo": "r"}}


def line(kind: str, obj: dict[str, Any]) -> bytes:
    return orjson.dumps({"type": kind, "object": obj}) + b"\n"


class ScriptedApi:
    """Answers GitRepo lists (in pages of what `listed` holds) and plays one script per watch."""

    def __init__(self) -> None:
        self.listed: list[dict[str, Any]] = [gitrepo("a", "5"), gitrepo("b", "6")]
        self.list_rv = "10"
        self.list_requests: list[dict[str, str]] = []
        self.watch_requests: list[dict[str, str]] = []
        self.scripts: list[WatchScript] = []
        self.disconnected = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        if query.get("watch") == "true":
            self.watch_requests.append(query)
            script = self.scripts.pop(0) if self.scripts else self.hang
            return await script(request)
        self.list_requests.append(query)
        start = int(query.get("continue") or 0)
        end = start + int(query["limit"])
        meta: dict[str, Any] = {"resourceVersion": self.list_rv}
        if end < len(self.listed):
            meta["continue"] = str(end)
        return web.Response(body=orjson.dumps({"metadata": meta, "items": self.listed[start:end]}))

    async def stream(self, request: web.Request, *pieces: bytes) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for piece in pieces:
            await response.write(piece)
        await response.write_eof()
        return response

    async def hang(self, request: web.Request) -> web.StreamResponse:
        """A watch with nothing to say: waits until the client goes away."""
        response = web.StreamResponse()
        await response.prepare(request)
        while request.transport is not None and not request.transport.is_closing():  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.01)
        self.disconnected.set()
        return response


@dataclass
class Harness:
    """The scripted API server, a Kube on it, and a watcher (not started) recording what it hands on."""

    api: ScriptedApi
    kube: Kube
    seen: Seen
    watcher: GitRepoWatcher


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    scripted = ScriptedApi()
    app = web.Application()
    app.router.add_get(f"/apis/fleet.cattle.io/v1alpha1/namespaces/{NAMESPACE}/gitrepos", scripted.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    kube = Kube(k8s.ApiClient(k8s.Configuration(host=f"http://127.0.0.1:{port}")))
    seen = Seen()
    watcher = GitRepoWatcher(kube, NAMESPACE, seen.on_list, seen.events.append, seen.errors.append)
    try:
        yield Harness(scripted, kube, seen, watcher)
    finally:
        watcher.stop()
        await watcher.join(5)
        kube.close()
        await runner.cleanup()


async def test_lists_in_pages_then_watches_from_the_lists_version(h: Harness) -> None:
    scripted, kube, seen = h.api, h.kube, h.seen
    scripted.listed = [gitrepo(f"g{i}", str(i)) for i in range(7)]
    items, rv = await kube.list_gitrepos(NAMESPACE, page_size=3)
    assert ([i["metadata"]["name"] for i in items], rv) == ([f"g{i}" for i in range(7)], "10")
    assert [q.get("continue") for q in scripted.list_requests] == [None, "3", "6"]
    h.watcher.start()
    await wait_for(lambda: bool(scripted.watch_requests), 5, "the watch")
    watch = scripted.watch_requests[0]
    assert watch["resourceVersion"] == "10"
    assert (watch["allowWatchBookmarks"], watch["timeoutSeconds"]) == ("true", "300")
    assert [len(items) for items in seen.lists] == [7]


async def test_an_error_event_410_relists_without_reporting_a_failure(h: Harness) -> None:
    scripted, seen = h.api, h.seen

    async def then_gone(request: web.Request) -> web.StreamResponse:
        gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old resource version"}
        return await scripted.stream(request, line("MODIFIED", gitrepo("a", "11")), line("ERROR", gone))

    scripted.scripts = [then_gone]
    h.watcher.start()
    await wait_for(lambda: len(scripted.watch_requests) >= 2, 5, "the watch after the re-list")
    assert len(seen.lists) == 2
    assert [(e.type, e.obj["metadata"]["resourceVersion"]) for e in seen.events] == [("MODIFIED", "11")]
    assert seen.errors == []
    assert [q["resourceVersion"] for q in scripted.watch_requests] == ["10", "10"]


async def test_an_http_410_relists_at_once_and_a_500_after_a_backoff(h: Harness) -> None:
    scripted, seen = h.api, h.seen

    async def gone(_request: web.Request) -> web.StreamResponse:
        return web.Response(status=410)

    async def broken(_request: web.Request) -> web.StreamResponse:
        return web.Response(status=500)

    scripted.scripts = [gone, broken]
    h.watcher.start()
    await wait_for(lambda: len(scripted.watch_requests) >= 3, 5, "three watches")
    assert len(seen.lists) == 3
    assert seen.errors == ["API error 500 Internal Server Error"]


async def test_a_bookmark_only_moves_the_resource_version(h: Harness) -> None:
    scripted, seen = h.api, h.seen

    async def bookmark(request: web.Request) -> web.StreamResponse:
        mark = {"kind": "GitRepo", "metadata": {"resourceVersion": "42"}}
        return await scripted.stream(request, line("BOOKMARK", mark))

    scripted.scripts = [bookmark]
    h.watcher.start()
    await wait_for(lambda: len(scripted.watch_requests) >= 2, 5, "the watch after the bookmark")
    assert [q["resourceVersion"] for q in scripted.watch_requests] == ["10", "42"]
    assert (len(seen.lists), seen.events, seen.errors) == (1, [], [])


async def test_a_watch_that_ends_at_once_does_not_spin(h: Harness) -> None:
    scripted, seen = h.api, h.seen

    async def empty(request: web.Request) -> web.StreamResponse:
        return await scripted.stream(request)

    scripted.scripts = [empty] * 100
    h.watcher.start()
    await asyncio.sleep(1.2)
    assert 2 <= len(scripted.watch_requests) <= 4, len(scripted.watch_requests)
    assert len(seen.lists) == 1, "an empty watch is not a reason to list again"


async def test_lines_split_across_writes_and_longer_than_the_read_buffer(h: Harness) -> None:
    scripted, seen = h.api, h.seen
    big = gitrepo("big", "11", note="x" * (1 << 20))  # 1 MiB on one line
    stream = line("ADDED", big) + line("MODIFIED", gitrepo("a", "12")) + b"\n" + line("DELETED", gitrepo("b", "13"))

    async def in_pieces(request: web.Request) -> web.StreamResponse:
        cut = [7, 1000, 65_537, 200_000, len(stream) - 40, len(stream) - 3]  # inside lines and at their ends
        pieces = [stream[i:j] for i, j in zip([0, *cut], [*cut, len(stream)], strict=True)]
        return await scripted.stream(request, *pieces)

    scripted.scripts = [in_pieces]
    h.watcher.start()
    await wait_for(lambda: len(seen.events) >= 3, 5, "three events")
    assert [(e.type, e.obj["metadata"]["name"]) for e in seen.events] == [
        ("ADDED", "big"),
        ("MODIFIED", "a"),
        ("DELETED", "b"),
    ]
    assert seen.events[0].obj == big
    assert seen.errors == []


async def test_a_failing_callback_is_logged_and_the_watch_goes_on(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    scripted, kube = h.api, h.kube
    events: list[str] = []

    def on_event(event: WatchEvent) -> None:
        events.append(event.obj["metadata"]["name"])
        if len(events) == 1:
            raise RuntimeError("index bug")

    async def two(request: web.Request) -> web.StreamResponse:
        return await scripted.stream(request, line("ADDED", gitrepo("x", "11")), line("ADDED", gitrepo("y", "12")))

    scripted.scripts = [two]
    errors: list[str] = []
    watcher = GitRepoWatcher(kube, NAMESPACE, lambda _ns, _items: None, on_event, errors.append)
    watcher.start()
    try:
        await wait_for(lambda: len(events) >= 2, 5, "both events")
    finally:
        watcher.stop()
        await watcher.join(5)
    assert events == ["x", "y"]
    assert errors == []
    assert any(r.getMessage() == "gitrepo watch callback failed" for r in caplog.records)


async def test_stop_closes_a_waiting_watch_at_once(h: Harness) -> None:
    scripted, seen = h.api, h.seen
    watcher = h.watcher
    watcher.start()
    await wait_for(lambda: bool(scripted.watch_requests), 5, "the watch")
    await asyncio.sleep(0.1)
    started = time.monotonic()
    watcher.stop()
    await watcher.join(5)
    await asyncio.wait_for(scripted.disconnected.wait(), 1)
    assert time.monotonic() - started < 0.2
    assert seen.errors == []
