"""Concurrent API calls reuse kept connections: none is thrown away for lack of room in the pool.

The Kubernetes client's default pool (5 connections per CPU) is smaller than the write pool, and each
connection it discards costs a TLS handshake on the next call, which showed as tail latency under
load. urllib3 says so in a warning; this test drives more concurrent calls than the Kube executor
has workers against the real API server and requires that warning never to appear.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from kubernetes import client

from controller.kube import Kube, load_api_client
from tests.integration.receiver_env import gitrepo_body

POOL_FULL = "Connection pool is full"


async def test_concurrent_calls_never_discard_a_connection(
    kube_api: client.ApiClient, control_plane: Any, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    custom = client.CustomObjectsApi(kube_api)
    custom.create_namespaced_custom_object(
        "fleet.cattle.io", "v1alpha1", namespace, "gitrepos", gitrepo_body("pooled", "https://github.com/o/pooled")
    )
    caplog.set_level(logging.WARNING, logger="urllib3.connectionpool")
    kube = Kube(load_api_client(control_plane.kubeconfig))
    try:
        for _ in range(3):  # several waves: connections made by one wave are put back and reused
            objs = await asyncio.gather(*(kube.get_gitrepo(namespace, "pooled") for _ in range(64)))
            assert {o["metadata"]["name"] for o in objs} == {"pooled"}
    finally:
        kube.close()
    assert not [r for r in caplog.records if POOL_FULL in r.getMessage()], caplog.text
