"""Fixtures for tests against a real etcd + kube-apiserver (built by `make tools`).

* `control_plane` (session): one ControlPlane per pytest session with the GitRepo CRD installed.
* `kube_api`: a `kubernetes.client.ApiClient` authenticated as admin (system:masters).
* `namespace`: a fresh namespace `t-<8 hex>` per test.

Missing binaries FAIL the tests (never skip): run `make tools`.
Every test under tests/integration gets the `integration` marker.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tools.controlplane import (
    ControlPlane,
    ToolsMissingError,
    find_tools_bin,
    install_crds,
    new_api_client,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

CRD_DIR = REPO_ROOT / "tests" / "fixtures" / "crds"
_HERE = Path(__file__).resolve().parent
_startup_report: list[str] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.resolve().is_relative_to(_HERE):
            item.add_marker(pytest.mark.integration)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _startup_report:
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    try:
        bin_dir = find_tools_bin()
    except ToolsMissingError as exc:
        missing = str(exc)
    else:
        missing = ""
    if missing:  # fail (never skip) outside the except block, so the report is just the message
        pytest.fail(f"integration tests need the real etcd + kube-apiserver: {missing}", pytrace=False)
    with ControlPlane(bin_dir=bin_dir) as cp:
        crds = install_crds(cp.kubeconfig, [CRD_DIR])
        phases = ", ".join(f"{k} {v:.2f}s" for k, v in cp.timings.items())
        _startup_report.append(f"control plane: ready in {cp.startup_seconds:.2f}s ({phases}); CRDs {', '.join(crds)}")
        yield cp


@pytest.fixture
def kube_api(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    with new_api_client(control_plane.kubeconfig) as api:  # kubernetes.config.new_client_from_config
        yield api


@pytest.fixture
def namespace(kube_api: client.ApiClient) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    # Without kube-controller-manager the namespace stays Terminating forever; that's fine.
    with contextlib.suppress(Exception):
        core.delete_namespace(name, _request_timeout=5)
