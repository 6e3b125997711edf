"""Three `fleet-webhook serve` processes, as three replicas behind one Service, against the real apiserver.

Each scenario is a list of deliveries, each aimed at one replica and answered before the next is
sent (a Service spreads a host's deliveries like this; redeliveries keep their delivery id). Every
scenario runs three times, on GitRepos of its own:

* `one`: every delivery to one process without --shared-order: the single-process outcome, the reference;
* `shared`: spread over three processes with --shared-order (what the chart runs);
* `local`: spread over three processes without it (each with its own in-memory order and dedupe).

After each delivery the GitRepo's webhookCommit is read back from the API server. `shared` must
give the reference's sequence step by step, every commit that one process records included, and
never answer 5xx. `local` shows why the order must be shared: an out-of-order pair split over two
replicas moves webhookCommit back.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.integration.receiver_env import ReceiverEnv
from tests.support import Delivery, delivery, secret_data, sha
from tools.served import Served, start_replicas

SECRET = "replicas-secret-41c9"


@dataclass(frozen=True)
class Step:
    """One delivery: which replica gets it, and the push it carries. Same `key`: a redelivery (same id)."""

    replica: int
    key: str
    before: str  # commit labels; "" for a new branch
    commit: str
    forced: bool = False


def chain(*labels: str) -> list[tuple[str, str]]:
    """(before, commit) pairs of consecutive pushes c0->c1->c2..."""
    return list(itertools.pairwise(labels))


SCENARIOS: dict[str, list[Step]] = {
    # Every push of a chain, each to the next replica: every commit is recorded, in order.
    "in-order": [Step(i % 3, f"p{i}", b, c) for i, (b, c) in enumerate(chain("c0", "c1", "c2", "c3", "c4", "c5"))],
    # The pair arrives reversed, each half on another replica: c2 stays.
    "split-pair": [Step(0, "p1", "c1", "c2"), Step(1, "p0", "c0", "c1")],
    # A redelivery of an old push on a replica that never saw it.
    "redelivery": [Step(0, "p0", "c0", "c1"), Step(1, "p1", "c1", "c2"), Step(2, "p0", "c0", "c1")],
    # A force push rolls c2 back to c1; then the push of c2 is redelivered elsewhere: the rollback stays.
    "rollback-then-redelivery": [
        Step(0, "p0", "c0", "c1"),
        Step(1, "p1", "c1", "c2"),
        Step(2, "back", "c2", "c1", forced=True),
        Step(0, "p1", "c1", "c2"),
    ],
    # A force push, a push on top of it, then the force push redelivered on a third replica.
    "forced-redelivery": [
        Step(0, "f", "c1", "x", forced=True),
        Step(1, "p", "x", "y"),
        Step(2, "f", "c1", "x", forced=True),
    ],
    # A whole chain newest first, spread over the replicas: the newest stays.
    "reversed-chain": [
        Step(0, "p3", "c3", "c4"),
        Step(1, "p2", "c2", "c3"),
        Step(2, "p1", "c1", "c2"),
        Step(0, "p0", "c0", "c1"),
    ],
    # A mix: out of order, duplicated, back in order, over all three.
    "shuffled": [
        Step(0, "p1", "c1", "c2"),
        Step(1, "p0", "c0", "c1"),
        Step(2, "p2", "c2", "c3"),
        Step(0, "p0", "c0", "c1"),
        Step(1, "p4", "c4", "c5"),
        Step(2, "p3", "c3", "c4"),
        Step(0, "p2", "c2", "c3"),
        Step(1, "p5", "c5", "c6"),
        Step(2, "p4", "c4", "c5"),
    ],
}


LABELS = (*(f"c{i}" for i in range(10)), "x", "y")


def url(scenario: str, mode: str) -> str:
    return f"https://github.com/example-org/{scenario}-{mode}"


def commit_of(scenario: str, mode: str, label: str) -> str:
    return sha(f"{scenario}/{mode}/{label}") if label else "0" * 40


def build(scenario: str, mode: str, step: Step) -> Delivery:
    return delivery(
        "github",
        https_url=url(scenario, mode),
        commit=commit_of(scenario, mode, step.commit),
        before=commit_of(scenario, mode, step.before),
        secret=SECRET,
        delivery_id=f"{mode}-{scenario}-{step.key}",
        forced=step.forced,
    )


@pytest.fixture
def env(kube_api: client.ApiClient, control_plane: Any, namespace: str) -> ReceiverEnv:
    e = ReceiverEnv(kube_api, control_plane.kubeconfig, namespace)
    e.create_secret("gitjob-webhook", secret_data("github", SECRET))
    return e


@pytest.fixture
def replicas(env: ReceiverEnv, control_plane: Any, tmp_path: Path) -> Iterator[Callable[[str], list[Served]]]:
    """start(mode): three replicas, with --shared-order for mode "shared"."""
    config = f"watch:\n  namespaces: [{env.namespace}]\n"
    started: list[Served] = []

    def start(mode: str) -> list[Served]:
        folder = tmp_path / mode
        folder.mkdir()
        args = ("--shared-order=true",) if mode == "shared" else ()
        group = start_replicas(3, control_plane.kubeconfig, env.namespace, folder, config, extra_args=args)
        started.extend(group)
        return group

    yield start
    for served in started:
        served.stop()


def label_of(env: ReceiverEnv, scenario: str, mode: str) -> str | None:
    """The label of the commit the GitRepo records now (None: none)."""
    recorded = env.webhook_commit(f"{scenario}-{mode}")
    labels = {commit_of(scenario, mode, label): label for label in LABELS}
    return None if recorded is None else labels.get(recorded, recorded)


def test_three_replicas_record_what_one_process_records(
    env: ReceiverEnv, replicas: Callable[[str], list[Served]]
) -> None:
    for scenario in SCENARIOS:
        for mode in ("one", "shared", "local"):
            env.create_gitrepo(f"{scenario}-{mode}", url(scenario, mode))
    groups = {"shared": replicas("shared"), "local": replicas("local")}
    groups["one"] = groups["local"][:1]  # one process without shared order: the reference
    for scenario, steps in SCENARIOS.items():
        outcomes: dict[str, list[str | None]] = {}
        for mode in ("one", "shared", "local"):
            group = groups[mode]
            seen: list[str | None] = []
            for step in steps:
                target = group[step.replica % len(group)]
                status, answer = target.post(build(scenario, mode, step))
                assert status == 200, (scenario, mode, step, answer)
                seen.append(label_of(env, scenario, mode))
            outcomes[mode] = seen
        assert outcomes["shared"] == outcomes["one"], (scenario, outcomes)
    # The reference itself, so the comparison above is not between two wrong answers.
    assert_reference(env)


def assert_reference(env: ReceiverEnv) -> None:
    """What one process records for some of the scenarios, spelled out."""
    assert label_of(env, "in-order", "one") == "c5"
    assert label_of(env, "split-pair", "one") == "c2"
    assert label_of(env, "rollback-then-redelivery", "one") == "c1"
    assert label_of(env, "forced-redelivery", "one") == "y"
    assert label_of(env, "reversed-chain", "one") == "c4"
    assert label_of(env, "shuffled", "one") == "c6"
    # Without shared order, the split pair moves webhookCommit back: the replica that got c0->c1 never
    # learnt that c1 precedes c2 (whatever its index held, the conflict retry re-reads c2 and writes c1).
    assert label_of(env, "split-pair", "local") == "c1"


def test_concurrent_copies_of_one_delivery_write_once_and_never_answer_5xx(
    env: ReceiverEnv, replicas: Callable[[str], list[Served]]
) -> None:
    """Each push of a chain is sent to all three replicas at the same moment, then the next push."""
    env.create_gitrepo("burst-shared", url("burst", "shared"))
    group = replicas("shared")
    labels = [f"c{i}" for i in range(9)]
    updated_by: list[int] = []
    for i, (before, commit) in enumerate(chain(*labels)):
        d = build("burst", "shared", Step(0, f"p{i}", before, commit))
        answers: list[tuple[int, dict[str, Any]]] = []

        def send(target: Served, d: Delivery = d, answers: list[tuple[int, dict[str, Any]]] = answers) -> None:
            answers.append(target.post(d))

        threads = [threading.Thread(target=send, args=(s,)) for s in group]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(status for status, _ in answers) == [200, 200, 200], answers
        updated_by.append(sum(1 for _, answer in answers if answer.get("updated")))
        assert label_of(env, "burst", "shared") == commit
    assert updated_by == [1] * len(updated_by)  # each commit written exactly once, by one replica
