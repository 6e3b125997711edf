"""Remembers recent delivery ids so a redelivered webhook is answered without writing again.

Providers keep the delivery id on redelivery (GitHub's X-GitHub-Delivery, Gitea's
X-Gitea-Delivery, GitLab's X-Gitlab-Event-UUID, ...). Only answered-successfully deliveries are
remembered: a delivery that got 503 must be processed again when the provider retries it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """The status and JSON body first given for a delivery id."""

    status: int
    body: bytes


class DeliveryCache:
    """A bounded, time-limited map of (provider, delivery id) -> first answer. Loop-thread only."""

    def __init__(self, ttl_seconds: float, max_entries: int) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], tuple[float, CachedAnswer]] = OrderedDict()

    def resize(self, ttl_seconds: float, max_entries: int) -> None:
        """Apply new limits from a reloaded config."""
        self.ttl, self.max_entries = ttl_seconds, max_entries
        self._evict(time.monotonic())

    def get(self, provider: str, delivery_id: str | None) -> CachedAnswer | None:
        """The remembered answer, if this delivery was seen within the TTL."""
        if not delivery_id or self.ttl <= 0:
            return None
        entry = self._entries.get((provider, delivery_id))
        if entry is None:
            return None
        if time.monotonic() - entry[0] > self.ttl:
            del self._entries[(provider, delivery_id)]
            return None
        return entry[1]

    def put(self, provider: str, delivery_id: str | None, answer: CachedAnswer) -> None:
        """Remember an answer."""
        if not delivery_id or self.ttl <= 0 or self.max_entries <= 0:
            return
        now = time.monotonic()
        self._entries[(provider, delivery_id)] = (now, answer)
        self._entries.move_to_end((provider, delivery_id))
        self._evict(now)

    def __len__(self) -> int:
        return len(self._entries)

    def _evict(self, now: float) -> None:
        while self._entries and (
            len(self._entries) > self.max_entries or now - next(iter(self._entries.values()))[0] > self.ttl
        ):
            self._entries.popitem(last=False)
