"""Fixtures for the container image tests: the image `make image` builds, and the chart that runs it.

* `built` (session): runs `python -m tools.image` (what `make image` runs: installs buildah/podman/runc/
  mmdebstrap/skopeo from Debian's packages when missing, builds or reuses the image) and parses what it
  prints. A failure to install the tools or to build FAILS every image test, never skips.
* `helm` (session): the real helm built by `make tools`.

Every test under tests/image gets the `image` marker.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.chart.support import REPO_ROOT, Helm, find_helm
from tests.conftest import SUMMARY_LINES

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.resolve().is_relative_to(_HERE):
            item.add_marker(pytest.mark.image)


@dataclass(frozen=True)
class Built:
    """What `make image` printed."""

    ref: str
    image_id: str
    base: str
    packages: dict[str, str]
    stdout: str


def parse_report(stdout: str) -> Built:
    """The report of tools/image.py: `image`, `id`, `size`, `base` lines, then `  name==version` lines."""
    fields: dict[str, str] = {}
    packages: dict[str, str] = {}
    for line in stdout.splitlines():
        if line.startswith("  ") and "==" in line:
            name, _, ver = line.strip().partition("==")
            packages[name] = ver
        elif line and not line.startswith(" "):
            key, _, value = line.partition(" ")
            fields[key] = value.strip()
    return Built(fields["image"], fields["id"], fields["base"], packages, stdout)


@pytest.fixture(scope="session")
def built() -> Built:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "tools.image"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800, check=False
    )
    if proc.returncode != 0:  # fail (never skip): the tools could not be installed or the build failed
        pytest.fail(f"`make image` failed ({proc.returncode}):\n{proc.stderr[-4000:]}", pytrace=False)
    report = parse_report(proc.stdout)
    SUMMARY_LINES.append(f"image: {report.ref} {report.image_id[:19]} ready in {time.monotonic() - started:.1f}s")
    return report


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    try:
        binary = find_helm()
    except FileNotFoundError as exc:
        missing = str(exc)
    else:
        missing = ""
    if missing:
        pytest.fail(f"image tests take the chart's pod spec from the real helm: {missing}", pytrace=False)
    return Helm(binary, tmp_path_factory.mktemp("helm-home"))
