"""git push -> Gitea webhook -> fleet-webhook -> Fleet's gitjob controller -> a Job for the pushed commit.

Every GitRepo here polls once an hour (`pollingInterval: 1h`) unless the scenario is about polling,
so a Job that appears within seconds of a push can only come from the webhook. Fleet makes one Job
when a GitRepo is created (its first ls-remote); `track()` waits for it so that later assertions are
about the push. Nothing runs the Jobs (no kubelet): the Job object and its `commit` annotation are
Fleet's decision, which is what a user waits for.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.e2e.steps import (
    JOB_WITHIN,
    VERIFICATION_FAILED,
    assert_no_job,
    clone_url,
    hook,
    html_url,
    log_count,
    post,
    track,
    wait_log_count,
)
from tests.support import delivery
from tools.e2e import WEBHOOK_SECRET, Stack
from tools.gitea import Worktree

# --- a. each Gitea hook form -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "content_type"), [("gitea", "json"), ("gogs", "json"), ("gitea", "form")], ids=["gitea", "gogs", "form"]
)
def test_a_push_ends_in_a_job_for_the_pushed_commit(
    stack: Stack, repo: Callable[[], Worktree], kind: str, content_type: str
) -> None:
    wt = repo()
    ns = stack.namespace("a")
    track(stack, wt, ns, "apps")
    hook(stack, wt, kind, content_type=content_type)

    commit = wt.commit_and_push("main")
    seconds = stack.wait_job(ns, "apps", commit, JOB_WITHIN)

    assert stack.gitrepo(ns, "apps")["status"]["webhookCommit"] == commit
    assert [j["commit"] for j in stack.jobs(ns, "apps")] == [commit], "Fleet replaces the previous Job"
    assert seconds < JOB_WITHIN
    assert stack.gitea is not None
    [sent] = stack.gitea.hook_tasks(wt.repo)  # what Gitea recorded: one push, answered 200
    assert (sent["event"], sent["delivered"], sent["succeeded"], sent["status"]) == ("push", True, True, 200)


# --- b. two namespaces, both URL forms ---------------------------------------------------------


def test_b_gitrepos_in_two_namespaces_with_either_url_form_both_get_a_job(
    stack: Stack, repo: Callable[[], Worktree]
) -> None:
    wt = repo()
    ns_clone, ns_html = stack.namespace("b-clone"), stack.namespace("b-html")
    track(stack, wt, ns_clone, "apps", url=clone_url(stack, wt))  # http://.../owner/repo.git
    track(stack, wt, ns_html, "apps", url=html_url(stack, wt))  # http://.../owner/repo
    hook(stack, wt)

    commit = wt.commit_and_push("main")

    stack.wait_job(ns_clone, "apps", commit, JOB_WITHIN)
    stack.wait_job(ns_html, "apps", commit, JOB_WITHIN)


# --- c. another branch --------------------------------------------------------------------------


def test_c_a_push_to_another_branch_makes_no_job_for_main(stack: Stack, repo: Callable[[], Worktree]) -> None:
    wt = repo()
    wt.commit_and_push("dev")
    wt.git("checkout", "-q", "main")
    ns = stack.namespace("c")
    main_head = track(stack, wt, ns, "apps-main")
    track(stack, wt, ns, "apps-dev", branch="dev")
    hook(stack, wt)

    commit = wt.commit_and_push("dev")

    stack.wait_job(ns, "apps-dev", commit, JOB_WITHIN)  # the push did reach Fleet ...
    assert_no_job(stack, ns, "apps-main", commit)  # ... and left the GitRepo on main alone
    assert stack.job_commits(ns, "apps-main") == {main_head}
    assert stack.gitrepo(ns, "apps-main")["status"].get("webhookCommit") in (None, "", main_head)


# --- d. force-push rollback ---------------------------------------------------------------------


def test_d_a_force_push_rollback_ends_in_a_job_for_the_older_commit(stack: Stack, repo: Callable[[], Worktree]) -> None:
    wt = repo()
    ns = stack.namespace("d")
    track(stack, wt, ns, "apps")
    hook(stack, wt)
    older = wt.commit_and_push("main")
    stack.wait_job(ns, "apps", older, JOB_WITHIN)
    newer = wt.commit_and_push("main")
    stack.wait_job(ns, "apps", newer, JOB_WITHIN)

    wt.git("reset", "-q", "--hard", older)
    wt.push("HEAD:refs/heads/main", force=True)

    stack.wait_job(ns, "apps", older, JOB_WITHIN)


# --- f. GitHub and GitLab deliveries naming the Gitea repository ---------------------------------


@pytest.mark.parametrize("provider", ["github", "gitlab"])
def test_f_github_and_gitlab_deliveries_end_in_a_job(stack: Stack, repo: Callable[[], Worktree], provider: str) -> None:
    wt = repo()  # no Gitea hook: the delivery below is the only webhook
    ns = stack.namespace("f")
    before = track(stack, wt, ns, "apps")
    commit = wt.commit_and_push("main")

    d = delivery(provider, https_url=html_url(stack, wt), commit=commit, before=before, secret=WEBHOOK_SECRET)
    status, body = post(stack, d.headers, d.body)

    assert status == 200, body
    assert {(u["namespace"], u["name"]) for u in body["updated"]} == {(ns, "apps")}
    stack.wait_job(ns, "apps", commit, JOB_WITHIN)


# --- g. wrong secret; webhook before the push ----------------------------------------------------


def test_g_a_wrong_secret_is_refused_and_makes_no_job(stack: Stack, repo: Callable[[], Worktree]) -> None:
    wt = repo()
    ns = stack.namespace("g")
    before = track(stack, wt, ns, "apps")
    hook(stack, wt, secret="not-the-secret")

    failures = log_count(stack, VERIFICATION_FAILED)
    commit = wt.commit_and_push("main")
    wait_log_count(stack, VERIFICATION_FAILED, failures + 1)  # Gitea's delivery was refused
    d = delivery("gitea", https_url=html_url(stack, wt), commit=commit, before=before, secret="not-the-secret")
    status, body = post(stack, d.headers, d.body)

    assert status == 401, body
    assert_no_job(stack, ns, "apps", commit)
    assert stack.gitrepo(ns, "apps")["status"].get("webhookCommit") in (None, "", before)


def test_g_a_webhook_before_the_push_is_visible_waits_for_the_push(stack: Stack, repo: Callable[[], Worktree]) -> None:
    wt = repo()  # no hook: the early delivery is sent by hand
    ns = stack.namespace("g-early")
    before = track(stack, wt, ns, "apps")
    commit = wt.commit("committed, not pushed yet")

    d = delivery("gitea", https_url=html_url(stack, wt), commit=commit, before=before, secret=WEBHOOK_SECRET)
    status, body = post(stack, d.headers, d.body)
    assert status == 200, body
    assert stack.gitrepo(ns, "apps")["status"]["webhookCommit"] == commit
    assert_no_job(stack, ns, "apps", commit)  # Fleet's ls-remote does not see it yet: no Job

    pushed = time.monotonic()
    wt.push("HEAD:refs/heads/main")
    stack.wait_job(ns, "apps", commit, JOB_WITHIN)
    assert time.monotonic() - pushed < 10, "Fleet re-checks every 2 s for 30 s after the webhook"


# --- h. disablePolling ---------------------------------------------------------------------------


def test_h_with_polling_disabled_only_the_webhook_makes_a_job(stack: Stack, repo: Callable[[], Worktree]) -> None:
    wt = repo()
    ns = stack.namespace("h")
    # Same repository, Fleet's default 15 s polling: the clock that shows polling had its chance.
    track(stack, wt, ns, "polled", pollingInterval="15s")
    track(stack, wt, ns, "no-polling", disablePolling=True)

    unannounced = wt.commit_and_push("main")  # no hook yet
    stack.wait_job(ns, "polled", unannounced, 30)  # polling found it ...
    assert_no_job(stack, ns, "no-polling", unannounced, quiet=2)  # ... disablePolling did not poll

    hook(stack, wt)
    commit = wt.commit_and_push("main")
    stack.wait_job(ns, "no-polling", commit, JOB_WITHIN)


# --- i. fleet-webhook restarted between two pushes ------------------------------------------------


def test_i_the_second_push_after_a_restart_still_ends_in_a_job(stack: Stack, repo: Callable[[], Worktree]) -> None:
    assert stack.webhook is not None
    wt = repo()
    ns = stack.namespace("i")
    track(stack, wt, ns, "apps")
    hook(stack, wt)
    first = wt.commit_and_push("main")
    stack.wait_job(ns, "apps", first, JOB_WITHIN)

    assert stack.webhook.restart() == 0, stack.webhook.log_tail()

    second = wt.commit_and_push("main")
    stack.wait_job(ns, "apps", second, JOB_WITHIN)
