"""e. A GitRepo pinned by `spec.revision` to a tag, and that tag moved by a push.

What Fleet v0.16.1 does (its reconciler, and observed here): a changed `status.webhookCommit` makes
it reconcile; for a GitRepo with `spec.revision` it then resolves the revision with ls-remote
(`refs/tags/<tag>^{}` first, so an annotated tag resolves to its commit) and makes a Job when that
commit differs from the deployed one. So a tag push that fleet-webhook records on the pinned GitRepo
does reach Fleet within seconds; without it the moved tag waits for the next poll.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.e2e.steps import JOB_WITHIN, hook, track
from tools.e2e import Stack
from tools.gitea import Worktree


def move_tag(wt: Worktree, tag: str, *, annotated: bool) -> str:
    """Commit on main (pushed), point `tag` at it and force-push the tag; returns the commit."""
    commit = wt.commit_and_push("main")
    if annotated:
        wt.git("tag", "-f", "-a", "-m", f"release {tag}", tag, commit)
    else:
        wt.git("tag", "-f", tag, commit)
    wt.push(f"refs/tags/{tag}", force=True)
    return commit


def pinned(stack: Stack, wt: Worktree, tag: str, *, annotated: bool) -> tuple[str, str]:
    """A tag on the first commit, a GitRepo pinned to it (first Job seen), a hook; (namespace, first commit)."""
    if annotated:
        wt.git("tag", "-a", "-m", f"release {tag}", tag)
    else:
        wt.git("tag", tag)
    wt.push(f"refs/tags/{tag}")
    ns = stack.namespace("e")
    first = track(stack, wt, ns, "pinned", revision=tag)
    hook(stack, wt)
    return ns, first


def test_e_a_moved_lightweight_tag_ends_in_a_job_for_its_new_commit(stack: Stack, repo: Callable[[], Worktree]) -> None:
    wt = repo()
    ns, first = pinned(stack, wt, "v1", annotated=False)

    commit = move_tag(wt, "v1", annotated=False)

    stack.wait_job(ns, "pinned", commit, JOB_WITHIN)
    assert stack.gitrepo(ns, "pinned")["status"]["webhookCommit"] == commit
    assert first not in stack.job_commits(ns, "pinned")


def test_e_a_moved_annotated_tag_records_and_deploys_its_commit(stack: Stack, repo: Callable[[], Worktree]) -> None:
    wt = repo()
    ns, _ = pinned(stack, wt, "v2", annotated=True)

    commit = move_tag(wt, "v2", annotated=True)

    stack.wait_job(ns, "pinned", commit, JOB_WITHIN)  # Fleet peels the tag itself ...
    assert stack.gitrepo(ns, "pinned")["status"]["webhookCommit"] == commit  # ... and we record the commit
