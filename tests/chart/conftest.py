"""Fixtures for the Helm chart tests (`control_plane`, `kube_api`: tests/conftest.py).

* `helm` (session): runs the helm built by `make tools` with its own cache/config dirs (support.Helm).
* `release_namespace`: a fresh namespace per test.

Missing binaries FAIL the tests (never skip): run `make tools`.
Every test under tests/chart gets the `chart` marker.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client

from tests.chart.support import Helm, create_namespace, find_helm, unique

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.resolve().is_relative_to(_HERE):
            item.add_marker(pytest.mark.chart)


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


@pytest.fixture
def release_namespace(kube_api: client.ApiClient) -> str:
    """A fresh namespace to install a release into (never deleted: no controller-manager to finish it)."""
    return create_namespace(kube_api, unique("fw"))
