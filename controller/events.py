"""Kubernetes Events on GitRepos, coalesced: at most one per GitRepo and reason in each window.

Why: an Event is one more API write (and one more etcd write) per recorded push, which Fleet's own
receiver does not make, and its client cost exceeds the status patch itself. A busy GitRepo would
double the receiver's writes for a courtesy. So the first Event of a GitRepo and reason goes out at
once; later ones within `window` seconds are folded into one Event sent when the window closes
("3 more pushes recorded in the last 60s; the last: ..."), and a steady stream of pushes costs one
Event per window per GitRepo. A window of 0 sends every Event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

Send = Callable[[Mapping[str, str], str, str], Coroutine[Any, Any, None]]
MAX_OPEN_WINDOWS = 10_000


@dataclass
class _Window:
    """One GitRepo's and reason's window: until when, and what arrived meanwhile."""

    until: float
    folded: int = 0
    last_ref: Mapping[str, str] | None = None
    last_message: str = ""
    flush: asyncio.TimerHandle | None = None


class EventCoalescer:
    """Sends Events through `send` in background tasks, coalesced as the module docstring says."""

    def __init__(self, send: Send, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._send = send
        self.window = window
        self._clock = clock
        self._windows: dict[tuple[str, str, str], _Window] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def emit(self, ref: Mapping[str, str], reason: str, message: str) -> None:
        """An Event for this GitRepo (`ref`: namespace, name, resourceVersion): now, or folded."""
        key = (ref["namespace"], ref["name"], reason)
        now = self._clock()
        held = self._windows.get(key)
        if self.window <= 0 or held is None or now >= held.until:
            if held is not None and held.flush is not None:
                held.flush.cancel()
            self._spawn(ref, reason, message)
            if self.window > 0:
                if len(self._windows) >= MAX_OPEN_WINDOWS:
                    self._expire(now)
                self._windows[key] = _Window(now + self.window)
            return
        held.folded += 1
        held.last_ref, held.last_message = ref, message
        if held.flush is None:
            delay = max(0.0, held.until - now)
            held.flush = asyncio.get_running_loop().call_later(delay, self._close, key)

    def _close(self, key: tuple[str, str, str]) -> None:
        """The window ended with Events folded into it: send one for them and open the next window."""
        held = self._windows.pop(key, None)
        if held is None or not held.folded or held.last_ref is None:
            return
        self._spawn(held.last_ref, key[2], self._summary(held))
        self._windows[key] = _Window(self._clock() + self.window)

    def _summary(self, held: _Window) -> str:
        more = "1 more" if held.folded == 1 else f"{held.folded} more"
        return f"{more} in the last {self.window:g}s; the last: {held.last_message}"

    def _expire(self, now: float) -> None:
        """Forget windows that ended with nothing folded (bounded memory with very many GitRepos)."""
        for key in [k for k, w in self._windows.items() if now >= w.until and not w.folded]:
            del self._windows[key]

    def _spawn(self, ref: Mapping[str, str], reason: str, message: str) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(self._send(ref, reason, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, within: float) -> None:
        """Send what is folded now and wait (at most `within` seconds) for every Event (shutdown)."""
        for key, held in list(self._windows.items()):
            if held.flush is not None:
                held.flush.cancel()
            if held.folded:
                self._close(key)
        self._windows.clear()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=within)
