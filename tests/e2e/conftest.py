"""Fixtures for the end-to-end suite: a real `git push` to a real Gitea ends in a Job of the real Fleet.

* `stack` (package scope, so once per run): on the session's control plane (tests/conftest.py),
  Fleet's 14 CRDs and the objects its gitjob controller needs, `fleetcontroller gitjob`, Gitea with
  sqlite and `fleet-webhook serve`, all on 127.0.0.1 (tools/e2e.py). Package scope rather than
  session: the gitjob controller reconciles every GitRepo in the cluster, so it must be gone before
  tests/integration creates GitRepos of its own. Its teardown asserts that no process and no folder
  is left behind.
* `repo`: a fresh Gitea repository (auto-initialised on main) and a clone of it to push from.

A missing gitea or fleetcontroller FAILS these tests (never skips): run `make tools`.
Every test here gets the `e2e` marker.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import SUMMARY_LINES
from tools.controlplane import ControlPlane
from tools.e2e import Stack
from tools.fleet import FleetSourceError, find_fleetcontroller
from tools.gitea import GiteaError, Worktree, find_gitea

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.resolve().is_relative_to(_HERE):
            item.add_marker(pytest.mark.e2e)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="package")
def stack(control_plane: ControlPlane) -> Iterator[Stack]:
    missing = []
    for find in (find_gitea, find_fleetcontroller):
        try:
            find()
        except (GiteaError, FleetSourceError) as exc:
            missing.append(str(exc))
    if missing:  # fail (never skip), outside the except block so the report is just the message
        pytest.fail("the e2e suite needs the real gitea and fleetcontroller: " + "; ".join(missing), pytrace=False)
    with Stack(control_plane.kubeconfig) as s:
        phases = ", ".join(f"{k} {v:.2f}s" for k, v in s.timings.items())
        SUMMARY_LINES.append(f"e2e stack: started in {sum(s.timings.values()):.2f}s ({phases})")
        workdir = s.tmpdir
        pids = s.pids()
        assert len(pids) == 3, pids
        yield s
        pids = s.pids() or pids  # the webhook may have been restarted: take the current ones
        SUMMARY_LINES.append(
            f"e2e stack: Fleet lost a new GitRepo's first poll result {s.first_poll_nudges} time(s) "
            "(nudged by a pollingInterval change; tools/e2e.py Stack.wait_first_job)"
        )
    assert workdir is not None
    left = [pid for pid in pids if _alive(pid)]
    assert not left, f"processes left behind: {left}"
    leftovers = subprocess.run(["pgrep", "-f", str(workdir)], capture_output=True, text=True).stdout.strip()
    assert leftovers == "", f"processes left behind: {leftovers}"
    assert not workdir.exists(), f"folder left behind: {workdir}"


@pytest.fixture
def repo(stack: Stack, tmp_path: Path) -> Callable[[], Worktree]:
    """A factory: each call makes a new Gitea repository and returns a clone of it."""

    def make() -> Worktree:
        assert stack.gitea is not None
        name = f"apps-{uuid.uuid4().hex[:6]}"
        stack.gitea.create_repo(name)
        return Worktree(stack.gitea, name, tmp_path / name)

    return make
