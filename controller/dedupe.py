"""Remembers recent deliveries so a redelivered webhook is answered without writing again.

The pipeline keys an entry on the delivery id *and* a digest of the signed events (a delivery id
is an unsigned header: alone, a captured body sent under the id of a push still to come would make
that push look like a redelivery).

Providers keep the delivery id on redelivery (GitHub's X-GitHub-Delivery, Gitea's
X-Gitea-Delivery, GitLab's X-Gitlab-Event-UUID, ...). Only answered-successfully deliveries are
remembered: a delivery that got 503 must be processed again when the provider retries it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from cachetools import TTLCache


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """The status and JSON body first given for a delivery id."""

    status: int
    body: bytes


class DeliveryCache:
    """A bounded, time-limited map of (provider, delivery id) -> first answer. Loop-thread only.

    A `cachetools.TTLCache`: entries expire `ttl_seconds` after they were stored, and when full the
    least recently used goes first.
    """

    def __init__(self, ttl_seconds: float, max_entries: int, timer: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._timer = timer
        self._entries: TTLCache[tuple[str, str], CachedAnswer] = self._new(ttl_seconds, max_entries)

    def _new(self, ttl: float, max_entries: int) -> TTLCache[tuple[str, str], CachedAnswer]:
        return TTLCache(maxsize=max(1, max_entries), ttl=max(ttl, 1e-9), timer=self._timer)

    def resize(self, ttl_seconds: float, max_entries: int) -> None:
        """Apply new limits from a reloaded config, keeping the newest entries the new limits allow
        (a kept entry's time starts again: at worst a redelivery is recognised one TTL longer)."""
        if (ttl_seconds, max_entries) == (self.ttl, self.max_entries):
            return
        old = self._entries
        old.expire()
        self.ttl, self.max_entries = ttl_seconds, max_entries
        self._entries = self._new(ttl_seconds, max_entries)
        if ttl_seconds > 0 and max_entries > 0:
            for key in list(old)[-max_entries:]:  # the newest last
                self._entries[key] = old[key]

    def get(self, provider: str, delivery_id: str | None) -> CachedAnswer | None:
        """The remembered answer, if this delivery was seen within the TTL."""
        if not delivery_id or self.ttl <= 0:
            return None
        return self._entries.get((provider, delivery_id))

    def put(self, provider: str, delivery_id: str | None, answer: CachedAnswer) -> None:
        """Remember an answer."""
        if not delivery_id or self.ttl <= 0 or self.max_entries <= 0:
            return
        self._entries[(provider, delivery_id)] = answer

    def __len__(self) -> int:
        self._entries.expire()
        return len(self._entries)
