"""Fixtures for the Helm chart tests: the real helm binary and a real etcd + kube-apiserver.

* `helm` (session): runs the helm built by `make tools` with its own cache/config dirs (support.Helm).
* `control_plane` (session): one ControlPlane with the GitRepo CRD and a ServiceMonitor stand-in CRD.
* `kube_api`: an admin `kubernetes.client.ApiClient`; `release_namespace`: a fresh namespace per test.

Missing binaries FAIL the tests (never skip): run `make tools`.
Every test under tests/chart gets the `chart` marker.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.chart.support import Helm, create_namespace, find_helm, unique
from tools.controlplane import (
    ControlPlane,
    ToolsMissingError,
    find_tools_bin,
    install_crds,
    new_api_client,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

_HERE = Path(__file__).resolve().parent
# The GitRepo CRD of the integration tests, plus a ServiceMonitor stand-in so the chart's optional
# ServiceMonitor can be dry-run and installed (this control plane has no Prometheus Operator).
CRDS = [REPO_ROOT / "tests" / "fixtures" / "crds", _HERE / "fixtures" / "crds"]
_report: list[str] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.resolve().is_relative_to(_HERE):
            item.add_marker(pytest.mark.chart)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _report:
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    try:
        binary = find_helm()
    except FileNotFoundError as exc:
        missing = str(exc)
    else:
        missing = ""
    if missing:  # fail (never skip) outside the except block, so the report is just the message
        pytest.fail(f"chart tests need the real helm: {missing}", pytrace=False)
    return Helm(binary, tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    try:
        bin_dir = find_tools_bin()
    except ToolsMissingError as exc:
        missing = str(exc)
    else:
        missing = ""
    if missing:
        pytest.fail(f"chart tests need the real etcd + kube-apiserver: {missing}", pytrace=False)
    with ControlPlane(bin_dir=bin_dir) as cp:
        crds = install_crds(cp.kubeconfig, CRDS)
        _report.append(f"chart control plane: ready in {cp.startup_seconds:.2f}s; CRDs {', '.join(crds)}")
        yield cp


@pytest.fixture
def kube_api(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    with new_api_client(control_plane.kubeconfig) as api:
        yield api


@pytest.fixture
def release_namespace(kube_api: client.ApiClient) -> str:
    """A fresh namespace to install a release into (never deleted: no controller-manager to finish it)."""
    return create_namespace(kube_api, unique("fw"))
