"""Writing a decision to a GitRepo the way Fleet's receiver does, but safely.

For each GitRepo to update:
1. JSON-merge-patch `/status` with `webhookCommit` and `lastWebhookTime`, conditional on the
   resourceVersion we last saw. Writes to one GitRepo are serialized inside the process (one lock
   per GitRepo) and each starts from the newest copy the index holds, judged again by
   `decisions.commit_decision`, so two deliveries never conflict with each other. On 409 (another
   writer, e.g. Fleet itself) we re-read the GitRepo and ask the same rule again (it may already
   carry this commit, or a newer one), so a concurrent writer never makes us move it backwards.
   Transient API errors (5xx, 429, connection errors) are retried with jittered backoff until the
   delivery's deadline.
2. Polling policy: when `polling.manage` is on and `spec.pollingInterval` is unset, set it to the
   webhook interval and mark it with an annotation holding the value we wrote. Never touch an
   interval a user set.
3. Emit a Kubernetes Event on the GitRepo (best effort, in the background, at most one per GitRepo
   and reason per `event_window` seconds: controller/events.py).

With `shared_order` (several replicas, `--shared-order`), step 1 is preceded by a conditional write of
the GitRepo's ledger annotation (ledger.py): the delivery id and the commit order, learnt before the
commit is recorded, so every replica judges a GitRepo from the same facts, and the per-GitRepo lock
of this process is replaced by the resourceVersion of the ledger write. A verdict that writes
nothing is taken from a fresh read, never from a possibly stale index copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from controller import polling
from controller.config import PollingPolicy
from controller.decisions import Action, CommitHistory, commit_decision
from controller.deliveries import PushEvent
from controller.events import EventCoalescer
from controller.index import MANAGED_INTERVAL_ANNOTATION, GitRepoInfo, gitrepo_info
from controller.kube import ApiUnavailable, Conflict, Forbidden, Invalid, Kube, NotFound, now_rfc3339
from controller.ledger import LEDGER_ANNOTATION, Ledger
from controller.metrics import Metrics

log = logging.getLogger("fleet_webhook.updater")
MAX_CONFLICT_RETRIES = 5


# At most one Event per GitRepo and reason in this many seconds (--event-interval-seconds).
DEFAULT_EVENT_WINDOW_SECONDS = 60.0


class Outcome(enum.StrEnum):
    """Result of writing one GitRepo."""

    UPDATED = "updated"
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What happened to one GitRepo, with a reason for anything but UPDATED."""

    gitrepo: GitRepoInfo
    outcome: Outcome
    reason: str
    polling_interval_set: str | None = None
    polling_error: str | None = None  # the API server refused the interval (422): shown in the answer


class GitRepoUpdater:
    """Applies update decisions through the API, keeping the index current with what it wrote."""

    def __init__(
        self,
        kube: Kube,
        metrics: Metrics,
        on_written: Callable[[GitRepoInfo], None],
        latest: Callable[[str, str], GitRepoInfo | None] = lambda _ns, _name: None,
        shared_order: bool = False,
        event_window: float = DEFAULT_EVENT_WINDOW_SECONDS,
    ) -> None:
        self.kube = kube
        self.metrics = metrics
        self.on_written = on_written
        self.latest = latest
        self.shared_order = shared_order
        self.events = EventCoalescer(kube.create_event, event_window)
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}
        # When this process last recorded a webhook per GitRepo, and when it started: the fallback's
        # clock where the CRD has no status.lastWebhookTime (Fleet <= v0.14; polling.webhook_age).
        self.seen_at: dict[tuple[str, str], float] = {}
        self.started_at = time.time()

    @contextlib.asynccontextmanager
    async def _serialized(self, ref: tuple[str, str]) -> AsyncIterator[None]:
        """One write at a time per GitRepo; the lock is dropped when nobody waits for it."""
        lock, users = self._locks.get(ref, (asyncio.Lock(), 0))
        self._locks[ref] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[ref]
            if users <= 1:
                del self._locks[ref]
            else:
                self._locks[ref] = (lock, users - 1)

    async def record(
        self, info: GitRepoInfo, event: PushEvent, policy: PollingPolicy, deadline: float, history: CommitHistory
    ) -> WriteResult:
        """Write `event.commit` to one GitRepo; never raises for API trouble (returns FAILED).

        `history` is the commit order known to the route the delivery came in on; after a conflict
        it decides whether the commit now stored is newer than ours.
        """
        started = time.monotonic()
        try:
            async with self._serialized(info.ref):
                current = self.latest(*info.ref) or info
                if self.shared_order:
                    result = await self._record_shared(current, event, deadline)
                else:
                    result = await self._record_status(current, event, deadline, history)
        except Forbidden as exc:
            self.metrics.gitrepo_write_failures.labels("forbidden").inc()
            return WriteResult(info, Outcome.FAILED, f"RBAC refused the GitRepo write: {exc}")
        except (ApiUnavailable, TimeoutError) as exc:
            self.metrics.gitrepo_write_failures.labels("unavailable").inc()
            return WriteResult(info, Outcome.FAILED, f"Kubernetes API unavailable: {exc}")
        finally:
            self.metrics.api_write_seconds.observe(time.monotonic() - started)
        if result.outcome in (Outcome.UPDATED, Outcome.UNCHANGED):
            self.seen_at[info.ref] = time.time()
        if result.outcome is not Outcome.UPDATED:
            return result
        interval, error = None, None
        if policy.manage:
            interval, error = await self._apply_polling(result.gitrepo, policy, deadline)
        self._emit_event(result.gitrepo, event)
        return WriteResult(result.gitrepo, Outcome.UPDATED, "commit recorded", interval, error)

    async def _record_status(
        self, info: GitRepoInfo, event: PushEvent, deadline: float, history: CommitHistory
    ) -> WriteResult:
        current = info
        attempt = 0
        while True:
            verdict = self._judge(current, event, history)
            if verdict is not None:
                return verdict
            try:
                obj = await self._patch_status(current, event)
            except Conflict:
                self.metrics.write_conflicts.labels("status").inc()
                attempt += 1
                if attempt > MAX_CONFLICT_RETRIES:
                    raise ApiUnavailable("too many conflicting writers") from None
                fresh = await self._reread(current)
                if fresh is None:
                    return WriteResult(current, Outcome.SKIPPED, "GitRepo was deleted")
                current = fresh
                continue
            except NotFound:
                return WriteResult(current, Outcome.SKIPPED, "GitRepo was deleted")
            except ApiUnavailable:
                attempt += 1
                delay = min(0.05 * 2**attempt, 2.0) * random.uniform(0.5, 1.0)
                if time.monotonic() + delay >= deadline:
                    raise
                await asyncio.sleep(delay)
                continue
            written = self._written(obj) or current
            self.metrics.gitrepos_updated.labels(event.provider).inc()
            return WriteResult(written, Outcome.UPDATED, "commit recorded")

    async def _record_shared(self, info: GitRepoInfo, event: PushEvent, deadline: float) -> WriteResult:
        """`_record_status` with the GitRepo's ledger as the order and dedupe memory (ledger.py).

        Each attempt reads the ledger off the copy in hand and judges with it. A write goes ledger
        first, then status, each conditional on the resourceVersion the previous step returned; a
        conflict (another replica, Fleet) means re-read and judge again, until the deadline.
        """
        current, fresh, attempt = info, False, 0
        while True:
            ledger, problem = Ledger.read(current.ledger)
            if problem is not None:
                log.warning(
                    "ledger annotation unreadable, taken as empty",
                    extra={"gitrepo": str(current), "annotation": LEDGER_ANNOTATION, "error": problem},
                )
            if ledger.handled(event):
                return WriteResult(current, Outcome.UNCHANGED, f"delivery {event.delivery_id} was already recorded")
            learnt = ledger.learn(event, current.webhook_commit)
            verdict = self._judge(current, event, learnt.history())
            if verdict is not None and ledger.knows(event):
                if fresh:
                    return verdict
                reread = await self._reread(current)  # nothing to write: make sure the copy was not stale
                if reread is None:
                    return WriteResult(current, Outcome.SKIPPED, "GitRepo was deleted")
                current, fresh = reread, True
                continue
            try:
                obj = await self.kube.patch_gitrepo(
                    current.namespace,
                    current.name,
                    {"metadata": {"annotations": {LEDGER_ANNOTATION: learnt.dump()}}},
                    current.resource_version or None,
                )
                current = self._written(obj) or current
                if verdict is not None:
                    return verdict  # learnt (as one process learns every delivery), but nothing to record
                obj = await self._patch_status(current, event)
            except Conflict:
                self.metrics.write_conflicts.labels("ledger").inc()  # the ledger or the status after it
                attempt += 1
                await self._pause(attempt, deadline, ApiUnavailable("conflicting writers until the deadline"))
                reread = await self._reread(current)
                if reread is None:
                    return WriteResult(current, Outcome.SKIPPED, "GitRepo was deleted")
                current, fresh = reread, True
                continue
            except NotFound:
                return WriteResult(current, Outcome.SKIPPED, "GitRepo was deleted")
            except ApiUnavailable as exc:
                attempt += 1
                await self._pause(attempt, deadline, exc)
                continue
            written = self._written(obj) or current
            self.metrics.gitrepos_updated.labels(event.provider).inc()
            return WriteResult(written, Outcome.UPDATED, "commit recorded")

    def _written(self, obj: dict[str, Any]) -> GitRepoInfo | None:
        """What a write answered, converted once, handed to `on_written` (the index) and returned."""
        info = gitrepo_info(obj)
        if info is not None:
            self.on_written(info)
        return info

    @staticmethod
    async def _pause(attempt: int, deadline: float, give_up: Exception) -> None:
        """Jittered backoff before the next attempt; raises `give_up` when it would pass the deadline."""
        delay = min(0.02 * 2**attempt, 1.0) * random.uniform(0.5, 1.0)
        if time.monotonic() + delay >= deadline:
            raise give_up
        await asyncio.sleep(delay)

    async def _patch_status(self, current: GitRepoInfo, event: PushEvent) -> dict[str, Any]:
        """Record `event.commit`, conditional on the resourceVersion `current` was read at."""
        return await self.kube.patch_gitrepo_status(
            current.namespace,
            current.name,
            {"webhookCommit": event.commit, "lastWebhookTime": now_rfc3339()},
            current.resource_version or None,
        )

    @staticmethod
    def _judge(info: GitRepoInfo, event: PushEvent, history: CommitHistory) -> WriteResult | None:
        """The decision rule again, on the GitRepo as it is now; None when the write should go ahead."""
        decision = commit_decision(event, info, "", history)
        if decision.action is Action.UNCHANGED:
            return WriteResult(info, Outcome.UNCHANGED, decision.reason)
        if decision.action is Action.SKIP:
            return WriteResult(info, Outcome.SKIPPED, decision.reason)
        return None

    async def _reread(self, info: GitRepoInfo) -> GitRepoInfo | None:
        try:
            obj = await self.kube.get_gitrepo(info.namespace, info.name)
        except NotFound:
            return None
        return self._written(obj)

    async def _apply_polling(
        self, info: GitRepoInfo, policy: PollingPolicy, deadline: float
    ) -> tuple[str | None, str | None]:
        """Set our interval when none is set; returns (the value written, the API's refusal), either None."""
        current = info
        for _ in range(MAX_CONFLICT_RETRIES):
            if current.polling_interval is not None or current.disable_polling:
                return None, None  # a user's interval is theirs; with polling disabled an interval is meaningless
            try:
                obj = await self.kube.patch_gitrepo(
                    current.namespace,
                    current.name,
                    {
                        "spec": {"pollingInterval": policy.webhook_interval},
                        "metadata": {"annotations": {MANAGED_INTERVAL_ANNOTATION: policy.webhook_interval}},
                    },
                    current.resource_version or None,
                )
            except Conflict:
                self.metrics.write_conflicts.labels("polling").inc()
                fresh = await self._reread(current)
                if fresh is None:
                    return None, None
                current = fresh
                continue
            except Invalid as exc:  # the CRD (or an admission policy) refuses the value: say so, never succeed silently
                self.metrics.polling_changes.labels("rejected").inc()
                log.warning("polling interval refused", extra={"gitrepo": str(current), "error": str(exc)})
                return None, f"spec.pollingInterval {policy.webhook_interval!r} refused by the API server: {exc}"
            except (ApiUnavailable, Forbidden, NotFound, TimeoutError) as exc:
                log.warning(
                    "polling interval not set",
                    extra={"gitrepo": str(current), "error": str(exc)},
                )
                return None, None
            self._written(obj)
            self.metrics.polling_changes.labels("set").inc()
            return policy.webhook_interval, None
        return None, None

    async def revert_polling(self, info: GitRepoInfo) -> bool:
        """Remove the interval we set (only if it is still exactly ours: polling.interval_is_ours). True when reverted."""
        if not polling.interval_is_ours(info)[0]:
            return False
        try:
            obj = await self.kube.patch_gitrepo(
                info.namespace,
                info.name,
                {"spec": {"pollingInterval": None}, "metadata": {"annotations": {MANAGED_INTERVAL_ANNOTATION: None}}},
                info.resource_version or None,
            )
        except (Conflict, NotFound, ApiUnavailable, Forbidden, Invalid, TimeoutError) as exc:
            log.info("polling fallback postponed", extra={"gitrepo": str(info), "error": str(exc)})
            return False
        self._written(obj)
        self.metrics.polling_changes.labels("reverted").inc()
        self._emit(info, "WebhookPollingRestored", "no webhook for a while: pollingInterval we set was removed")
        return True

    def _emit_event(self, info: GitRepoInfo, event: PushEvent) -> None:
        message = f"{event.provider} push to {event.ref_kind} {event.ref_name} recorded commit {event.commit}" + (
            f" (delivery {event.delivery_id})" if event.delivery_id else ""
        )
        self._emit(info, "WebhookCommit", message)

    def _emit(self, info: GitRepoInfo, reason: str, message: str) -> None:
        ref = {"namespace": info.namespace, "name": info.name, "resourceVersion": info.resource_version}
        self.events.emit(ref, reason, message)

    async def drain(self, within: float) -> None:
        """Send the Events folded so far and wait for every Event to be sent (shutdown)."""
        await self.events.drain(within)
