"""Steps the end-to-end tests share: track a Gitea repository with a GitRepo, point a hook at
fleet-webhook, post a hand-made delivery, watch for Jobs that must not appear, count log lines."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from tools.e2e import WEBHOOK_SECRET, Stack
from tools.gitea import Worktree

JOB_WITHIN = 20.0  # seconds a webhook-triggered Job may take (measured: well under 2 s; Fleet requeues 5 s at most)
VERIFICATION_FAILED = "webhook verification failed"
QUIET = 4.0  # seconds to watch for a Job that must not appear (Fleet acts within 0.2 s once triggered)


def track(stack: Stack, wt: Worktree, namespace: str, name: str, *, url: str | None = None, **spec: Any) -> str:
    """Create a GitRepo on the Gitea repo and wait for Fleet's first Job; returns that commit."""
    spec.setdefault("pollingInterval", "1h")
    stack.create_gitrepo(namespace, name, url or clone_url(stack, wt), **spec)
    ref = f"refs/tags/{spec['revision']}" if "revision" in spec else f"refs/heads/{spec.get('branch', 'main')}"
    head = wt.remote_commit(ref)
    stack.wait_first_job(namespace, name, head)
    return head


def clone_url(stack: Stack, wt: Worktree) -> str:
    assert stack.gitea is not None
    return stack.gitea.clone_url(wt.repo)


def html_url(stack: Stack, wt: Worktree) -> str:
    return clone_url(stack, wt).removesuffix(".git")


def hook(stack: Stack, wt: Worktree, kind: str = "gitea", **options: Any) -> int:
    """Point a Gitea webhook of `kind` at fleet-webhook."""
    assert stack.gitea is not None
    assert stack.webhook is not None
    options.setdefault("secret", WEBHOOK_SECRET)
    return stack.gitea.create_hook(wt.repo, kind, stack.webhook.url, **options)


def post(stack: Stack, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
    """Deliver a hand-made webhook to fleet-webhook; (status, JSON body)."""
    assert stack.webhook is not None
    req = urllib.request.Request(stack.webhook.url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def assert_no_job(stack: Stack, namespace: str, name: str, commit: str, quiet: float = QUIET) -> None:
    deadline = time.monotonic() + quiet
    while time.monotonic() < deadline:
        assert commit not in stack.job_commits(namespace, name), stack.explain(namespace, name)
        time.sleep(0.1)


def log_count(stack: Stack, msg: str) -> int:
    """How many fleet-webhook log lines carry this message."""
    assert stack.webhook is not None
    return sum(1 for line in stack.webhook.log_lines() if line.get("msg") == msg)


def wait_log_count(stack: Stack, msg: str, count: int, within: float = 10.0) -> None:
    """Wait until `count` log lines carry `msg` (a delivery that fails verification is not parsed,
    so its log line cannot name the repository: the count is the sync point)."""
    assert stack.webhook is not None
    deadline = time.monotonic() + within
    while log_count(stack, msg) < count:
        assert time.monotonic() < deadline, f"fewer than {count} {msg!r} lines:\n" + stack.webhook.log_tail(20)
        time.sleep(0.1)
