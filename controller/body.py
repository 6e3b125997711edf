"""Request bodies in flight: one memory budget for all of them, larger ones spooled to disk.

Why: a receiver on the internet must not let callers who know no secret decide how much memory it
uses. Every delivery's body is held here while it arrives and until the delivery is answered. The
bytes held in memory by *all* deliveries together never exceed `memory_bytes`; a body that would
cross that line, or that grows past `spool_after` on its own, moves to an unnamed temporary file in
`spool_dir` (deleted by the kernel when closed). Spooled bytes of all deliveries are bounded by
`spool_bytes`; a body that fits neither is refused with `BudgetExhausted` (answered 503, retry).

No HTTP here: the web layer writes chunks in, the pipeline reads the body back (off the event loop
when it is spooled) only after it was authenticated, or within the small unauthenticated budget.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from dataclasses import dataclass
from typing import IO

from controller.providers.base import MacStream

READ_BACK_CHUNK = 1 << 20


class BudgetExhausted(Exception):
    """Neither memory nor spool space is left for this body (answered 503 with Retry-After)."""


@dataclass
class BodyBudget:
    """The shared accounting of every body in flight (one per process)."""

    memory_bytes: int
    spool_bytes: int
    spool_after: int
    spool_dir: str | None = None
    in_memory: int = 0
    spooled: int = 0

    def resize(self, memory_bytes: int, spool_bytes: int, spool_after: int) -> None:
        """New limits from a reloaded config; bodies already held keep what they have."""
        self.memory_bytes, self.spool_bytes, self.spool_after = memory_bytes, spool_bytes, spool_after


class Body:
    """One delivery's body: written chunk by chunk, authenticated as it streams, released on close."""

    def __init__(self, budget: BodyBudget, macs: MacStream | None = None) -> None:
        self._budget = budget
        self._macs = macs
        self._chunks: list[bytes] = []
        self._file: IO[bytes] | None = None
        self._held_memory = 0
        self._held_spool = 0
        self.size = 0

    @property
    def spooled(self) -> bool:
        """Whether the body lives in a temporary file (it is then read back off the event loop)."""
        return self._file is not None

    def write(self, chunk: bytes) -> None:
        """Append a chunk; raises BudgetExhausted when it fits nowhere."""
        if self._macs is not None:
            self._macs.update(chunk)
        self.size += len(chunk)
        budget = self._budget
        if self._file is None:
            fits_memory = budget.in_memory + len(chunk) <= budget.memory_bytes
            small = self.size <= budget.spool_after or budget.spool_bytes == 0  # 0: no spool, memory only
            if small and fits_memory:
                self._chunks.append(chunk)
                self._held_memory += len(chunk)
                budget.in_memory += len(chunk)
                return
            self._spill()
        self._reserve_spool(len(chunk))
        assert self._file is not None
        self._file.write(chunk)

    @property
    def macs(self) -> MacStream | None:
        """The route's MACs over everything written so far (the whole body once it has arrived)."""
        return self._macs

    def _spill(self) -> None:
        """Move what is in memory to a temporary file (its bytes now count against the spool budget)."""
        self._reserve_spool(self._held_memory)
        try:
            self._file = tempfile.TemporaryFile(dir=self._budget.spool_dir)  # noqa: SIM115 - closed in close()
        except OSError as exc:
            self._release_spool()
            raise BudgetExhausted(f"cannot spool a large body: {exc.strerror}") from None
        for chunk in self._chunks:
            self._file.write(chunk)
        self._chunks.clear()
        self._budget.in_memory -= self._held_memory
        self._held_memory = 0

    def _reserve_spool(self, size: int) -> None:
        budget = self._budget
        if budget.spooled + size > budget.spool_bytes:
            raise BudgetExhausted("the receiver is holding as many large bodies as it may; retry later")
        budget.spooled += size
        self._held_spool += size

    def _release_spool(self) -> None:
        self._budget.spooled -= self._held_spool
        self._held_spool = 0

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
        self._budget.in_memory -= self._held_memory
        self._held_memory = 0
        self._chunks.clear()
        if self._file is not None:
            self._file.close()
            self._file = None
        self._release_spool()
