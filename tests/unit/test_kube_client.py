"""The API client keeps enough connections for the write pool and the watches."""

from __future__ import annotations

from pathlib import Path

from controller.kube import CONNECTION_POOL_SIZE, Kube, load_api_client

KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: not-a-real-token}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""


def test_connection_pool_is_at_least_the_worker_pool(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    api = load_api_client(path)
    kube = Kube(api)
    try:
        assert api.configuration.connection_pool_maxsize == CONNECTION_POOL_SIZE
        assert api.rest_client.pool_manager.connection_pool_kw["maxsize"] == CONNECTION_POOL_SIZE
        assert kube._pool._max_workers + 2 <= CONNECTION_POOL_SIZE  # executor workers + watch threads
    finally:
        kube.close()
