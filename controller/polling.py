"""The polling policy's pure decisions: whose `spec.pollingInterval` it is, and when a fallback is due.

Reverting an interval is a spec change, so it bumps the GitRepo's generation and Fleet re-runs its
gitjob; it must only ever undo what this product wrote, never what a user or a GitOps tool set:

* our annotation (`fleet-webhook.cattle.io/polling-interval-set`) still equals the interval, and
* no other field manager owns `spec.pollingInterval` (managedFields: a GitOps tool that applies the
  same value server-side shares the field), and no client-side apply (kubectl, Argo CD) names it in
  its last-applied-configuration.

When the webhook time is unknown (Fleet <= v0.14's GitRepo status has no `lastWebhookTime`, so the
API server prunes it), the age of the last webhook is what this process saw itself, counted at the
earliest from its start: never "infinitely old", which would revert one fallback period after every
webhook.
"""

from __future__ import annotations

from datetime import UTC, datetime

from controller.index import GitRepoInfo

# kube.FIELD_MANAGER (a pure module does not import kube; tests/unit/test_polling_decisions.py keeps
# them equal), and the Kubernetes client's default name, with which earlier versions wrote.
FIELD_MANAGER = "fleet-webhook"
LEGACY_MANAGER = "OpenAPI-Generator"
OUR_MANAGERS = frozenset({FIELD_MANAGER, LEGACY_MANAGER})


def interval_is_ours(info: GitRepoInfo) -> tuple[bool, str]:
    """Whether the fallback may remove this GitRepo's interval, and if not, why not."""
    if info.managed_interval is None:
        return False, "no interval set by fleet-webhook"
    if info.polling_interval != info.managed_interval:
        return False, f"spec.pollingInterval {info.polling_interval!r} was changed after fleet-webhook set it"
    others = [owner for owner in info.interval_owners if owner not in OUR_MANAGERS]
    if others:
        return False, f"spec.pollingInterval is also managed by {', '.join(others)}"
    return True, ""


def webhook_age(info: GitRepoInfo, now: float, seen_at: float | None, started_at: float) -> float:
    """Seconds since the GitRepo's last webhook: `status.lastWebhookTime`, else what this process saw."""
    stamp = parse_time(info.last_webhook_time) if info.last_webhook_time else None
    if stamp is not None:
        return now - stamp
    return now - max(seen_at or 0.0, started_at)


def fallback_due(
    info: GitRepoInfo, fallback_after: float, now: float, seen_at: float | None, started_at: float
) -> bool:
    """Whether the interval we set should be removed now (no webhook for `fallback_after` seconds)."""
    if fallback_after <= 0 or not interval_is_ours(info)[0]:
        return False
    return webhook_age(info, now, seen_at, started_at) >= fallback_after


def parse_time(stamp: str) -> float | None:
    """Epoch seconds of an RFC 3339 time as Kubernetes writes it; None when unreadable.

    Public for metrics.LastWebhookTimes, which exports `status.lastWebhookTime` the same way.
    """
    try:
        parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
