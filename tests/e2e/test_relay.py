"""Relay mode end to end: git push to Gitea -> edge -> JetStream -> consumer -> Fleet's Job.

The edge (`serve --relay-publish`) has no Kubernetes API and no secret: it stores what Gitea sends.
The consumer (`serve --relay-consume`) is the cluster's receiver, pulling from the real nats-server
with the real control plane's secret and GitRepos. The consumer is stopped while commits are pushed,
and the edge and the broker are restarted between pushes; every commit must still be recorded,
once each, in push order, and Fleet must make the Job for the last one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import require_nats_server
from tests.e2e.steps import JOB_WITHIN, track
from tools.e2e import WEBHOOK_SECRET, Stack, WebhookServer
from tools.gitea import Worktree
from tools.nats import NatsServer


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[NatsServer]:
    with NatsServer(binary=require_nats_server("the relay e2e test"), store_dir=tmp_path / "jetstream") as server:
        yield server


def _updated_commits(consumer: WebhookServer, ns: str, name: str) -> list[str]:
    """The commits the consumer's delivery log lines say it wrote to namespace/name, in order."""
    commits = []
    for line in consumer.log_lines():
        for entry in line.get("updated") or []:
            if isinstance(entry, dict) and (entry.get("namespace"), entry.get("name")) == (ns, name):
                commits.append(str(entry.get("commit")))
            elif entry == f"{ns}/{name}" and line.get("commit"):
                commits.append(str(line["commit"]))
    return commits


def _connected(edge: WebhookServer) -> int:
    """How many times the edge has logged its connection to the broker (its log spans restarts)."""
    return sum(1 for line in edge.log_lines() if line.get("msg") == "relay broker connected")


def _restart_connected(edge: WebhookServer) -> None:
    """Restart the edge and wait until it is connected to the broker again.

    /readyz does not wait for the broker, and an edge still connecting holds a delivery for up to
    --relay-publish-timeout-seconds, as long as Gitea waits for an answer.
    """
    before = _connected(edge)
    edge.restart()
    _wait(lambda: _connected(edge) > before, 20, "the edge connected to the broker")


def _wait(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:.0f}s: {what}")
        time.sleep(0.1)


def test_pushes_while_the_cluster_is_offline_reach_fleet_once_each_in_order(
    stack: Stack, repo: Callable[[], Worktree], broker: NatsServer, tmp_path: Path
) -> None:
    gitea = stack.gitea
    assert gitea is not None
    assert stack.tmpdir is not None
    edge = WebhookServer(
        stack.kubeconfig, stack.tmpdir, name="relay-edge", extra_args=(f"--relay-publish={broker.url}",)
    )
    consumer = WebhookServer(
        stack.kubeconfig, stack.tmpdir, name="relay-consumer", extra_args=(f"--relay-consume={broker.url}",)
    )
    try:
        edge.start()
        _wait(lambda: _connected(edge) > 0, 20, "the edge connected to the broker")
        wt = repo()
        ns = stack.namespace("relay")
        first = track(stack, wt, ns, "apps")
        gitea.create_hook(wt.repo, "gitea", edge.url, secret=WEBHOOK_SECRET)

        pushed: list[str] = []

        def push(n: int) -> None:
            """Push a commit and wait until Gitea has its hook's answer (it sends hooks asynchronously, and
            marks a task delivered before the answer is in)."""
            pushed.append(wt.commit_and_push("main", message=f"while the cluster is offline ({n})"))
            answered = lambda: sum(1 for t in gitea.hook_tasks(wt.repo) if t["status"] is not None) >= n  # noqa: E731
            _wait(answered, 20, f"Gitea's hook {n} answered")

        push(1)
        _restart_connected(edge)  # the edge restarts: what it stored stays in the stream
        push(2)
        broker.stop()
        broker.start()  # the broker restarts on its store
        _restart_connected(edge)
        push(3)
        tasks = gitea.hook_tasks(wt.repo)
        assert [t["status"] for t in tasks] == [202, 202, 202], (tasks, edge.log_tail())
        time.sleep(1.0)
        assert stack.gitrepo(ns, "apps").get("status", {}).get("webhookCommit") in (None, ""), "nobody consumed yet"
        assert {j["commit"] for j in stack.jobs(ns, "apps")} == {first}

        consumer.start()  # the cluster comes back
        stack.wait_job(ns, "apps", pushed[-1], JOB_WITHIN)
        _wait(lambda: len(_updated_commits(consumer, ns, "apps")) >= 3, 20, "three relayed deliveries recorded")
        time.sleep(2.0)  # a redelivery, if any, would show in this time
        assert _updated_commits(consumer, ns, "apps") == pushed, consumer.log_tail()
        assert stack.gitrepo(ns, "apps")["status"]["webhookCommit"] == pushed[-1]

        consumer.restart()  # nothing is offered again once acknowledged
        time.sleep(2.0)
        assert _updated_commits(consumer, ns, "apps") == pushed, consumer.log_tail()
    finally:
        consumer.stop()
        edge.stop()
