"""A bounded load run on loopback against the real API: no 5xx, memory levels off, every commit lands.

Default: 2,000 signed deliveries over 100 GitRepos (every provider), 50 in flight. Set
FLEET_WEBHOOK_LOAD_SCALE=10 for 20,000 over 1,000. Each GitRepo receives a chain of commits (each
delivery's `before` is the previous one), sent in order, so every delivery must end up recorded on its
GitRepo. "Recorded" is counted by an independent watch that sees every status change the API stores.
The numbers are printed in pytest's summary.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import statistics
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import aiohttp
import pytest
from kubernetes import client, watch

from controller.kube import GROUP, PLURAL, VERSION
from tests.conftest import SUMMARY_LINES
from tests.factories import forms
from tests.integration.receiver_env import ReceiverEnv
from tests.support import PROVIDERS, delivery, secret_data, sha

SCALE = float(os.environ.get("FLEET_WEBHOOK_LOAD_SCALE", "1"))
GITREPOS = max(8, round(100 * SCALE))
PER_GITREPO = 20
DELIVERIES = GITREPOS * PER_GITREPO
CONCURRENCY = 50
SECRET = "load-secret-0a4e"
# Small enough that the delivery-id cache (bounded by limits.dedupeEntries) is full within the first half.
DEDUPE_ENTRIES = 500
# Memory may grow while caches fill in the first half; over the second half it must stay within this
# (the per-route commit history keeps growing up to its 50,000-entry bound, about 1 MB per 5,000).
SECOND_HALF_GROWTH_MB = 8.0 + 1.5 * SCALE


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


class CommitObserver:
    """Watches the namespace's GitRepos in a thread and keeps every webhookCommit value each one had."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.seen: dict[str, set[str]] = {}
        self.events = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="commit-observer", daemon=True)

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(10)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        # The client declares custom objects as `object`; a list is the decoded JSON mapping.
        listed = cast(dict[str, Any], self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL))
        version = listed["metadata"]["resourceVersion"]
        self._ready.set()
        while not self._stop.is_set():  # short watches, each resumed where the last one ended
            try:
                for event in watch.Watch().stream(
                    self.custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.namespace,
                    PLURAL,
                    resource_version=version,
                    timeout_seconds=1,
                    _request_timeout=10,
                ):
                    obj = event["object"]
                    version = obj["metadata"]["resourceVersion"]
                    self.events += 1
                    commit = (obj.get("status") or {}).get("webhookCommit")
                    if commit:
                        self.seen.setdefault(obj["metadata"]["name"], set()).add(commit)
            except Exception as exc:  # a gap would make the count below wrong: report it
                self.errors.append(repr(exc))
                return

    def recorded(self) -> int:
        return sum(len(commits) for commits in self.seen.values())


@pytest.fixture
async def env(kube_api: client.ApiClient, control_plane: Any, namespace: str) -> AsyncIterator[ReceiverEnv]:
    e = ReceiverEnv(kube_api, control_plane.kubeconfig, namespace)
    yield e
    await e.stop()


def chain(i: int, k: int) -> str:
    return sha(f"load-{i}-{k}")


async def test_bounded_load_run(env: ReceiverEnv, kube_api: client.ApiClient) -> None:
    data: dict[str, str] = {}
    for provider in PROVIDERS:
        data.update(secret_data(provider, SECRET))
    env.create_secret("gitjob-webhook", data)
    targets = [
        (f"g{i:04d}", PROVIDERS[i % len(PROVIDERS)], *forms(PROVIDERS[i % len(PROVIDERS)], f"load-{i}"))
        for i in range(GITREPOS)
    ]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda t: env.create_gitrepo(t[0], t[2]), targets))
    await env.start(f"watch:\n  namespaces: [{env.namespace}]\nlimits:\n  dedupeEntries: {DEDUPE_ENTRIES}\n")
    await env.wait_indexed(*(t[0] for t in targets), within=60)
    assert env.components is not None
    assert env.http is not None
    observer = CommitObserver(kube_api, env.namespace)
    observer.start()

    statuses: dict[int, int] = {}
    latencies: list[float] = []
    updated: dict[str, list[str]] = {}
    samples: list[tuple[int, float]] = []
    done = 0
    gate = asyncio.Semaphore(CONCURRENCY)
    # A plain session: aiohttp's TestClient keeps every response until teardown, which would look like a leak.
    http = aiohttp.ClientSession(
        base_url=str(env.http.make_url("/")), connector=aiohttp.TCPConnector(limit=CONCURRENCY)
    )

    async def lane(i: int, name: str, provider: str, https: str, ssh: str) -> None:
        nonlocal done
        for k in range(PER_GITREPO):
            d = delivery(
                provider, https_url=https, ssh_url=ssh, commit=chain(i, k), before=chain(i, k - 1), secret=SECRET
            )
            async with gate:
                started = time.monotonic()
                async with http.post("/", data=d.body, headers=d.headers) as resp:
                    body = json.loads(await resp.read())
                latencies.append(time.monotonic() - started)
            statuses[resp.status] = statuses.get(resp.status, 0) + 1
            assert resp.status == 200, body
            for entry in body["updated"]:
                updated.setdefault(entry["name"], []).append(entry["commit"])
            done += 1
            if done % max(1, DELIVERIES // 10) == 0:
                gc.collect()
                samples.append((done, rss_mb()))

    gc.collect()
    samples.append((0, rss_mb()))
    started = time.monotonic()
    try:
        await asyncio.gather(*(lane(i, *t) for i, t in enumerate(targets)))
    finally:
        await http.close()
    elapsed = time.monotonic() - started
    await env.components.updater.drain(within=10)

    # Every delivery's commit reached its GitRepo: in the answers, in what the API stored, and at the end.
    expected = {name: [chain(i, k) for k in range(PER_GITREPO)] for i, (name, *_rest) in enumerate(targets)}
    deadline = time.monotonic() + 20
    while observer.recorded() < DELIVERIES and time.monotonic() < deadline:  # noqa: ASYNC110 - another thread counts
        await asyncio.sleep(0.1)
    observer.stop()
    assert observer.errors == []
    assert statuses == {200: DELIVERIES}
    assert updated == expected
    assert {name: commits for name, commits in observer.seen.items()} == {n: set(c) for n, c in expected.items()}
    finals = {name: env.webhook_commit(name) for name in expected}
    assert finals == {name: commits[-1] for name, commits in expected.items()}

    # Memory levels off: what the second half adds is small (caches are bounded).
    half = [mb for n, mb in samples if n >= DELIVERIES // 2]
    growth = max(half) - half[0]
    receiver = env.components.receiver
    assert len(receiver.dedupe) == DEDUPE_ENTRIES

    latencies.sort()
    summary = (
        f"load: {DELIVERIES} signed deliveries over {GITREPOS} GitRepos ({len(PROVIDERS)} providers), "
        f"{CONCURRENCY} in flight: {elapsed:.1f}s, {DELIVERIES / elapsed:.0f}/s, "
        f"p50 {statistics.median(latencies) * 1000:.0f} ms, p95 {latencies[int(len(latencies) * 0.95)] * 1000:.0f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.0f} ms; codes {statuses}; "
        f"recorded {observer.recorded()}/{DELIVERIES} (watch saw {observer.events} changes); "
        f"RSS MB {' '.join(f'{mb:.0f}' for _, mb in samples)} (second half +{growth:.1f})"
    )
    SUMMARY_LINES.append(summary)
    assert growth < SECOND_HALF_GROWTH_MB, summary
