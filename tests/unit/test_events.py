"""Events are coalesced: one per GitRepo and reason per window, none lost, the first at once."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from controller.events import EventCoalescer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ref(name: str) -> dict[str, str]:
    return {"namespace": "apps", "name": name, "resourceVersion": "1"}


class Sent:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    async def __call__(self, gitrepo: Mapping[str, str], reason: str, message: str) -> None:
        self.events.append((gitrepo["name"], reason, message))


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_the_first_event_goes_out_at_once_and_the_rest_of_the_window_folds_into_one() -> None:
    sent, clock = Sent(), Clock()
    events = EventCoalescer(sent, window=0.2, clock=clock)
    events.emit(ref("a"), "WebhookCommit", "commit 1")
    await settle()
    assert sent.events == [("a", "WebhookCommit", "commit 1")]
    for n in (2, 3, 4):
        events.emit(ref("a"), "WebhookCommit", f"commit {n}")
    events.emit(ref("b"), "WebhookCommit", "b commit 1")  # another GitRepo has its own window
    await settle()
    assert sent.events[1:] == [("b", "WebhookCommit", "b commit 1")]
    await asyncio.sleep(0.3)  # the window closes: one Event for the three folded ones
    assert sent.events[2:] == [("a", "WebhookCommit", "3 more in the last 0.2s; the last: commit 4")]


async def test_a_push_after_a_quiet_window_is_sent_at_once() -> None:
    sent, clock = Sent(), Clock()
    events = EventCoalescer(sent, window=60, clock=clock)
    events.emit(ref("a"), "WebhookCommit", "one")
    clock.now += 61
    events.emit(ref("a"), "WebhookCommit", "two")
    await settle()
    assert [m for _, _, m in sent.events] == ["one", "two"]


async def test_drain_sends_what_is_folded() -> None:
    sent = Sent()
    events = EventCoalescer(sent, window=60)
    events.emit(ref("a"), "WebhookCommit", "one")
    events.emit(ref("a"), "WebhookCommit", "two")
    events.emit(ref("a"), "WebhookPollingRestored", "restored")  # another reason: its own window
    await events.drain(within=5)
    assert sent.events == [
        ("a", "WebhookCommit", "one"),
        ("a", "WebhookPollingRestored", "restored"),
        ("a", "WebhookCommit", "1 more in the last 60s; the last: two"),
    ]


async def test_a_window_of_zero_sends_every_event() -> None:
    sent = Sent()
    events = EventCoalescer(sent, window=0)
    for n in range(3):
        events.emit(ref("a"), "WebhookCommit", str(n))
    await events.drain(within=5)
    assert [m for _, _, m in sent.events] == ["0", "1", "2"]
