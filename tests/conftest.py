"""Fixtures shared by the suites that need the real control plane (tests/integration, tests/chart).

* `control_plane` (session): ONE etcd + kube-apiserver per pytest session, started on first use, with
  Fleet v0.16.1's real CRDs (charts/fleet-crd/templates/crds.yaml, from tools/fleet.py: the `FLEET_SRC`
  tree, else the checked archive in ../shared/third_party/fleet/) and a ServiceMonitor stand-in CRD
  (so the chart's optional ServiceMonitor can be dry-run and installed; there is no Prometheus Operator
  here). `OLD_FLEET_CRD_DIR` holds a hand-written GitRepo CRD shaped like Fleet v0.14's (no
  `status.lastWebhookTime`) for the few tests about old Fleet; they start their own control plane.
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
from tools.fleet import FleetSourceError, fleet_crds_file
from tools.nats import NatsServerError, find_nats_server

TESTS = Path(__file__).resolve().parent
OLD_FLEET_CRD_DIR = TESTS / "fixtures" / "crds-fleet-v0.14"
EXTRA_CRD_DIRS = [TESTS / "chart" / "fixtures" / "crds"]


def gitrepo_crds() -> list[Path]:
    """Fleet's real CRDs file; fails the asking test (never skips) when Fleet's source is unavailable."""
    try:
        return [fleet_crds_file()]
    except FleetSourceError as exc:
        message = str(exc)
    pytest.fail(f"these tests need Fleet v0.16.1's CRDs: {message}", pytrace=False)


def require_nats_server(who: str) -> Path:
    """The nats-server binary relay tests run, or a FAILED test naming `make tools` (never a skip)."""
    try:
        return find_nats_server()
    except NatsServerError as exc:
        missing = str(exc)
    pytest.fail(f"{who}: the real nats-server is missing: {missing}", pytrace=False)  # outside except: message only


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
        crds = install_crds(cp.kubeconfig, [*gitrepo_crds(), *EXTRA_CRD_DIRS])
        phases = ", ".join(f"{k} {v:.2f}s" for k, v in cp.timings.items())
        SUMMARY_LINES.append(f"control plane: ready in {cp.startup_seconds:.2f}s ({phases}); CRDs {', '.join(crds)}")
        yield cp


@pytest.fixture
def kube_api(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    with new_api_client(control_plane.kubeconfig) as api:
        yield api
