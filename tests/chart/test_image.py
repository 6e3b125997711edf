"""The wheel the Dockerfile installs, and the Dockerfile's own shape.

The image itself is built and run by tests/image (user, ports, entrypoint and args against `helm
template`, the packages inside, the layers). Here: the wheel is built the way the Dockerfile builds it,
installed without the checkout, and must carry the real config schema (controller/data/config.schema.json
is a symlink in the checkout); the Dockerfile stays a plain one on python:3.11-slim whose COPY sources
are all on the .dockerignore allowlist.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.chart.support import REPO_ROOT

SCHEMA = REPO_ROOT / "schema" / "config.schema.json"
DOCKERFILE = REPO_ROOT / "Dockerfile"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip wheel . -c constraints.txt --no-deps` from a copy of what the Dockerfile copies (symlinks kept)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "constraints.txt", "README.md"):
        if (REPO_ROOT / name).exists():
            shutil.copy2(REPO_ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO_ROOT / "schema", src / "schema", symlinks=True, ignore=ignore)
    shutil.copytree(REPO_ROOT / "controller", src / "controller", symlinks=True, ignore=ignore)
    assert (src / "controller" / "data" / "config.schema.json").is_symlink()  # as in the checkout
    out = tmp_path_factory.mktemp("wheels")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(src),
            "-c",
            str(src / "constraints.txt"),
            "--no-deps",
            "-w",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (built,) = out.glob("fleet_webhook-*.whl")
    return built


def test_wheel_holds_the_real_schema_file(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        info = archive.getinfo("controller/data/config.schema.json")
        assert not stat.S_ISLNK(info.external_attr >> 16)
        assert archive.read(info) == SCHEMA.read_bytes()
        entry_points = archive.read(next(n for n in archive.namelist() if n.endswith("entry_points.txt"))).decode()
    assert re.search(r"^fleet-webhook = controller\.cli:main$", entry_points, re.MULTILINE)


def test_installed_wheel_works_without_the_checkout(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "target"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
        capture_output=True,
        check=True,
        timeout=120,
    )
    installed = target / "controller" / "data" / "config.schema.json"
    assert installed.is_file()
    assert not installed.is_symlink()
    assert json.loads(installed.read_text())["title"] == "fleet-webhook config"

    # -S: no site hooks, so the editable install of this checkout is not on the path; only the target
    # folder and the venv's third-party packages are. cwd is the temp dir, never the checkout.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), sysconfig.get_paths()["purelib"]])}
    code = "import controller, controller.config as c; c.default_config(); print(controller.__file__)"
    proc = subprocess.run(
        [sys.executable, "-S", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).is_relative_to(target)

    # The console script the image's ENTRYPOINT runs.
    config = tmp_path / "config.yaml"
    config.write_text("polling:\n  webhookInterval: 2h\n")
    proc = subprocess.run(
        [sys.executable, "-S", str(target / "bin" / "fleet-webhook"), "check-config", str(config)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{config}: ok")


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def test_dockerfile_is_plain_on_python_slim_and_copies_only_allowlisted_sources() -> None:
    instructions = dockerfile_instructions()
    froms = [args.split()[0] for word, args in instructions if word == "FROM"]
    assert froms == ["python:3.11-slim", "python:3.11-slim"]  # make image's stand-in base takes this name
    runs = " ".join(args for word, args in instructions if word == "RUN")
    assert "-c constraints.txt" in runs
    assert "[dev]" not in runs

    # .dockerignore excludes everything but an allowlist: each COPY source must be on it.
    allowed = {
        line[1:].rstrip("/") for line in (REPO_ROOT / ".dockerignore").read_text().splitlines() if line[:1] == "!"
    }
    sources = [
        src.rstrip("/")
        for word, args in instructions
        if word == "COPY" and "--from" not in args
        for src in args.split()[:-1]
    ]
    assert sources
    assert set(sources) <= allowed
