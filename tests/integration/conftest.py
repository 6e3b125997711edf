"""Fixtures for tests against the real etcd + kube-apiserver (`control_plane`, `kube_api`: tests/conftest.py).

* `namespace`: a fresh namespace `t-<8 hex>` per test.
* `nats_server` (session): ONE real nats-server with JetStream (tools/nats.py) for the relay tests;
  each test uses streams and consumers of its own. Missing binary: the test FAILS (run `make tools`).

Every test under tests/integration gets the `integration` marker.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.conftest import require_nats_server
from tools.nats import NatsServer

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.resolve().is_relative_to(_HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def namespace(kube_api: client.ApiClient) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    # Without kube-controller-manager the namespace stays Terminating forever; that's fine.
    with contextlib.suppress(Exception):
        core.delete_namespace(name, _request_timeout=5)


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    with NatsServer(binary=require_nats_server("the relay tests")) as broker:
        yield broker
