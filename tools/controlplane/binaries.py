"""Where the etcd and kube-apiserver binaries come from (`make tools`, or the environment)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

REPO_ROOT = Path(__file__).resolve().parents[2]
BINARIES = ("etcd", "kube-apiserver")
MAKE_TOOLS_HINT = (
    "run `make tools` (tools/build-tools.sh) to build them, "
    "or point FLEET_WEBHOOK_TOOLS_BIN / KUBEBUILDER_ASSETS at a folder holding etcd and kube-apiserver"
)


class ToolsMissingError(RuntimeError):
    """etcd / kube-apiserver binaries were not found."""


# --------------------------------------------------------------------------------------------------
# Binaries


def _has_binaries(folder: Path) -> bool:
    return all((folder / name).is_file() and os.access(folder / name, os.X_OK) for name in BINARIES)


def find_tools_bin(environ: dict[str, str] | None = None) -> Path:
    """Return the folder holding etcd and kube-apiserver, or raise ToolsMissingError naming `make tools`."""
    env = os.environ if environ is None else environ
    explicit = env.get("FLEET_WEBHOOK_TOOLS_BIN")
    if explicit:
        folder = Path(explicit)
        if _has_binaries(folder):
            return folder
        raise ToolsMissingError(
            f"FLEET_WEBHOOK_TOOLS_BIN={explicit} does not hold executable {' and '.join(BINARIES)}: " + MAKE_TOOLS_HINT
        )
    searched: list[str] = []
    assets = env.get("KUBEBUILDER_ASSETS")
    if assets:
        if _has_binaries(Path(assets)):
            return Path(assets)
        searched.append(f"KUBEBUILDER_ASSETS={assets}")
    cache = Path(env.get("FLEET_WEBHOOK_TOOLS_CACHE") or REPO_ROOT / ".cache" / "tools")
    default = cache / "bin"
    if _has_binaries(default):
        return default
    searched.append(str(default))
    raise ToolsMissingError(f"etcd and kube-apiserver not found (searched {', '.join(searched)}): " + MAKE_TOOLS_HINT)
