"""Request bodies in flight: one memory budget for all of them, larger ones spooled to disk.

Why: a receiver on the internet must not let callers who know no secret decide how much memory it
uses. Every delivery's body is held here while it arrives and until the delivery is answered. The
bytes held in memory by *all* deliveries together never exceed `memory_bytes`; a body that would
cross that line, or that grows past `spool_after` on its own, moves to an unnamed temporary file in
`spool_dir` (deleted by the kernel when closed). Spooled bytes of all deliveries are bounded by
`spool_bytes`; a body that fits neither is refused with `BudgetExhausted` (answered 503, retry).

Unverified bodies (the headers did not authenticate them: a signature is checked only once the last
byte is in, or the route needs none) may hold only `unverified_share` of either budget, so the rest
is always there for deliveries already authenticated. And a body that needs room takes it from the
unverified bodies still arriving: the oldest body of the sender holding the most unverified bytes
is evicted (`BodyEvicted`, answered 503) until the new one fits. Whoever parks slow or compressed
uploads to fill the budget loses them to the next delivery; a real push, which arrives in
milliseconds, is never the oldest for long. Sizes count what the body inflates to (aiohttp hands
over decompressed chunks), never the bytes on the wire.

No HTTP here: the web layer writes chunks in, the pipeline reads the body back (off the event loop
when it is spooled) only after it was authenticated, or within the small unauthenticated budget.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Literal

from controller.config import Limits
from controller.providers.base import MacStream

READ_BACK_CHUNK = 1 << 20

Kind = Literal["memory", "spool"]


class BudgetExhausted(Exception):
    """Neither memory nor spool space is left for this body (answered 503 with Retry-After)."""


class BodyEvicted(BudgetExhausted):
    """This unverified body was still arriving when another delivery needed its room."""


@dataclass(eq=False)
class BodyBudget:
    """The shared accounting of every body in flight (one per process)."""

    memory_bytes: int
    spool_bytes: int
    spool_after: int
    spool_dir: str | None = None
    unverified_share: float = 1.0
    in_memory: int = 0
    spooled: int = 0
    unverified_memory: int = 0
    unverified_spooled: int = 0
    evictions: int = 0
    # Unverified bodies still arriving (the only ones that may be evicted), oldest first.
    arriving: dict[Body, None] = field(default_factory=dict)

    @classmethod
    def from_limits(cls, limits: Limits, spool_dir: str | None = None) -> BodyBudget:
        """The budget a config's `limits` describe."""
        budget = cls(limits.body_memory_bytes, limits.spool_bytes, limits.spool_after_bytes, spool_dir)
        budget.resize(limits)
        return budget

    def resize(self, limits: Limits) -> None:
        """New limits from a reloaded config; bodies already held keep what they have."""
        self.memory_bytes, self.spool_bytes = limits.body_memory_bytes, limits.spool_bytes
        self.spool_after, self.unverified_share = limits.spool_after_bytes, limits.unverified_body_share

    def fits(self, kind: Kind, size: int, unverified: bool) -> bool:
        """Whether `size` more bytes of `kind` fit the whole budget (and the unverified share, if so)."""
        if kind == "memory":
            held, limit, held_unverified = self.in_memory, self.memory_bytes, self.unverified_memory
        else:
            held, limit, held_unverified = self.spooled, self.spool_bytes, self.unverified_spooled
        if held + size > limit:
            return False
        return not unverified or held_unverified + size <= int(limit * self.unverified_share)

    def victim(self, kind: Kind, spare: Body) -> Body | None:
        """The body to evict for room of `kind`: the oldest of the sender holding the most unverified bytes."""
        held_by: dict[str, int] = {}
        for body in self.arriving:
            held_by[body.sender] = held_by.get(body.sender, 0) + body.held
        chosen: Body | None = None
        for body in self.arriving:  # oldest first: the first of the heaviest sender wins
            if body is spare or body.held_of(kind) == 0:
                continue
            if chosen is None or held_by[body.sender] > held_by[chosen.sender]:
                chosen = body
        return chosen


class Body:
    """One delivery's body: written chunk by chunk, authenticated as it streams, released on close.

    `verified`: the headers already authenticated the delivery (its bytes use the whole budget and it
    is never evicted). `sender` groups bodies for eviction (the peer address). `on_evict` is called
    when another delivery takes this body's room, so the web layer can stop reading it at once.
    """

    def __init__(
        self,
        budget: BodyBudget,
        macs: MacStream | None = None,
        *,
        verified: bool = False,
        sender: str = "",
        on_evict: Callable[[], None] | None = None,
    ) -> None:
        self._budget = budget
        self._macs = macs
        self._chunks: list[bytes] = []
        self._file: IO[bytes] | None = None
        self._held_memory = 0
        self._held_spool = 0
        self._unverified = not verified
        self._on_evict = on_evict
        self.sender = sender
        self.evicted = False
        self.size = 0
        if self._unverified:
            budget.arriving[self] = None

    @property
    def spooled(self) -> bool:
        """Whether the body lives in a temporary file (it is then read back off the event loop)."""
        return self._file is not None

    @property
    def held(self) -> int:
        """Bytes of the budget this body holds, in memory and spooled."""
        return self._held_memory + self._held_spool

    def held_of(self, kind: Kind) -> int:
        """Bytes of one part of the budget this body holds."""
        return self._held_memory if kind == "memory" else self._held_spool

    def write(self, chunk: bytes) -> None:
        """Append a chunk; raises BudgetExhausted when it fits nowhere, BodyEvicted after an eviction."""
        if self.evicted:
            raise BodyEvicted("another delivery needed the room this unverified body held; retry")
        if self._macs is not None:
            self._macs.update(chunk)
        self.size += len(chunk)
        budget = self._budget
        if self._file is None:
            small = self.size <= budget.spool_after or budget.spool_bytes == 0  # 0: no spool, memory only
            if small and self._room_in_memory(len(chunk)):
                self._chunks.append(chunk)
                self._hold("memory", len(chunk))
                return
            self._spill()
        self._reserve_spool(len(chunk))
        assert self._file is not None
        self._file.write(chunk)

    def arrived(self) -> None:
        """The last byte is in: the delivery is being decided now, so its body is no longer evicted."""
        self._budget.arriving.pop(self, None)

    def verified(self) -> None:
        """The body proved authentic: its bytes leave the unverified share (they stay in the budget)."""
        self.arrived()
        if self._unverified:
            self._budget.unverified_memory -= self._held_memory
            self._budget.unverified_spooled -= self._held_spool
            self._unverified = False

    def _room_in_memory(self, size: int) -> bool:
        """Whether a small body's next `size` bytes stay in memory.

        Eviction is the last resort: a body that fits neither in memory nor in the spool evicts others
        to stay in memory (small bodies are what real pushes are), one that fits the spool moves there.
        """
        budget = self._budget
        if budget.fits("memory", size, self._unverified):
            return True
        if budget.spool_bytes and budget.fits("spool", self._held_memory + size, self._unverified):
            return False
        return self._make_room("memory", size)

    def _make_room(self, kind: Kind, size: int) -> bool:
        """Evict arriving unverified bodies until `size` bytes of `kind` fit; False if they cannot."""
        budget = self._budget
        while not budget.fits(kind, size, self._unverified):
            victim = budget.victim(kind, self)
            if victim is None:
                return False
            victim.evict()
        return True

    def evict(self) -> None:
        """Give this body's room to another delivery; its next write (or read) fails with BodyEvicted."""
        self.evicted = True
        self._budget.evictions += 1
        self.close()
        if self._on_evict is not None:
            self._on_evict()

    def _hold(self, kind: Kind, size: int) -> None:
        budget = self._budget
        if kind == "memory":
            self._held_memory += size
            budget.in_memory += size
            if self._unverified:
                budget.unverified_memory += size
        else:
            self._held_spool += size
            budget.spooled += size
            if self._unverified:
                budget.unverified_spooled += size

    def _release(self) -> None:
        budget = self._budget
        budget.in_memory -= self._held_memory
        budget.spooled -= self._held_spool
        if self._unverified:
            budget.unverified_memory -= self._held_memory
            budget.unverified_spooled -= self._held_spool
        self._held_memory = self._held_spool = 0

    @property
    def macs(self) -> MacStream | None:
        """The route's MACs over everything written so far (the whole body once it has arrived)."""
        return self._macs

    def _spill(self) -> None:
        """Move what is in memory to a temporary file (its bytes now count against the spool budget)."""
        held = self._held_memory
        if not self._make_room("spool", held):
            raise BudgetExhausted("the receiver is holding as many large bodies as it may; retry later")
        try:
            self._file = tempfile.TemporaryFile(dir=self._budget.spool_dir)  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise BudgetExhausted(f"cannot spool a large body: {exc.strerror}") from None
        for chunk in self._chunks:
            self._file.write(chunk)
        self._chunks.clear()
        self._hold("memory", -held)
        self._hold("spool", held)

    def _reserve_spool(self, size: int) -> None:
        if not self._make_room("spool", size):
            raise BudgetExhausted("the receiver is holding as many large bodies as it may; retry later")
        self._hold("spool", size)

    def in_memory_bytes(self) -> bytes:
        """The body when it is held in memory (callers check `spooled` first)."""
        return b"".join(self._chunks)

    async def read(self) -> bytes:
        """The whole body; a spooled one is read back in a worker thread."""
        if self._file is None:
            return self.in_memory_bytes()
        return await asyncio.to_thread(self._read_file)

    def _read_file(self) -> bytes:
        assert self._file is not None
        self._file.flush()
        return os.pread(self._file.fileno(), self.size, 0)

    def worker_descriptor(self) -> int:
        """A new descriptor of the spooled file, owned (and closed) by the caller.

        The parse worker opens the body as /proc/<pid>/fd/<this descriptor>. A descriptor of its own
        keeps that path naming this body until the worker has answered, even when the delivery gave
        up and closed the body meanwhile (its number could otherwise go to another body's file).
        """
        assert self._file is not None
        self._file.flush()
        return os.dup(self._file.fileno())

    def close(self) -> None:
        """Give the memory and spool space back; idempotent."""
        self._release()
        self._chunks.clear()
        self._budget.arriving.pop(self, None)
        if self._file is not None:
            self._file.close()
            self._file = None
