"""ControlPlane: etcd + kube-apiserver on loopback in one temp dir, as a context manager."""

from __future__ import annotations

import atexit
import http.client
import json
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from tools.controlplane.binaries import find_tools_bin
from tools.controlplane.pki import Pki, b64, generate_pki, issue_cert, write_kubeconfig
from tools.controlplane.processes import (
    LOOPBACK,
    TMP_PREFIX,
    Spawner,
    free_ports,
    new_api_client,
    remove_stale_tmpdirs,
    tail,
    terminate,
)

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

# --------------------------------------------------------------------------------------------------
# Control plane


class ControlPlaneError(RuntimeError):
    """A control-plane process failed to start or became unhealthy."""


class ControlPlane:
    """etcd + kube-apiserver on loopback, in a temp dir; a context manager.

    Attributes once started: `kubeconfig` (admin, system:masters), `server` (https URL), `tmpdir`,
    `ca_file` (apiserver CA), `etcd_url`, `timings` (seconds per phase), `startup_seconds`.
    """

    def __init__(
        self,
        *,
        bin_dir: Path | None = None,
        start_timeout: float = 60.0,
        stop_grace: float = 5.0,
        extra_apiserver_args: Sequence[str] = (),
        tmp_parent: Path | None = None,
    ) -> None:
        self._bin_dir = bin_dir
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self.extra_apiserver_args = list(extra_apiserver_args)
        self._tmp_parent = tmp_parent
        self._tmpdir: Path | None = None
        self._pki: Pki | None = None
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None
        self._etcd_port = self._etcd_peer_port = self._apiserver_port = 0
        self._lock = threading.RLock()
        self._atexit_registered = False
        self._kubeconfig_seq = 0
        self.timings: dict[str, float] = {}
        self.startup_seconds = 0.0

    # -- public properties ---------------------------------------------------------------------------

    @property
    def tmpdir(self) -> Path:
        if self._tmpdir is None:
            raise ControlPlaneError("control plane not started")
        return self._tmpdir

    @property
    def bin_dir(self) -> Path:
        """Folder holding the etcd and kube-apiserver binaries in use."""
        return self._bin_dir or find_tools_bin()

    @property
    def server(self) -> str:
        return f"https://{LOOPBACK}:{self._apiserver_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://{LOOPBACK}:{self._etcd_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.tmpdir / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self._require_pki().ca_file

    @property
    def pki(self) -> Pki:
        return self._require_pki()

    def _require_pki(self) -> Pki:
        if self._pki is None:
            raise ControlPlaneError("control plane not started")
        return self._pki

    # -- lifecycle -----------------------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> ControlPlane:
        """Start etcd and kube-apiserver and write the admin kubeconfig. Cleans up on any failure."""
        with self._lock:
            if self._tmpdir is not None:
                raise ControlPlaneError("control plane already started")
            t0 = time.monotonic()
            bin_dir = self._bin_dir or find_tools_bin()
            self._bin_dir = bin_dir
            remove_stale_tmpdirs(self._tmp_parent)
            self._tmpdir = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=self._tmp_parent))
            (self._tmpdir / "owner.pid").write_text(str(os.getpid()))
            if not self._atexit_registered:
                atexit.register(self.stop)
                self._atexit_registered = True
            try:
                (self._tmpdir / "pki").mkdir(mode=0o700)
                self._pki = generate_pki(self._tmpdir / "pki")
                self._etcd_port, self._etcd_peer_port, self._apiserver_port = free_ports(3)
                t1 = time.monotonic()
                self.timings["pki"] = t1 - t0
                self._start_etcd()
                t2 = time.monotonic()
                self.timings["etcd"] = t2 - t1
                self._start_apiserver()
                t3 = time.monotonic()
                self.timings["kube-apiserver"] = t3 - t2
                write_kubeconfig(
                    self.kubeconfig,
                    server=self.server,
                    ca_pem=self._pki.serving_ca.cert_pem,
                    user_name="admin",
                    user={
                        "client-certificate-data": b64(self._pki.admin.cert_pem),
                        "client-key-data": b64(self._pki.admin.key_pem),
                    },
                )
                self.startup_seconds = time.monotonic() - t0
            except BaseException:
                self.stop()
                raise
            return self

    def stop(self) -> None:
        """Stop both processes (SIGTERM, then SIGKILL), reap them and remove the temp dir. Idempotent."""
        with self._lock:
            try:
                terminate(self._apiserver, self.stop_grace)
                terminate(self._etcd, self.stop_grace)
            finally:
                self._apiserver = self._etcd = None
                if self._tmpdir is not None:
                    shutil.rmtree(self._tmpdir, ignore_errors=True)
                self._tmpdir = None
                self._pki = None
                if self._atexit_registered:
                    atexit.unregister(self.stop)
                    self._atexit_registered = False

    # -- etcd ----------------------------------------------------------------------------------------

    def _etcd_args(self) -> list[str]:
        assert self._bin_dir is not None
        peer = f"http://{LOOPBACK}:{self._etcd_peer_port}"
        return [
            str(self._bin_dir / "etcd"),
            f"--data-dir={self.tmpdir / 'etcd'}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls={peer}",
            "--name=fleet-webhook-test",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=fleet-webhook-test={peer}",
            # Test data only: skip fsync, and tick fast so the single member elects itself in ~0.1 s
            # (a lone member has no peers to lose leadership to, so short timeouts are safe).
            "--unsafe-no-fsync=true",
            "--heartbeat-interval=20",
            "--election-timeout=200",
            "--log-level=warn",
        ]

    def _start_etcd(self) -> None:
        log_path = self.tmpdir / "etcd.log"
        with log_path.open("ab") as log:
            self._etcd = Spawner.get().popen(self._etcd_args(), log)
        self._wait("etcd", self._etcd, log_path, self._etcd_healthy, interval=0.02)

    def _etcd_healthy(self) -> bool:
        conn = http.client.HTTPConnection(LOOPBACK, self._etcd_port, timeout=2)
        try:
            conn.request("GET", "/health")
            resp = conn.getresponse()
            body = resp.read()
            return resp.status == 200 and json.loads(body).get("health") == "true"
        except (OSError, ValueError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def stop_etcd(self, grace: float | None = None) -> None:
        """Stop etcd (SIGTERM, SIGKILL after `grace` s). While kube-apiserver holds watches open etcd's
        graceful stop takes ~7 s, so fault tests pass a short grace; --unsafe-no-fsync data lives in
        the page cache and survives a SIGKILL."""
        with self._lock:
            terminate(self._etcd, self.stop_grace if grace is None else grace)
            self._etcd = None

    def start_etcd(self) -> None:
        """(Re)start etcd on the same ports with the same data."""
        with self._lock:
            if self._etcd is not None and self._etcd.poll() is None:
                raise ControlPlaneError("etcd is already running")
            self._start_etcd()

    def restart_etcd(self, grace: float = 1.0) -> None:
        """Stop and start etcd (same ports, same data); waits for its /health and, if kube-apiserver
        runs, for its /readyz (which checks etcd). kube-apiserver reconnects by itself; a request
        racing the reconnect may still fail once, so callers should retry briefly."""
        with self._lock:
            self.stop_etcd(grace)
            self._start_etcd()
            if self._apiserver is not None:
                log_path = self.tmpdir / "kube-apiserver.log"
                self._wait("kube-apiserver", self._apiserver, log_path, self._apiserver_ready, interval=0.05)

    # -- kube-apiserver ------------------------------------------------------------------------------

    def _apiserver_args(self) -> list[str]:
        assert self._bin_dir is not None
        pki = self._require_pki()
        return [
            str(self._bin_dir / "kube-apiserver"),
            f"--etcd-servers={self.etcd_url}",
            f"--tls-cert-file={pki.serving_cert_file}",
            f"--tls-private-key-file={pki.serving_key_file}",
            f"--cert-dir={self.tmpdir / 'apiserver-certs'}",
            f"--secure-port={self._apiserver_port}",
            f"--bind-address={LOOPBACK}",
            f"--advertise-address={LOOPBACK}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--authorization-mode=RBAC",
            f"--client-ca-file={pki.client_ca_file}",
            f"--service-account-issuer={self.server}/",
            f"--service-account-key-file={pki.sa_pub_file}",
            f"--service-account-signing-key-file={pki.sa_key_file}",
            "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true",
            # Nothing else runs here: no endpoints to reconcile for other apiservers.
            "--endpoint-reconciler-type=none",
            *self.extra_apiserver_args,
        ]

    def _start_apiserver(self) -> None:
        log_path = self.tmpdir / "kube-apiserver.log"
        with log_path.open("ab") as log:
            self._apiserver = Spawner.get().popen(self._apiserver_args(), log)
        self._wait("kube-apiserver", self._apiserver, log_path, self._apiserver_ready, interval=0.05)

    def _admin_ssl_context(self) -> ssl.SSLContext:
        pki = self._require_pki()
        ctx = ssl.create_default_context(cafile=str(pki.ca_file))
        ctx.load_cert_chain(str(pki.admin_cert_file), str(pki.admin_key_file))
        return ctx

    def _apiserver_ready(self) -> bool:
        conn = http.client.HTTPSConnection(LOOPBACK, self._apiserver_port, timeout=2, context=self._admin_ssl_context())
        try:
            conn.request("GET", "/readyz")
            resp = conn.getresponse()
            resp.read()
            return resp.status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver (etcd keeps running, data is kept)."""
        with self._lock:
            terminate(self._apiserver, self.stop_grace)
            self._apiserver = None

    def start_apiserver(self) -> None:
        """Start kube-apiserver again on the same port against the same etcd; waits for /readyz."""
        with self._lock:
            if self._apiserver is not None and self._apiserver.poll() is None:
                raise ControlPlaneError("kube-apiserver is already running")
            self._start_apiserver()

    def restart_apiserver(self) -> None:
        with self._lock:
            self.stop_apiserver()
            self._start_apiserver()

    def running(self) -> dict[str, bool]:
        """Whether each process is currently alive."""
        return {
            "etcd": self._etcd is not None and self._etcd.poll() is None,
            "kube-apiserver": self._apiserver is not None and self._apiserver.poll() is None,
        }

    # -- waiting -------------------------------------------------------------------------------------

    def _wait(
        self,
        name: str,
        proc: subprocess.Popen[bytes],
        log_path: Path,
        probe: Callable[[], bool],
        interval: float,
    ) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            code = proc.poll()
            if code is not None:
                raise ControlPlaneError(
                    f"{name} exited with code {code} during startup; last lines of {log_path}:\n" + tail(log_path)
                )
            if probe():
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"{name} not ready after {self.start_timeout:.0f}s; last lines of {log_path}:\n" + tail(log_path)
                )
            time.sleep(interval)

    # -- clients and extra identities ----------------------------------------------------------------

    def api_client(self, kubeconfig: Path | None = None) -> ApiClient:
        """A new `kubernetes.client.ApiClient` for the admin (or the given kubeconfig). Close it."""
        return new_api_client(kubeconfig or self.kubeconfig)

    def _next_kubeconfig_path(self, label: str) -> Path:
        folder = self.tmpdir / "kubeconfigs"
        folder.mkdir(exist_ok=True)
        self._kubeconfig_seq += 1
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)[:80]
        return folder / f"{self._kubeconfig_seq:03d}-{safe}.kubeconfig"

    def kubeconfig_for_user(self, user: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig authenticating as `user` in `groups` with a client cert from the client CA.
        RBAC applies (unless a group is system:masters)."""
        with self._lock:
            pki = self._require_pki()
            cert = issue_cert(pki.client_ca, user, organizations=groups, client=True)
            return write_kubeconfig(
                self._next_kubeconfig_path(f"user-{user}"),
                server=self.server,
                ca_pem=pki.serving_ca.cert_pem,
                user_name=user,
                user={
                    "client-certificate-data": b64(cert.cert_pem),
                    "client-key-data": b64(cert.key_pem),
                },
            )

    def kubeconfig_for_service_account(
        self, namespace: str, name: str, *, expiration_seconds: int = 3600, create: bool = True
    ) -> Path:
        """A kubeconfig with a bearer token for ServiceAccount `namespace/name`, from the TokenRequest
        API. The ServiceAccount is created first if missing (unless create=False)."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        with self.api_client() as api:
            core = client.CoreV1Api(api)
            if create:
                try:
                    core.create_namespaced_service_account(
                        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
                    )
                except ApiException as exc:
                    if exc.status != 409:
                        raise
            request = client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=expiration_seconds)
            )
            status = core.create_namespaced_service_account_token(name, namespace, request).status
            if status is None or not status.token:
                raise ControlPlaneError(f"TokenRequest for {namespace}/{name} returned no token")
            token: str = status.token
        with self._lock:
            return write_kubeconfig(
                self._next_kubeconfig_path(f"sa-{namespace}-{name}"),
                server=self.server,
                ca_pem=self._require_pki().serving_ca.cert_pem,
                user_name=f"system:serviceaccount:{namespace}:{name}",
                user={"token": token},
                namespace=namespace,
            )
