"""What every replica must know about one GitRepo's recent deliveries, kept on the GitRepo itself.

One process remembers, in memory, which delivery ids it answered (dedupe.py) and which commit came
after which (decisions.CommitHistory). Several replicas behind one Service each see only some
deliveries, so a process-local copy gets two things wrong:

* an out-of-order pair split over two replicas: B->C recorded by one, the late A->B reaching another
  that never learnt "C follows B", which moves webhookCommit back to B;
* a redelivery reaching a replica that did not answer the first delivery: harmless for an ordinary
  push (the order facts make it a no-op), but a forced push, or the push a forced push rolled back,
  is written again and moves webhookCommit back.

So with `--shared-order` both facts live in the annotation `LEDGER_ANNOTATION` of the GitRepo: the
last `MAX_ENTRIES` deliveries that reached its tracked ref, in the order they were learnt, each with
its delivery id, commit, `before`, whether it was forced, and whether its commit was recorded. The
writer (updater.py) writes the ledger first and `status.webhookCommit` second, each conditional on
the resourceVersion, so a commit is never visible without the fact that orders it. Status is no
place for it: Fleet's CRD prunes unknown status fields.

Pure: no I/O; the annotation's text in, a new text out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from controller.decisions import CommitHistory
from controller.deliveries import PushEvent, RefKind
from controller.index import LEDGER_ANNOTATION

__all__ = ["LEDGER_ANNOTATION", "MAX_ENTRIES", "MAX_TEXT", "Entry", "Ledger"]

# 32 entries of ~130 bytes: about 4 KiB on each GitRepo, rewritten with every recorded commit.
MAX_ENTRIES = 32
FORMAT_VERSION = 1
_FORCED, _APPLIED = 1, 2
# Longest annotation text read: 32 entries take about 4 KiB; more is not a ledger this code wrote.
MAX_TEXT = 64 * 1024


@dataclass(frozen=True, slots=True)
class Entry:
    """One delivery as the ledger remembers it."""

    delivery: str  # "" when the host sent no delivery id
    commit: str
    before: str
    forced: bool
    applied: bool = False  # its commit was recorded (set by the next ledger write that sees it recorded)

    def same_push(self, event: PushEvent) -> bool:
        """Whether `event` is this delivery again (same id, commit, before and force flag)."""
        return (self.delivery, self.commit, self.before, self.forced) == _key(event)


def _key(event: PushEvent) -> tuple[str, str, str, bool]:
    return (event.delivery_id or "", event.commit, event.before or "", event.forced)


@dataclass(frozen=True, slots=True)
class Ledger:
    """The entries, oldest first. Immutable: `learn` returns a new ledger."""

    entries: tuple[Entry, ...] = ()

    @classmethod
    def parse(cls, raw: str | None) -> Ledger:
        """The ledger in an annotation's text; anything unreadable counts as empty (`read` says why)."""
        return cls.read(raw)[0]

    @classmethod
    def read(cls, raw: str | None) -> tuple[Ledger, str | None]:
        """The ledger in an annotation's text, and what was wrong with the text (None when nothing).

        The annotation is anyone's to edit who may edit the GitRepo, so nothing in it may raise: text
        longer than `MAX_TEXT`, JSON nested past the decoder's recursion limit, numbers past Python's
        digit limit, a list or a number instead of the object, entries of the wrong shape. The ledger
        is then empty (or keeps its good entries) and the next write replaces the text.
        """
        if not raw:
            return cls(), None
        if len(raw) > MAX_TEXT:
            return cls(), f"is longer than {MAX_TEXT} characters ({len(raw)})"
        try:
            doc = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            return cls(), f"is not JSON ({type(exc).__name__})"
        if not isinstance(doc, dict) or doc.get("v") != FORMAT_VERSION or not isinstance(doc.get("e"), list):
            return cls(), f'is not a version-{FORMAT_VERSION} ledger {{"v": {FORMAT_VERSION}, "e": [...]}}'
        entries, problem = [], None
        for number, item in enumerate(doc["e"]):
            if (
                isinstance(item, list)
                and len(item) == 4
                and all(isinstance(part, str) for part in item[:3])
                and type(item[3]) is int
            ):
                delivery, commit, before, flags = item
                entries.append(Entry(delivery, commit, before, bool(flags & _FORCED), bool(flags & _APPLIED)))
            elif problem is None:
                problem = f"entry {number} is not [delivery, commit, before, flags]"
        return cls(tuple(entries[-MAX_ENTRIES:])), problem

    def dump(self) -> str:
        """The annotation's text: compact JSON, `{"v": 1, "e": [[id, commit, before, flags], ...]}`."""
        rows = [
            [e.delivery, e.commit, e.before, (_FORCED if e.forced else 0) | (_APPLIED if e.applied else 0)]
            for e in self.entries
        ]
        return json.dumps({"v": FORMAT_VERSION, "e": rows}, separators=(",", ":"))

    def knows(self, event: PushEvent) -> bool:
        """Whether this delivery was learnt already (then learning it again changes nothing that matters)."""
        return any(e.same_push(event) for e in self.entries)

    def handled(self, event: PushEvent) -> bool:
        """Whether this delivery already had its commit recorded: a redelivery must not write again.

        Only recorded deliveries count, as only answered deliveries enter the in-process cache: a
        delivery learnt but not written (it got 503) is judged again when the host retries it. The
        id alone is not enough (it is an unsigned header): the push must be the same one too.
        """
        return bool(event.delivery_id) and any(e.same_push(event) and e.applied for e in self.entries)

    def learn(self, event: PushEvent, recorded: str) -> Ledger:
        """This ledger with `event` appended as the newest fact.

        `recorded` is the GitRepo's webhookCommit as the writer reads it under the same
        resourceVersion: the newest entry of that commit is the delivery that recorded it (every status
        write follows its own ledger write), so it is marked applied now. The same delivery learnt
        again (a retry after a conflict) moves to the end instead of appearing twice.
        """
        entries = list(self.entries)
        for i in range(len(entries) - 1, -1, -1):
            if entries[i].commit == recorded:
                entries[i] = replace(entries[i], applied=True)
                break
        entries = [e for e in entries if not e.same_push(event)]
        delivery, commit, before, forced = _key(event)
        entries.append(Entry(delivery, commit, before, forced))
        return Ledger(tuple(entries[-MAX_ENTRIES:]))

    def history(self) -> CommitHistory:
        """The commit order these entries teach, learnt in the order they were learnt (as one process would)."""
        history = CommitHistory(max_entries=MAX_ENTRIES, max_walk=MAX_ENTRIES)
        for e in self.entries:
            history.learn(
                PushEvent("", e.delivery or None, (), RefKind.BRANCH, "", e.commit, e.before, False, e.forced)
            )
        return history
