"""A rolling upgrade under load: three real replicas serve 50 deliveries/s while one is replaced.

What the test models (the chart's defaults, scaled down so the test stays short):

* **The Service.** A round-robin balancer over the replicas in rotation, one new connection per
  delivery (kube-proxy picks the pod per connection). A refused connection takes the replica out of
  rotation and the delivery goes to the next one, as a load balancer does with an endpoint it can no
  longer reach; the test counts those and expects none.
* **The rollout** (`strategy.rollingUpdate: maxSurge 1, maxUnavailable 0`, PDB `maxUnavailable: 1`):
  a fourth replica starts and joins the rotation once /readyz answers, then one old replica gets
  SIGTERM. For `PROPAGATION_SECONDS` after the signal the balancer still routes to it, the time
  kube-proxy and Ingress controllers take to see the endpoint removed; then it leaves the rotation.
* **The pod's side.** `--shutdown-delay-seconds` (chart 5, here `DELAY_SECONDS`) must outlast that
  window: the terminating replica keeps answering everything routed to it, then closes its listener
  and finishes what is in flight within `--shutdown-grace-seconds`, and exits 0 well inside what
  `terminationGracePeriodSeconds` would allow.

Deliveries: `GITREPOS` GitRepos, each sent its own chain of pushes (A->B, B->C, ...) at
`RATE / GITREPOS` per second, the next one after the previous was answered (a host delivers one
repository's pushes in order). Outcome: no failed delivery, every push answered 200 with its GitRepo
updated, so every commit was recorded in order, and each GitRepo ends at its last commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes import client

from tests.conftest import SUMMARY_LINES
from tests.integration.receiver_env import ReceiverEnv
from tests.support import ZERO, delivery, secret_data, sha
from tools.served import Served, launch_serve, start_replicas, wait_ready

SECRET = "rolling-secret-7e10"
RATE = 50.0  # deliveries per second, over all GitRepos
GITREPOS = 20
PROPAGATION_SECONDS = 1.0
DELAY_SECONDS = 2.0
GRACE_SECONDS = 10.0
WARMUP_SECONDS = 2.0
AFTER_SECONDS = 2.0


def url(i: int) -> str:
    return f"https://github.com/example-org/rolling-{i}"


@dataclass
class Balancer:
    """Round robin over the replicas in rotation (see the module docstring)."""

    rotation: list[Served]
    refused: int = 0
    _next: int = 0

    def pick(self) -> Served:
        self._next += 1
        return self.rotation[self._next % len(self.rotation)]

    def remove(self, served: Served) -> None:
        if served in self.rotation and len(self.rotation) > 1:
            self.rotation.remove(served)


@dataclass
class Tally:
    """What the load generator saw."""

    answered: int = 0
    failures: list[str] = field(default_factory=list)
    to_victim_after_signal: int = 0
    signalled_at: float | None = None
    victim: Served | None = None


async def post(session: aiohttp.ClientSession, balancer: Balancer, body: bytes, headers: dict[str, str]) -> Any:
    """Send one delivery through the balancer; returns (replica, status, answer)."""
    for _ in range(8):
        target = balancer.pick()
        try:
            async with session.post(f"http://127.0.0.1:{target.port}/", data=body, headers=headers) as resp:
                return target, resp.status, await resp.json(content_type=None)
        except aiohttp.ClientConnectorError:  # refused before anything was sent: the endpoint is gone
            balancer.refused += 1
            balancer.remove(target)
    raise AssertionError("no replica accepted the connection")


async def pushes(session: aiohttp.ClientSession, balancer: Balancer, tally: Tally, i: int, stop: asyncio.Event) -> str:
    """One GitRepo's chain of pushes at RATE / GITREPOS per second until `stop`; returns the last commit."""
    period = GITREPOS / RATE
    start = time.monotonic() + i * period / GITREPOS  # GitRepos take turns, so the total rate is even
    before, k = ZERO, 0
    while not stop.is_set():
        await asyncio.sleep(max(0.0, start + k * period - time.monotonic()))
        commit = sha(f"rolling-{i}-{k}")
        d = delivery("github", https_url=url(i), commit=commit, before=before, secret=SECRET)
        try:
            target, status, answer = await post(session, balancer, d.body, d.headers)
        except (aiohttp.ClientError, TimeoutError, AssertionError) as exc:
            tally.failures.append(f"rolling-{i} push {k}: {exc!r}")
            return before
        tally.answered += 1
        if tally.signalled_at is not None and target is tally.victim:
            tally.to_victim_after_signal += 1
        names = [u.get("name") for u in answer.get("updated", [])] if isinstance(answer, dict) else []
        if status != 200 or names != [f"rolling-{i}"]:
            tally.failures.append(f"rolling-{i} push {k}: {status} {answer}")
            return before
        before, k = commit, k + 1
    return before


@pytest.fixture
def env(kube_api: client.ApiClient, control_plane: Any, namespace: str) -> ReceiverEnv:
    e = ReceiverEnv(kube_api, control_plane.kubeconfig, namespace)
    e.create_secret("gitjob-webhook", secret_data("github", SECRET))
    for i in range(GITREPOS):
        e.create_gitrepo(f"rolling-{i}", url(i))
    return e


async def test_replacing_a_replica_at_50_deliveries_per_second_loses_nothing(
    env: ReceiverEnv, control_plane: Any, tmp_path: Path
) -> None:
    config = f"watch:\n  namespaces: [{env.namespace}]\n"
    args = ("--shared-order=true", f"--shutdown-delay-seconds={DELAY_SECONDS}")
    started = await asyncio.to_thread(
        start_replicas,
        3,
        control_plane.kubeconfig,
        env.namespace,
        tmp_path,
        config,
        grace=GRACE_SECONDS,
        extra_args=args,
    )
    try:
        balancer, tally, stop = Balancer(list(started)), Tally(), asyncio.Event()
        connector = aiohttp.TCPConnector(force_close=True, limit=0)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            began = time.monotonic()
            workers = [asyncio.create_task(pushes(session, balancer, tally, i, stop)) for i in range(GITREPOS)]
            await asyncio.sleep(WARMUP_SECONDS)

            # maxSurge 1: the new replica first, in rotation once ready.
            surge = launch_serve(
                control_plane.kubeconfig, env.namespace, tmp_path, config, grace=GRACE_SECONDS, extra_args=args
            )
            started.append(surge)
            await asyncio.to_thread(wait_ready, surge, 60.0)
            balancer.rotation.append(surge)

            # Then one old replica is terminated; the balancer keeps routing to it until "endpoints update".
            victim = started[0]
            tally.victim, tally.signalled_at = victim, time.monotonic()
            victim.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(PROPAGATION_SECONDS)
            balancer.remove(victim)
            code = await asyncio.to_thread(victim.proc.wait, DELAY_SECONDS + GRACE_SECONDS + 10)
            exited_after = time.monotonic() - tally.signalled_at
            await asyncio.sleep(AFTER_SECONDS)
            stop.set()
            lasts = await asyncio.gather(*workers)
            took = time.monotonic() - began
    finally:
        for served in started:
            with contextlib.suppress(Exception):
                served.stop()

    rate = tally.answered / took
    SUMMARY_LINES.append(
        f"rolling upgrade: {tally.answered} deliveries in {took:.1f}s ({rate:.0f}/s) over 3 replicas + 1 surge; "
        f"{tally.to_victim_after_signal} answered by the terminating replica after SIGTERM; "
        f"{balancer.refused} refused connections; it exited after {exited_after:.1f}s"
    )
    assert tally.failures == [], tally.failures[:5]
    assert code == 0
    assert balancer.refused == 0  # the shutdown delay outlasted the endpoint propagation window
    assert tally.to_victim_after_signal > 0  # ... and deliveries routed there in that window were answered
    assert tally.answered > RATE * (WARMUP_SECONDS + AFTER_SECONDS) / 2  # it was under load throughout
    for i, last in enumerate(lasts):
        assert env.webhook_commit(f"rolling-{i}") == last  # no commit lost, none moved back
    messages = [line.get("msg") for line in victim.log_lines()]
    assert messages[-1] == "stopped"
