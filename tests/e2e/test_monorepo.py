"""The monorepo paths rule, measured end to end: 50 GitRepos on one Gitea repository, each deploying
its own folder and opted in; one `git push` that changes one folder ends in exactly one new Fleet Job.

Without the rule every GitRepo of the repository gets the new commit and Fleet makes 50 Jobs for
one push (tests/e2e/test_push_to_job.py shows the one-GitRepo form of that chain).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kubernetes import client

from controller.index import TRIGGER_ON_PATHS_ANNOTATION
from tests.conftest import SUMMARY_LINES
from tests.e2e.steps import JOB_WITHIN, QUIET, clone_url, hook
from tools.e2e import GROUP, PLURAL, VERSION, Stack
from tools.fleet import list_jobs
from tools.gitea import Worktree

APPS = 50
TOUCHED = 17
FIRST_JOBS_WITHIN = 60.0  # Fleet polls each new GitRepo once; 50 ls-remotes against a local Gitea


def app(i: int) -> str:
    return f"app-{i:02}"


def write_and_push(wt: Worktree, files: dict[str, str], message: str) -> str:
    """Write these files, commit them in one commit, push main; the pushed commit."""
    for name, text in files.items():
        path = wt.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    wt.git("add", "--", *files)
    wt.git("commit", "-q", "-m", message)
    wt.push("HEAD:refs/heads/main")
    return wt.git("rev-parse", "HEAD")


def create_gitrepos(stack: Stack, namespace: str, url: str) -> None:
    """The 50 GitRepos, opted in by annotation, each deploying `apps/app-NN` (hourly polling, so a Job
    that appears within seconds of the push can only come from the webhook)."""
    assert stack.api is not None
    api = client.CustomObjectsApi(stack.api)
    for i in range(APPS):
        body: dict[str, Any] = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "GitRepo",
            "metadata": {"name": app(i), "annotations": {TRIGGER_ON_PATHS_ANNOTATION: "true"}},
            "spec": {"repo": url, "branch": "main", "paths": [f"apps/{app(i)}"], "pollingInterval": "1h"},
        }
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def commits_by_gitrepo(stack: Stack, namespace: str) -> dict[str, set[str]]:
    """Every GitRepo's Job commits, from one list of the namespace's Jobs."""
    assert stack.api is not None
    out: dict[str, set[str]] = {}
    for job in list_jobs(stack.api, namespace):
        out.setdefault(job["gitrepo"], set()).add(job["commit"])
    return out


def wait_first_jobs(stack: Stack, namespace: str, head: str) -> float:
    """Seconds until Fleet's first Job (for `head`) exists for every GitRepo. Those still without one
    after the bulk wait get `Stack.wait_first_job`'s nudge one by one."""
    started = time.monotonic()
    deadline = started + 20.0
    missing = [app(i) for i in range(APPS)]
    while time.monotonic() < deadline:
        have = commits_by_gitrepo(stack, namespace)
        missing = [app(i) for i in range(APPS) if head not in have.get(app(i), set())]
        if not missing:
            break
        time.sleep(0.2)
    for name in missing:
        stack.wait_first_job(namespace, name, head, FIRST_JOBS_WITHIN)
    return time.monotonic() - started


def test_a_push_to_one_folder_of_a_monorepo_makes_one_job_not_fifty(stack: Stack, repo: Callable[[], Worktree]) -> None:
    assert stack.webhook is not None
    wt = repo()
    head = write_and_push(
        wt, {f"apps/{app(i)}/configmap.yaml": f"# {app(i)}\n" for i in range(APPS)}, "fifty apps"
    )  # before any hook: no webhook for this one
    ns = stack.namespace("mono")
    started = time.monotonic()
    create_gitrepos(stack, ns, clone_url(stack, wt))
    first_jobs = wait_first_jobs(stack, ns, head)
    hook(stack, wt)

    pushed_at = time.monotonic()
    commit = write_and_push(wt, {f"apps/{app(TOUCHED)}/configmap.yaml": "# changed\n"}, "change one app")
    seconds = stack.wait_job(ns, app(TOUCHED), commit, JOB_WITHIN)
    quiet_until = time.monotonic() + QUIET
    while time.monotonic() < quiet_until:  # the other 49 stay without a Job for the commit
        with_commit = {name for name, commits in commits_by_gitrepo(stack, ns).items() if commit in commits}
        assert with_commit == {app(TOUCHED)}, stack.explain(ns, sorted(with_commit - {app(TOUCHED)})[0])
        time.sleep(0.1)
    total = time.monotonic() - started

    [handled] = [line for line in stack.webhook.log_lines() if line.get("commit") == commit]
    assert handled["msg"] == "delivery handled"
    assert (handled["updated"], handled["skipped"]) == ([f"{ns}/{app(TOUCHED)}"], APPS - 1)
    webhook_commits = {app(i): stack.gitrepo(ns, app(i)).get("status", {}).get("webhookCommit") for i in range(APPS)}
    assert {name for name, c in webhook_commits.items() if c == commit} == {app(TOUCHED)}
    assert set(webhook_commits.values()) <= {commit, None, ""}
    assert time.monotonic() - pushed_at < JOB_WITHIN + QUIET + 5
    SUMMARY_LINES.append(
        f"e2e monorepo: {APPS} GitRepos created and their first Jobs in {first_jobs:.1f}s; a push to one folder"
        f" -> 1 Job in {seconds:.2f}s, {APPS - 1} without one for {QUIET:.0f}s; scenario {total:.1f}s"
    )
