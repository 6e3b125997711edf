"""Fixtures shared by the suites that need the real control plane (tests/integration, tests/chart).

* `control_plane` (session): ONE etcd + kube-apiserver per pytest session, started on first use, with
  the GitRepo CRD and a ServiceMonitor stand-in CRD (so the chart's optional ServiceMonitor can be
  dry-run and installed; there is no Prometheus Operator here).
* `kube_api`: an admin (system:masters) `kubernetes.client.ApiClient`, closed after the test.

Missing binaries FAIL the tests that need them (never skip): run `make tools`.
Unit tests never request these fixtures, so `make unit` starts nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tools.controlplane import ControlPlane, ToolsMissingError, find_tools_bin, install_crds, new_api_client

TESTS = Path(__file__).resolve().parent
GITREPO_CRD_DIR = TESTS / "fixtures" / "crds"
CRD_DIRS = [GITREPO_CRD_DIR, TESTS / "chart" / "fixtures" / "crds"]
SUMMARY_LINES: list[str] = []  # printed at the end of the run (start-up time, load figures)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in SUMMARY_LINES:
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
        pytest.fail(f"these tests need the real etcd + kube-apiserver: {missing}", pytrace=False)
    with ControlPlane(bin_dir=bin_dir) as cp:
        crds = install_crds(cp.kubeconfig, CRD_DIRS)
        phases = ", ".join(f"{k} {v:.2f}s" for k, v in cp.timings.items())
        SUMMARY_LINES.append(f"control plane: ready in {cp.startup_seconds:.2f}s ({phases}); CRDs {', '.join(crds)}")
        yield cp


@pytest.fixture
def kube_api(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    with new_api_client(control_plane.kubeconfig) as api:
        yield api
