"""Rancher Fleet as a test tool: its real CRDs and its gitjob controller (`fleetcontroller gitjob`).

`FleetController(kubeconfig)` runs `fleetcontroller gitjob` on loopback against a control plane
prepared by `install_fleet_prerequisites` (the CRDs plus the objects the controller reads). Facts
about what it needs and does: ../shared/notes/real-fleet-and-gitea.md.

`make tools` (tools/build-fleet.sh) keeps Fleet v0.16.1's source in the tools cache and builds
`fleetcontroller` from it. Tests that want Fleet's own CustomResourceDefinitions (all 14, GitRepo
included, exactly as Fleet ships them) ask for the file:

    from tools.fleet import fleet_crds_file
    install_crds(kubeconfig, [fleet_crds_file()])

`fleet_crds_file()` extracts the source first when it is missing (from the checked archive, in well
under a second; no Go needed), so a test never depends on the binary having been built.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from tools.controlplane import LOOPBACK, free_ports, install_crds, new_api_client, spawn, terminate

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

REPO_ROOT = Path(__file__).resolve().parent.parent
FLEET_VERSION = "v0.16.1"  # also in tools/build-fleet.sh
CRDS_IN_SOURCE = Path("charts/fleet-crd/templates/crds.yaml")
# Every CRD in Fleet v0.16.1's crds.yaml; the gitjob controller wants at least gitrepos, bundles,
# gitreporestrictions and bundledeployments installed before it starts.
FLEET_CRDS = (
    "bundledeployments.fleet.cattle.io",
    "bundlenamespacemappings.fleet.cattle.io",
    "bundles.fleet.cattle.io",
    "clustergroups.fleet.cattle.io",
    "clusterregistrations.fleet.cattle.io",
    "clusterregistrationtokens.fleet.cattle.io",
    "clusters.fleet.cattle.io",
    "contents.fleet.cattle.io",
    "gitreporestrictions.fleet.cattle.io",
    "gitrepos.fleet.cattle.io",
    "helmops.fleet.cattle.io",
    "imagescans.fleet.cattle.io",
    "policies.fleet.cattle.io",
    "schedules.fleet.cattle.io",
)


class FleetSourceError(RuntimeError):
    """Fleet's source (and so its CRDs) could not be provided; the message says why and what to run."""


def tools_cache(environ: os._Environ[str] | dict[str, str] | None = None) -> Path:
    """The version-keyed tools cache: $FLEET_WEBHOOK_TOOLS_CACHE, else <repo>/.cache/tools."""
    env = os.environ if environ is None else environ
    return Path(env.get("FLEET_WEBHOOK_TOOLS_CACHE") or REPO_ROOT / ".cache" / "tools")


def built_tool(name: str, version: str, binary: str, script: str, error: type[Exception], *required: str) -> Path:
    """`binary` in the tools cache's `<name>-<version>` folder (built by tools/`script`), or `error`
    naming `make tools`. `required`: paths in that folder that must exist too (static files)."""
    home = tools_cache() / f"{name}-{version}"
    path = home / binary
    if not (os.access(path, os.X_OK) and all((home / r).exists() for r in required)):
        raise error(f"{name} {version} not found at {path}: run `make tools` (tools/{script})")
    return path


def fleet_source_dir() -> Path:
    """Fleet v0.16.1's source tree in the tools cache, extracted now if it is not there yet."""
    src = tools_cache() / f"fleet-src-{FLEET_VERSION}"
    if not (src / CRDS_IN_SOURCE).is_file():
        proc = subprocess.run(
            [str(REPO_ROOT / "tools" / "build-fleet.sh"), "--source-only"],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0 or not (src / CRDS_IN_SOURCE).is_file():
            raise FleetSourceError(
                f"tools/build-fleet.sh --source-only failed (exit {proc.returncode}): {proc.stderr.strip()}; "
                "run `make tools`, or set FLEET_SRC to a Fleet v0.16.1 checkout"
            )
    return src


def fleet_crds_file() -> Path:
    """Fleet's real CRDs file (charts/fleet-crd/templates/crds.yaml of v0.16.1; plain YAML, 14 CRDs)."""
    return fleet_source_dir() / CRDS_IN_SOURCE


# --------------------------------------------------------------------------------------------------
# The gitjob controller

FLEET_NAMESPACE = "cattle-fleet-system"
GITJOB_IMAGE = f"rancher/fleet:{FLEET_VERSION}"  # only written into the Jobs; nothing runs them here
TMP_PREFIX = "fleet-webhook-fleet-"


def find_fleetcontroller() -> Path:
    """The fleetcontroller binary, or FleetSourceError naming `make tools`."""
    return built_tool("fleetcontroller", FLEET_VERSION, "fleetcontroller", "build-fleet.sh", FleetSourceError)


def install_fleet_prerequisites(kubeconfig: str | Path) -> list[str]:
    """Fleet's 14 CRDs and what its gitjob controller reads before it creates a Job: the namespace
    cattle-fleet-system, a Deployment `fleet-controller` there (its tolerations are copied into each
    Job; without it no Job is made; replicas 0 is enough) and a ConfigMap `known-hosts` with one key
    line (an empty one enforces strict host key checks even for http:// repositories).
    Idempotent; returns the CRD names."""
    from kubernetes import client

    names = install_crds(kubeconfig, [fleet_crds_file()])
    with new_api_client(kubeconfig) as api:
        core = client.CoreV1Api(api)
        apps = client.AppsV1Api(api)
        _create(lambda: core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=FLEET_NAMESPACE))))
        labels = {"app": "fleet-controller"}
        deployment = client.V1Deployment(
            metadata=client.V1ObjectMeta(name="fleet-controller", namespace=FLEET_NAMESPACE),
            spec=client.V1DeploymentSpec(
                replicas=0,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(containers=[client.V1Container(name="fleet-controller", image=GITJOB_IMAGE)]),
                ),
            ),
        )
        _create(lambda: apps.create_namespaced_deployment(FLEET_NAMESPACE, deployment))
        known_hosts = client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="known-hosts", namespace=FLEET_NAMESPACE),
            # A syntactically valid line for a host no test uses (Fleet only needs the map non-empty).
            data={
                "known_hosts": "example.invalid ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"
            },
        )
        _create(lambda: core.create_namespaced_config_map(FLEET_NAMESPACE, known_hosts))
    return names


def _create(call: Any) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        call()
    except ApiException as exc:
        if exc.status != 409:
            raise


def list_jobs(api: ApiClient, namespace: str, gitrepo: str | None = None) -> list[dict[str, Any]]:
    """Fleet's gitjob Jobs in `namespace` (optionally of one GitRepo) as {name, commit, created}.

    A Job is `<gitrepo>-<5 hex>` with the commit in its `commit` annotation. Nothing runs Jobs
    here (no kube-controller-manager, no kubelet): the Job object is the proof that Fleet acted."""
    from kubernetes import client

    jobs = client.BatchV1Api(api).list_namespaced_job(namespace).items
    out = []
    for job in jobs:
        meta = job.metadata
        assert meta is not None  # the API server always returns an object's metadata
        owner = next((o.name for o in meta.owner_references or [] if o.kind == "GitRepo"), None)
        if gitrepo is not None and owner != gitrepo:
            continue
        out.append(
            {
                "name": meta.name,
                "gitrepo": owner,
                "commit": (meta.annotations or {}).get("commit"),
                "created": meta.creation_timestamp,
            }
        )
    return out


class FleetController:
    """`fleetcontroller gitjob` on loopback; a context manager.

    Both its listeners bind 127.0.0.1: `--metrics-bind-address` and `--listen` (Fleet's own webhook
    receiver, which cannot be turned off and otherwise listens on :8080 on every interface).
    HTTP_PROXY/HTTPS_PROXY point at a closed loopback port, so it can reach nothing but loopback
    (Go never proxies loopback addresses)."""

    def __init__(
        self,
        kubeconfig: Path,
        *,
        binary: Path | None = None,
        tmp_parent: Path | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.kubeconfig = kubeconfig
        self.binary = binary or find_fleetcontroller()
        self._tmp_parent = tmp_parent
        self.extra_args = extra_args
        self.tmpdir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0
        self.listen_port = 0
        self.startup_seconds = 0.0

    def __enter__(self) -> FleetController:
        return self.start()

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    @property
    def receiver_url(self) -> str:
        """Fleet's own webhook receiver (`--listen`)."""
        return f"http://{LOOPBACK}:{self.listen_port}/"

    @property
    def log_path(self) -> Path:
        assert self.tmpdir is not None
        return self.tmpdir / "fleetcontroller.log"

    def start(self, timeout: float = 60.0) -> FleetController:
        """Start it and wait until both listeners answer."""
        started = time.monotonic()
        self.tmpdir = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=self._tmp_parent))
        try:
            self.metrics_port, self.listen_port, closed = free_ports(3)
            proxy = f"http://{LOOPBACK}:{closed}"
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(self.tmpdir),
                "KUBECONFIG": str(self.kubeconfig),
                "NAMESPACE": FLEET_NAMESPACE,
                # Read at start even with leader election off (fatal without them).
                "CATTLE_ELECTION_LEASE_DURATION": "30s",
                "CATTLE_ELECTION_RENEW_DEADLINE": "20s",
                "CATTLE_ELECTION_RETRY_PERIOD": "2s",
                "HTTP_PROXY": proxy,
                "HTTPS_PROXY": proxy,
                "http_proxy": proxy,
                "https_proxy": proxy,
                "NO_PROXY": "",
            }
            args = [
                str(self.binary),
                "gitjob",
                "--leader-elect=false",
                f"--metrics-bind-address={LOOPBACK}:{self.metrics_port}",
                f"--listen={LOOPBACK}:{self.listen_port}",
                f"--gitjob-image={GITJOB_IMAGE}",
                *self.extra_args,
            ]
            with self.log_path.open("wb") as log:
                self.proc = spawn(args, log, env=env, cwd=self.tmpdir)
            deadline = time.monotonic() + timeout
            while not (self._accepts(self.listen_port) and self._metrics_answer()):
                if self.proc.poll() is not None:
                    raise FleetSourceError(f"fleetcontroller exited with {self.proc.returncode}:\n{self.log_tail()}")
                if time.monotonic() > deadline:
                    raise FleetSourceError(f"fleetcontroller not listening within {timeout:.0f}s:\n{self.log_tail()}")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self, grace: float = 5.0) -> None:
        """Stop it and remove its folder."""
        terminate(self.proc, grace)
        self.proc = None
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @staticmethod
    def _accepts(port: int) -> bool:
        try:
            socket.create_connection((LOOPBACK, port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def _metrics_answer(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{self.metrics_port}/metrics", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def log_tail(self, lines: int = 60) -> str:
        """The last lines of its log (for assertion messages)."""
        with contextlib.suppress(OSError, AssertionError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"
