"""A real, throw-away Kubernetes control plane (etcd + kube-apiserver) for tests and `make cluster`.

The binaries come from `make tools` (tools/build-tools.sh); nothing is mocked. Everything listens on
127.0.0.1 only, lives in one temp dir and is torn down on exit (also on Ctrl-C or if Python dies).

    with ControlPlane() as cp:
        install_crds(cp.kubeconfig, [fleet_crds_file()])  # from tools.fleet
        api = kubernetes.config.new_client_from_config(str(cp.kubeconfig))

CLI (used by `make cluster`):

    python -m tools.controlplane [--crds DIR_OR_FILE ...]

starts the control plane, installs the CRDs, prints `export KUBECONFIG=<path>` and waits for Ctrl-C.

Modules: `binaries` (where etcd and kube-apiserver come from), `pki` (certificates, kubeconfig),
`processes` (children that die with their parent, loopback ports, API clients), `cluster`
(ControlPlane), `crds` (install and wait), `__main__` (the CLI). Import from the package.

Binaries are looked up in, first match wins:
  1. $FLEET_WEBHOOK_TOOLS_BIN (must hold etcd and kube-apiserver),
  2. $KUBEBUILDER_ASSETS if it holds etcd and kube-apiserver (envtest convention),
  3. <repo>/.cache/tools/bin (or $FLEET_WEBHOOK_TOOLS_CACHE/bin), which `make tools` fills.
"""

from tools.controlplane.binaries import BINARIES, MAKE_TOOLS_HINT, REPO_ROOT, ToolsMissingError, find_tools_bin
from tools.controlplane.cluster import ControlPlane, ControlPlaneError
from tools.controlplane.crds import install_crds, load_crds
from tools.controlplane.pki import CertKey, Pki, generate_pki, issue_cert, new_ca, write_kubeconfig
from tools.controlplane.processes import LOOPBACK, free_ports, new_api_client, spawn, terminate

__all__ = [
    "BINARIES",
    "LOOPBACK",
    "MAKE_TOOLS_HINT",
    "REPO_ROOT",
    "CertKey",
    "ControlPlane",
    "ControlPlaneError",
    "Pki",
    "ToolsMissingError",
    "find_tools_bin",
    "free_ports",
    "generate_pki",
    "install_crds",
    "issue_cert",
    "load_crds",
    "new_api_client",
    "new_ca",
    "spawn",
    "terminate",
    "write_kubeconfig",
]
