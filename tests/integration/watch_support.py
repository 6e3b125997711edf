"""What the watch tests share: a recorder of what a GitRepoWatcher hands on, and a polling wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from controller.kube import GitRepoWatcher, Kube, WatchEvent


class Seen:
    """What a watcher handed on, as the index would get it."""

    def __init__(self) -> None:
        self.lists: list[list[Any]] = []
        self.events: list[WatchEvent] = []
        self.errors: list[str] = []

    def on_list(self, _namespace: str | None, items: list[Any]) -> None:
        self.lists.append(items)

    def watcher(self, kube: Kube, namespace: str, **options: Any) -> GitRepoWatcher:
        return GitRepoWatcher(kube, namespace, self.on_list, self.events.append, self.errors.append, **options)


async def wait_for(predicate: Callable[[], bool], within: float, what: str) -> None:
    """Until `predicate()` holds; AssertionError naming `what` after `within` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.01)
