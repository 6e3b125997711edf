"""Helpers of the chart tests: the real helm binary, manifests, namespaces and secrets."""

from __future__ import annotations

import base64
import os
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from kubernetes import client

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "chart"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))

T = TypeVar("T")


def present(value: T | None) -> T:
    """`value`, asserted set: the client's models declare nearly every field optional, even ones the API fills."""
    assert value is not None
    return value


def find_tool(name: str) -> Path:
    """A tool from $FLEET_WEBHOOK_TOOLS_BIN or .cache/tools/bin (what `make tools` builds)."""
    folders = [Path(os.environ["FLEET_WEBHOOK_TOOLS_BIN"])] if os.environ.get("FLEET_WEBHOOK_TOOLS_BIN") else []
    folders.append(Path(os.environ.get("FLEET_WEBHOOK_TOOLS_CACHE") or REPO_ROOT / ".cache" / "tools") / "bin")
    for folder in folders:
        candidate = folder / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(f"{name} not found in {', '.join(map(str, folders))}: run `make tools`")


def find_helm() -> Path:
    """helm from $FLEET_WEBHOOK_TOOLS_BIN or .cache/tools/bin."""
    return find_tool("helm")


@dataclass(frozen=True)
class Helm:
    """The real helm binary, isolated from the user's helm config and cache."""

    binary: Path
    home: Path

    def run(
        self, *args: str, kubeconfig: Path | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run helm; with check=True a non-zero exit fails the test showing helm's stderr."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
            "KUBECONFIG": str(kubeconfig) if kubeconfig else str(self.home / "no-kubeconfig"),
        }
        proc = subprocess.run(
            [str(self.binary), *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            pytest.fail(f"helm {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}", pytrace=False)
        return proc

    def template(
        self,
        *,
        values: Sequence[Path] = (),
        sets: Sequence[str] = (),
        release: str = "fw",
        namespace: str = "cattle-fleet-system",
    ) -> list[dict[str, Any]]:
        """`helm template` parsed into manifests (empty documents dropped)."""
        args = ["template", release, str(CHART), "--namespace", namespace]
        for path in values:
            args += ["-f", str(path)]
        for item in sets:
            args += ["--set", item]
        out = self.run(*args).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]

    def fails(self, *args: str, kubeconfig: Path | None = None) -> str:
        """Run helm expecting failure; returns stderr."""
        proc = self.run(*args, kubeconfig=kubeconfig, check=False)
        assert proc.returncode != 0, f"helm {' '.join(args)} unexpectedly succeeded:\n{proc.stdout[:2000]}"
        return proc.stderr


def create_namespace(api: client.ApiClient, name: str) -> str:
    """Create a namespace (it is fine if it exists)."""
    try:
        client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    return name


def unique(prefix: str) -> str:
    """A fresh DNS-label name."""
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def create_secret(api: client.ApiClient, namespace: str, name: str, data: dict[str, str]) -> None:
    """Create a Secret as admin."""
    encoded: dict[str, bytes | str] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    client.CoreV1Api(api).create_namespaced_secret(
        namespace, client.V1Secret(metadata=client.V1ObjectMeta(name=name), data=encoded)
    )


def by_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Manifests of one kind."""
    return [m for m in manifests if m.get("kind") == kind]


def one(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The single manifest of a kind."""
    found = by_kind(manifests, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]
