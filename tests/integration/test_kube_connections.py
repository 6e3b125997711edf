"""Concurrent API calls reuse kept connections: none is thrown away for lack of room in the pool.

Each connection thrown away costs a TLS handshake on the next call, which showed as tail latency
under load (with the official client's default pool of 5 per CPU). The calls a delivery makes go
over one aiohttp connector of CONNECTION_POOL_SIZE connections; this test drives twice as many
concurrent calls, in several waves, against the real API server and requires that the connections
of the first wave are the only ones ever opened.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from pathlib import Path
from typing import Any

from kubernetes import client

from controller.kube import CONNECTION_POOL_SIZE, Kube, load_api_client
from tests.integration.receiver_env import ReceiverEnv, gitrepo_body
from tests.support import delivery, secret_data, sha
from tools.served import start_serve


async def test_concurrent_calls_never_discard_a_connection(
    kube_api: client.ApiClient, control_plane: Any, namespace: str
) -> None:
    custom = client.CustomObjectsApi(kube_api)
    custom.create_namespaced_custom_object(
        "fleet.cattle.io", "v1alpha1", namespace, "gitrepos", gitrepo_body("pooled", "https://github.com/o/pooled")
    )
    kube = Kube(load_api_client(control_plane.kubeconfig))
    try:
        for _ in range(3):  # several waves: connections made by one wave are put back and reused
            objs = await asyncio.gather(
                *(kube.get_gitrepo(namespace, "pooled") for _ in range(2 * CONNECTION_POOL_SIZE))
            )
            assert {o["metadata"]["name"] for o in objs} == {"pooled"}
        opened = kube.http.connections_opened
    finally:
        kube.close()
    assert 0 < opened <= CONNECTION_POOL_SIZE, opened


async def test_a_warm_pool_serves_writes_without_a_new_connection(
    kube_api: client.ApiClient, control_plane: Any, namespace: str
) -> None:
    """`warm(n)` leaves n open connections, a second warm-up reuses them, and n concurrent calls
    after it open none: the handshakes happened before any delivery needed a connection."""
    custom = client.CustomObjectsApi(kube_api)
    custom.create_namespaced_custom_object(
        "fleet.cattle.io", "v1alpha1", namespace, "gitrepos", gitrepo_body("warm", "https://github.com/o/warm")
    )
    kube = Kube(load_api_client(control_plane.kubeconfig))
    seen: list[int] = []
    kube.http.on_connection_opened = lambda: seen.append(1)
    try:
        assert await kube.http.warm(6) == 6
        assert kube.http.connections_opened == 6
        assert await kube.http.warm(6) == 6
        assert kube.http.connections_opened == 6  # the same six, their idle clocks reset
        objs = await asyncio.gather(*(kube.get_gitrepo(namespace, "warm") for _ in range(6)))
        assert {o["metadata"]["name"] for o in objs} == {"warm"}
        assert kube.http.connections_opened == 6
    finally:
        kube.close()
    assert len(seen) == 6  # the hook `serve` counts in fleet_webhook_api_connections_opened_total


CONNECTIONS_OPENED = "fleet_webhook_api_connections_opened_total"
WARM_SECRET = "warm-pool-secret-51c0"


def test_serve_warms_its_api_pool_so_concurrent_pushes_open_no_connection(
    kube_api: client.ApiClient, control_plane: Any, namespace: str, tmp_path: Path
) -> None:
    """`serve` opens --api-warm-connections (8) connections before any push; four concurrent first
    pushes (a Secret read, status and polling writes, Events each) then open none: no delivery
    waited for a TLS handshake."""
    env = ReceiverEnv(kube_api, control_plane.kubeconfig, namespace)
    env.create_secret("gitjob-webhook", secret_data("github", WARM_SECRET))
    urls = [f"https://github.com/example-org/warm-{i}" for i in range(4)]
    for i, url in enumerate(urls):
        env.create_gitrepo(f"warm-{i}", url)
    served = start_serve(
        control_plane.kubeconfig,
        namespace,
        tmp_path,
        f"watch:\n  namespaces: [{namespace}]\n",
    )
    try:
        deadline = time.monotonic() + 10
        while (opened := served.metric(CONNECTIONS_OPENED) or 0) < 8:  # the default warm-up, beside startup
            assert time.monotonic() < deadline, f"only {opened} connections warmed"
            time.sleep(0.05)
        # The first push to each GitRepo reads the Secret (one call, on a warm connection) and writes it.
        with concurrent.futures.ThreadPoolExecutor(len(urls)) as pool:
            pushes = [delivery("github", https_url=u, commit=sha(f"warm-{u}"), secret=WARM_SECRET) for u in urls]
            statuses = [status for status, _ in pool.map(served.post, pushes)]
        assert statuses == [200] * len(urls)
        for i, url in enumerate(urls):
            assert env.gitrepo(f"warm-{i}")["status"]["webhookCommit"] == sha(f"warm-{url}")
        assert served.metric(CONNECTIONS_OPENED) == opened
    finally:
        served.stop()
