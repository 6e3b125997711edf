"""The GitRepo watch against the real API server: an asyncio task, no thread, large objects intact.

The watch used to run in a thread per namespace; it is now a task on the event loop reading the
streamed response itself. These tests hold it to what a user of the index would notice: a GitRepo
bigger than aiohttp's line buffer still reaches the index whole, stopping never waits for the
watch's 5-minute timeout, and no `watch-*` thread exists any more.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import warnings
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from kubernetes import client

from controller.kube import GROUP, PLURAL, VERSION, Kube, load_api_client
from tests.integration.receiver_env import gitrepo_body
from tests.integration.watch_support import Seen, wait_for
from tools.controlplane import ControlPlane

# Kubernetes allows 256 KiB for all of an object's annotations; `spec.paths` takes the GitRepo over
# aiohttp's line limit (twice its read buffer: 128 KiB up to aiohttp 3.13, 512 KiB since).
BIG_ANNOTATION = 250_000
BIG_PATHS = [f"charts/{i:05d}/" + "p" * 90 for i in range(8_000)]


@pytest.fixture
async def kube(control_plane: ControlPlane) -> AsyncIterator[Kube]:
    kube = Kube(load_api_client(control_plane.kubeconfig))
    yield kube
    kube.close()


async def test_a_gitrepo_larger_than_the_read_buffer_arrives_whole(
    kube: Kube, kube_api: client.ApiClient, namespace: str
) -> None:
    custom = client.CustomObjectsApi(kube_api)
    seen = Seen()
    watcher = seen.watcher(kube, namespace)
    watcher.start()
    try:
        await wait_for(lambda: bool(seen.lists), 10, "the first list")
        await asyncio.sleep(0.3)  # the watch request is under way
        body = gitrepo_body("big", "https://github.com/o/big")
        annotation = "".join(chr(ord("a") + i % 26) for i in range(BIG_ANNOTATION))
        body["metadata"]["annotations"] = {"example.com/big": annotation}
        body["spec"]["paths"] = BIG_PATHS
        assert len(orjson.dumps(body)) > 2 * aiohttp.helpers.DEFAULT_CHUNK_SIZE, "not larger than readline allows"
        await asyncio.to_thread(custom.create_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, body)
        await wait_for(lambda: any(e.obj["metadata"]["name"] == "big" for e in seen.events), 10, "the big GitRepo")
        # After it, a small change still arrives: the stream was not left mid-line.
        await asyncio.to_thread(
            custom.create_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            gitrepo_body("small", "https://github.com/o/s"),
        )
        await wait_for(lambda: any(e.obj["metadata"]["name"] == "small" for e in seen.events), 10, "a GitRepo after it")

        # While watching: a task on the loop, no thread.
        assert not [t.name for t in threading.enumerate() if t.name.startswith("watch-")]
        assert f"watch-{namespace}" in {t.get_name() for t in asyncio.all_tasks()}
    finally:
        watcher.stop()
        await watcher.join(5)
    big = next(e for e in seen.events if e.obj["metadata"]["name"] == "big")
    assert big.type == "ADDED"
    assert big.obj["metadata"]["annotations"]["example.com/big"] == annotation
    assert big.obj["spec"]["paths"] == BIG_PATHS
    assert seen.errors == []


async def test_stop_ends_a_watch_blocked_on_the_network_at_once(kube: Kube, namespace: str) -> None:
    """Nothing changes in the namespace, so the watch request waits for its 300 s timeout: stop()
    must not wait for it, and must leave no unclosed connection, session or pending task behind."""
    seen = Seen()
    watcher = seen.watcher(kube, namespace, watch_timeout=300)
    gc.collect()  # what earlier tests left for the collector is not this test's
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        watcher.start()
        await wait_for(lambda: bool(seen.lists), 10, "the first list")
        await asyncio.sleep(0.5)  # the watch request is under way, waiting for an event
        started = time.monotonic()
        watcher.stop()
        await watcher.join(5)
        elapsed = time.monotonic() - started
        kube.close()
        gc.collect()
    assert elapsed < 0.2, f"stop took {elapsed:.2f}s"
    assert f"watch-{namespace}" not in {t.get_name() for t in asyncio.all_tasks()}
    unclosed = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert unclosed == []
    assert seen.errors == [], "a stop is not a failure"
