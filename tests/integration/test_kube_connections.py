"""Concurrent API calls reuse kept connections: none is thrown away for lack of room in the pool.

Each connection thrown away costs a TLS handshake on the next call, which showed as tail latency
under load (with the official client's default pool of 5 per CPU). The calls a delivery makes go
over one aiohttp connector of CONNECTION_POOL_SIZE connections; this test drives twice as many
concurrent calls, in several waves, against the real API server and requires that the connections
of the first wave are the only ones ever opened.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kubernetes import client

from controller.kube import CONNECTION_POOL_SIZE, Kube, load_api_client
from tests.integration.receiver_env import gitrepo_body


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
