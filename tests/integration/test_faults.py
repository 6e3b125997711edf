"""Faults against the real control plane: the receiver keeps its promises while Kubernetes misbehaves.

Stopping kube-apiserver and restarting etcd happen on a private control plane (`own_cp`), so a fault
that went wrong cannot break the rest of the session. Faults that need no process restarts use the
shared session control plane.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from controller.config import load_text
from controller.decisions import CommitHistory
from controller.deliveries import PushEvent, RefKind
from controller.index import GitRepoIndex
from controller.kube import (
    GROUP,
    LIST_PAGE_SIZE,
    PLURAL,
    VERSION,
    ApiError,
    GitRepoWatcher,
    Kube,
    WatchEvent,
    load_api_client,
)
from controller.reload import ConfigReloader
from controller.runtime import reload_callback
from controller.sync import IndexSync
from tests.conftest import gitrepo_crds
from tests.integration.receiver_env import ReceiverEnv, Response
from tests.support import delivery, secret_data, sha
from tools.controlplane import ControlPlane, find_tools_bin, install_crds, new_api_client

SECRET = "fault-secret-1d9c"
URL = "https://github.com/example-org/faulty"


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def own_cp() -> Iterator[ControlPlane]:
    """A control plane of this module's own: its processes get stopped and restarted."""
    with ControlPlane(bin_dir=find_tools_bin(), stop_grace=0.5) as cp:  # stopping is close to a crash
        install_crds(cp.kubeconfig, gitrepo_crds())
        yield cp


@pytest.fixture
def own_api(own_cp: ControlPlane) -> Iterator[client.ApiClient]:
    with new_api_client(own_cp.kubeconfig) as api:
        yield api


@pytest.fixture
def own_ns(own_cp: ControlPlane, own_api: client.ApiClient) -> str:
    if not own_cp.running()["kube-apiserver"]:  # a previous test died mid-outage
        own_cp.start_apiserver()
    name = f"f-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(own_api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


@pytest.fixture
async def own_env(own_cp: ControlPlane, own_api: client.ApiClient, own_ns: str) -> AsyncIterator[ReceiverEnv]:
    env = ReceiverEnv(own_api, own_cp.kubeconfig, own_ns)
    env.create_secret("gitjob-webhook", secret_data("github", SECRET))
    yield env
    await env.stop()
    if not own_cp.running()["kube-apiserver"]:
        own_cp.start_apiserver()


@pytest.fixture
async def env(kube_api: client.ApiClient, control_plane: ControlPlane, namespace: str) -> AsyncIterator[ReceiverEnv]:
    e = ReceiverEnv(kube_api, control_plane.kubeconfig, namespace)
    e.create_secret("gitjob-webhook", secret_data("github", SECRET))
    yield e
    await e.stop()


def push(commit: str, before: str, url: str = URL, secret: str | None = SECRET) -> Any:
    return delivery("github", https_url=url, commit=commit, before=before, secret=secret)


def base_config(namespace: str, extra: str = "") -> str:
    return f"watch:\n  namespaces: [{namespace}]\nlimits:\n  requestTimeoutSeconds: 2\n{extra}"


class Traffic:
    """Signed pushes to one GitRepo, one after another on each of `streams` lanes, until stopped."""

    def __init__(self, env: ReceiverEnv, streams: int = 3) -> None:
        self.env = env
        self.streams = streams
        self.results: list[tuple[float, int, dict[str, Any]]] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._seq = 0

    async def _lane(self) -> None:
        while not self._stop.is_set():
            self._seq += 1
            resp = await self.env.send(push(sha(f"t{self._seq}-{uuid.uuid4()}"), sha(f"p{self._seq}")))
            self.results.append((time.monotonic(), resp.status, resp.body))
            await asyncio.sleep(0.05)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._lane()) for _ in range(self.streams)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def statuses(self, since: float = 0.0, until: float = float("inf")) -> list[int]:
        return [status for at, status, _ in self.results if since <= at <= until]


async def wait_for(predicate: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.05)


async def recovered_push(env: ReceiverEnv, name: str, within: float = 20.0) -> Response:
    """Send fresh pushes until one is written (the API may need a moment after coming back)."""
    deadline = time.monotonic() + within
    while True:
        commit = sha(f"after-{uuid.uuid4()}")
        resp = await env.send(push(commit, sha("base")))
        if resp.status == 200 and name in resp.names("updated"):
            assert env.webhook_commit(name) == commit
            return resp
        assert resp.status == 503, resp.body
        assert resp.headers.get("Retry-After"), "every 503 asks the provider to retry"
        if time.monotonic() > deadline:
            raise AssertionError(f"pushes never succeeded again: {resp.body}")
        await asyncio.sleep(0.2)


# ------------------------------------------------------------------ kube-apiserver down and back


async def test_apiserver_outage_is_503_then_recovers_by_itself(own_env: ReceiverEnv, own_cp: ControlPlane) -> None:
    env = own_env
    env.create_gitrepo("steady", URL)
    await env.start(base_config(env.namespace))
    await env.wait_indexed("steady")
    assert env.components is not None
    sync = env.components.sync

    traffic = Traffic(env)
    traffic.start()
    await asyncio.sleep(0.5)
    down_at = time.monotonic()
    await asyncio.to_thread(own_cp.stop_apiserver)
    stopped_at = time.monotonic()
    await wait_for(lambda: sync.index.watch_error is not None, 15, "the watch to notice the outage")
    status, ready = await env.readiness()
    assert (status, bool(ready.get("watchError"))) == (200, True), ready  # still serving, and saying why
    await wait_for(lambda: len(traffic.statuses(stopped_at + 0.5)) >= 3, 20, "answers during the outage")
    outage_end = time.monotonic()
    await asyncio.to_thread(own_cp.start_apiserver)
    await asyncio.sleep(0.5)
    await traffic.stop()

    # Requests during the outage: 503 naming the API as the cause, never 500, never a false 200.
    during = traffic.statuses(stopped_at + 0.5, outage_end)
    assert during, "no request was answered during the outage"
    assert set(during) == {503}, during
    assert set(traffic.statuses()) <= {200, 503}
    assert 200 in traffic.statuses(0, down_at)
    refused = [body for at, status, body in traffic.results if status == 503 and stopped_at + 0.5 <= at <= outage_end]
    for body in refused:
        reasons = [entry["reason"] for entry in body.get("failed", [])] or [body.get("error", "")]
        assert all("unavailable" in r or "too long" in r for r in reasons), body

    # Afterwards the index re-syncs by itself: a GitRepo created after the restart shows up and pushes work.
    env.create_gitrepo("born-after", URL)
    await env.wait_indexed("born-after", within=20)
    await wait_for(lambda: sync.index.watch_error is None, 20, "the watch to re-list")
    assert "watchError" not in (await env.readiness())[1]
    resp = await recovered_push(env, "steady")
    assert resp.names("updated") == {"steady", "born-after"}
    assert env.components.receiver.index.synced


async def test_etcd_restart_under_traffic(own_env: ReceiverEnv, own_cp: ControlPlane) -> None:
    env = own_env
    env.create_gitrepo("steady", URL)
    await env.start(base_config(env.namespace))
    await env.wait_indexed("steady")

    traffic = Traffic(env)
    traffic.start()
    await asyncio.sleep(0.5)
    await asyncio.to_thread(own_cp.restart_etcd, 1.0)
    await asyncio.sleep(0.5)
    await traffic.stop()

    assert set(traffic.statuses()) <= {200, 503}, traffic.statuses()
    env.create_gitrepo("born-after", URL)
    await env.wait_indexed("born-after", within=20)
    resp = await recovered_push(env, "steady")
    assert resp.names("updated") == {"steady", "born-after"}


# ------------------------------------------------------------------ watch expiry (410 Gone)


def etcd_compact(cp: ControlPlane) -> int:
    """Compact etcd at its current revision through the v3 HTTP gateway; returns the revision."""
    key = base64.b64encode(b"/").decode()
    request = urllib.request.Request(
        cp.etcd_url + "/v3/kv/range", data=json.dumps({"key": key, "limit": 1}).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        revision = int(json.load(resp)["header"]["revision"])
    request = urllib.request.Request(
        cp.etcd_url + "/v3/kv/compaction",
        data=json.dumps({"revision": str(revision), "physical": True}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        resp.read()
    return revision


async def test_expired_watch_relists_and_keeps_the_index_current(
    own_cp: ControlPlane, own_api: client.ApiClient, own_ns: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The first list hands the watch a resourceVersion etcd has compacted away: the API answers
    410 Gone, the watcher re-lists by itself, and changes made after that still reach the index."""
    custom = client.CustomObjectsApi(own_api)

    def create(name: str) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "GitRepo",
            "metadata": {"name": name},
            "spec": {"repo": URL},
        }
        custom.create_namespaced_custom_object(GROUP, VERSION, own_ns, PLURAL, body)

    create("before")
    for i in range(5):  # history to compact away
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, own_ns, PLURAL, "before", {"metadata": {"labels": {"i": str(i)}}}
        )
    etcd_compact(own_cp)

    kube = Kube(load_api_client(own_cp.kubeconfig))
    lists: list[str] = []
    real_list = kube.list_gitrepos

    async def list_then_go_stale(
        namespace: str | None, convert: Callable[[dict[str, Any]], Any] | None = None, page_size: int = LIST_PAGE_SIZE
    ) -> tuple[list[Any], str]:
        items, rv = await real_list(namespace, convert, page_size)
        lists.append(rv)
        return (items, "1") if len(lists) == 1 else (items, rv)

    # Deliberate monkeypatch of one instance's method (mypy forbids assigning to a method).
    kube.list_gitrepos = list_then_go_stale  # type: ignore[method-assign]
    index = GitRepoIndex()
    sync = IndexSync(kube, index)
    caplog.set_level(logging.INFO, "fleet_webhook.kube")
    try:
        sync.start(load_text(f"watch:\n  namespaces: [{own_ns}]\n").watch)
        await wait_for(lambda: len(lists) >= 2, 15, "a re-list after 410 Gone")
        assert index.synced
        assert index.get(own_ns, "before") is not None
        create("after")
        await wait_for(lambda: index.get(own_ns, "after") is not None, 10, "the watch to deliver a new GitRepo")
    finally:
        sync.stop()
        await sync.join()
        kube.close()
    assert any(r.getMessage() == "watch expired; re-listing" for r in caplog.records)
    assert sync.index.watch_error is None, "a 410 is routine, not a failure"


async def test_watcher_resumes_after_gone_from_the_resource_version_it_was_given(
    own_cp: ControlPlane, own_ns: str
) -> None:
    """The watcher's own entry point: a watch started at resourceVersion 1 raises 410, never loops."""
    kube = Kube(load_api_client(own_cp.kubeconfig))
    seen: list[WatchEvent] = []
    watcher = GitRepoWatcher(kube, own_ns, lambda _ns, _items: None, seen.append)
    try:
        with pytest.raises(ApiError) as gone:
            await watcher._watch_from("1")
        assert gone.value.status == 410
    finally:
        watcher.stop()
        kube.close()


# ------------------------------------------------------------------ a concurrent writer on the same GitRepo


def conflicting_patch(env: ReceiverEnv, name: str, status: dict[str, Any], labels: dict[str, str]) -> None:
    """Another client changes the GitRepo (status and metadata), bumping its resourceVersion."""
    env.custom.patch_namespaced_custom_object_status(GROUP, VERSION, env.namespace, PLURAL, name, {"status": status})
    env.custom.patch_namespaced_custom_object(
        GROUP, VERSION, env.namespace, PLURAL, name, {"metadata": {"labels": labels}}
    )


def interpose(env: ReceiverEnv, before_first_write: Any) -> list[str]:
    """Run `before_first_write` between our read (the index) and our first status write."""
    assert env.components is not None
    kube = env.components.kube
    real = kube.patch_gitrepo_status
    versions: list[str] = []

    async def patched(namespace: str, name: str, status: Any, resource_version: str | None) -> dict[str, Any]:
        versions.append(resource_version or "")
        if len(versions) == 1:
            await asyncio.to_thread(before_first_write)
        obj: dict[str, Any] = await real(namespace, name, status, resource_version)
        return obj

    # Deliberate monkeypatch of one instance's method (mypy forbids assigning to a method).
    kube.patch_gitrepo_status = patched  # type: ignore[method-assign]
    return versions


async def test_concurrent_writer_keeps_both_changes(env: ReceiverEnv) -> None:
    env.create_gitrepo("shared", URL)
    await env.start(base_config(env.namespace))
    await env.wait_indexed("shared")
    versions = interpose(env, lambda: conflicting_patch(env, "shared", {"commit": "their-commit"}, {"team": "blue"}))

    commit = sha("ours")
    resp = await env.send(push(commit, sha("ours-parent")))

    assert resp.status == 200, resp.body
    assert resp.names("updated") == {"shared"}
    assert len(versions) == 2, "expected a 409 and one retry on the fresh object"
    assert versions[0] != versions[1]
    assert 'fleet_webhook_gitrepo_write_conflicts_total{write="status"} 1.0' in await env.metrics()
    stored = env.gitrepo("shared")
    assert stored["status"]["webhookCommit"] == commit
    assert stored["status"]["commit"] == "their-commit"
    assert stored["metadata"]["labels"]["team"] == "blue"


async def test_concurrent_writer_with_a_newer_commit_is_never_moved_back(env: ReceiverEnv) -> None:
    env.create_gitrepo("shared", URL)
    await env.start(base_config(env.namespace))
    await env.wait_indexed("shared")
    older, newer = sha("older"), sha("newer")
    # The route learns "older came right before newer" from a delivery about another repository.
    learn = await env.send(push(newer, older, url="https://github.com/example-org/unrelated"))
    assert learn.status == 200
    assert learn.body["updated"] == []

    versions = interpose(env, lambda: conflicting_patch(env, "shared", {"webhookCommit": newer}, {"by": "other"}))
    resp = await env.send(push(older, sha("grandparent")))

    assert resp.status == 200, resp.body
    assert resp.body["updated"] == []
    [skipped] = resp.body["skipped"]
    assert skipped["name"] == "shared"
    assert "out of order" in skipped["reason"]
    assert len(versions) == 1, "after the conflict the fresh object showed a newer commit: no second write"
    assert env.webhook_commit("shared") == newer


async def test_updater_conflict_retry_directly(env: ReceiverEnv) -> None:
    """The same rule at the updater's level, with the history handed in explicitly."""
    env.create_gitrepo("direct", URL)
    await env.start(base_config(env.namespace))
    await env.wait_indexed("direct")
    assert env.components is not None
    receiver, updater = env.components.receiver, env.components.updater
    info = receiver.index.get(env.namespace, "direct")
    assert info is not None
    history = CommitHistory()
    a, b, c = sha("a"), sha("b"), sha("c")
    history.learn(PushEvent("github", None, (URL,), RefKind.BRANCH, "main", c, before=b))
    conflicting_patch(env, "direct", {"webhookCommit": c}, {"x": "y"})  # our `info` is now stale
    policy = receiver.holder.current.polling
    result = await updater.record(
        info, PushEvent("github", None, (URL,), RefKind.BRANCH, "main", b, a), policy, time.monotonic() + 5, history
    )
    assert result.outcome.value == "skipped"
    assert env.webhook_commit("direct") == c


# ------------------------------------------------------------------ the config file breaks while serving


async def test_config_deleted_or_corrupted_keeps_the_last_good_config(env: ReceiverEnv, tmp_path: Path) -> None:
    env.create_gitrepo("app", URL)
    path = tmp_path / "config.yaml"
    good = base_config(env.namespace)
    path.write_text(good)
    await env.start(good)
    await env.wait_indexed("app")
    assert env.components is not None
    assert env.http is not None
    receiver = env.components.receiver
    holder = receiver.holder
    reloader = ConfigReloader(path, holder, reload_callback(receiver.metrics), debounce_ms=20)
    task = asyncio.create_task(reloader.run())
    try:
        await reloader.check_now()  # adopt the file as `serve` does at start (same content)
        assert holder.status.digest
        assert holder.status.last_error is None

        async def delivered() -> None:
            resp = await env.send(push(sha(f"c-{uuid.uuid4()}"), sha("p")))
            assert resp.status == 200, resp.body
            assert resp.names("updated") == {"app"}, resp.body

        await delivered()
        for breakage in ("routes: [", "limits: {maxBodyBytes: -5}\n", "\xff\xfe", "", None):
            if breakage is None:
                path.unlink()
            else:
                path.write_bytes(breakage.encode("latin-1"))
            await wait_for(lambda: holder.status.last_error is not None, 10, f"{breakage!r} to be refused")
            await delivered()  # the last good config keeps serving
            ready = await env.http.get("/readyz")
            assert "configError" in await ready.json()
            assert "fleet_webhook_config_last_reload_valid 0.0" in await env.metrics()
            path.write_text(good)
            await wait_for(lambda: holder.status.last_error is None, 10, "the good file to be taken back")

        # A new valid file is adopted: its new route serves at once.
        path.write_text(good + "routes:\n  - path: /hooks/new\n")
        await wait_for(lambda: holder.current.route_for("/hooks/new") is not None, 10, "the new config")
        resp = await env.send(push(sha("via-new-route"), sha("p")), path="/hooks/new")
        assert resp.status == 200
        assert resp.names("updated") == {"app"}
    finally:
        reloader.stop()
        await asyncio.wait_for(task, 5)


# ------------------------------------------------------------------ secret rotation


async def test_secret_rotation_overlap_then_only_the_new_secret(env: ReceiverEnv) -> None:
    old, new = "rotate-old-5a1f", "rotate-new-c07e"
    env.create_secret("gitjob-webhook", {"github": old})
    env.create_gitrepo("rotating", URL)
    await env.start(base_config(env.namespace, "secrets:\n  cacheSeconds: 0\n"))
    await env.wait_indexed("rotating")
    n = 0

    async def attempt(secret: str) -> int:
        nonlocal n
        n += 1
        before = env.gitrepo("rotating")["metadata"]["resourceVersion"]
        commit = sha(f"rot-{n}")
        resp = await env.send(push(commit, sha(f"rot-parent-{n}"), secret=secret))
        after = env.gitrepo("rotating")["metadata"]["resourceVersion"]
        if resp.status == 200:
            assert env.webhook_commit("rotating") == commit
        else:
            assert after == before, "a refused delivery changed the GitRepo"
        return resp.status

    assert [await attempt(old), await attempt(new)] == [200, 401]
    env.create_secret("gitjob-webhook", {"github": new, "github.previous": old})  # overlap
    assert [await attempt(old), await attempt(new), await attempt(old)] == [200, 200, 200]
    env.create_secret("gitjob-webhook", {"github": new})  # rotation done
    assert [await attempt(old), await attempt(new)] == [401, 200]
