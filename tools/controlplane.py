"""A real, throw-away Kubernetes control plane (etcd + kube-apiserver) for tests and `make cluster`.

The binaries come from `make tools` (tools/build-tools.sh); nothing is mocked. Everything listens on
127.0.0.1 only, lives in one temp dir and is torn down on exit (also on Ctrl-C or if Python dies).

    with ControlPlane() as cp:
        install_crds(cp.kubeconfig, [fleet_crds_file()])  # from tools.fleet
        api = kubernetes.config.new_client_from_config(str(cp.kubeconfig))

CLI (used by `make cluster`):

    python -m tools.controlplane [--crds DIR_OR_FILE ...]

starts the control plane, installs the CRDs, prints `export KUBECONFIG=<path>` and waits for Ctrl-C.

Binaries are looked up in, first match wins:
  1. $FLEET_WEBHOOK_TOOLS_BIN (must hold etcd and kube-apiserver),
  2. $KUBEBUILDER_ASSETS if it holds etcd and kube-apiserver (envtest convention),
  3. <repo>/.cache/tools/bin (or $FLEET_WEBHOOK_TOOLS_CACHE/bin), which `make tools` fills.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import concurrent.futures
import contextlib
import ctypes
import datetime as dt
import http.client
import ipaddress
import json
import os
import queue
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
BINARIES = ("etcd", "kube-apiserver")
MAKE_TOOLS_HINT = (
    "run `make tools` (tools/build-tools.sh) to build them, "
    "or point FLEET_WEBHOOK_TOOLS_BIN / KUBEBUILDER_ASSETS at a folder holding etcd and kube-apiserver"
)


class ToolsMissingError(RuntimeError):
    """etcd / kube-apiserver binaries were not found."""


class ControlPlaneError(RuntimeError):
    """A control-plane process failed to start or became unhealthy."""


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


# --------------------------------------------------------------------------------------------------
# PKI

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class CertKey:
    """A certificate and its private key (PEM helpers included)."""

    cert: x509.Certificate
    key: PrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def _new_ec_key() -> ec.EllipticCurvePrivateKey:
    # ECDSA P-256: generated in microseconds (RSA-2048 takes ~100 ms each on a slow core).
    return ec.generate_private_key(ec.SECP256R1())


def _validity(days: int) -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC)
    return now - dt.timedelta(hours=1), now + dt.timedelta(days=days)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """Digital signature for every certificate; certificate and CRL signing for CAs only."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def new_ca(common_name: str, *, days: int = 30) -> CertKey:
    key = _new_ec_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    not_before, not_after = _validity(days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertKey(cert, key)


def issue_cert(
    ca: CertKey,
    common_name: str,
    *,
    organizations: Sequence[str] = (),
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    server: bool = False,
    client: bool = False,
    days: int = 30,
) -> CertKey:
    """Issue a leaf certificate signed by `ca`. For client certs Kubernetes reads CN as the user name
    and each O as a group."""
    key = _new_ec_key()
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
        [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    )
    not_before, not_after = _validity(days)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return CertKey(builder.sign(ca.key, hashes.SHA256()), key)


@dataclass(frozen=True)
class Pki:
    """All key material of one control plane, plus the paths it was written to."""

    serving_ca: CertKey
    serving: CertKey
    client_ca: CertKey
    admin: CertKey
    sa_key: rsa.RSAPrivateKey
    ca_file: Path
    serving_cert_file: Path
    serving_key_file: Path
    client_ca_file: Path
    admin_cert_file: Path
    admin_key_file: Path
    sa_key_file: Path
    sa_pub_file: Path


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def generate_pki(directory: Path) -> Pki:
    """Create the CA, apiserver serving cert, client CA, admin client cert and SA signing key in
    `directory` (which must exist)."""
    serving_ca = new_ca("fleet-webhook-test-ca")
    serving = issue_cert(
        serving_ca,
        "kube-apiserver",
        dns_names=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
        ip_addresses=(LOOPBACK, "10.0.0.1"),
        server=True,
    )
    client_ca = new_ca("fleet-webhook-test-client-ca")
    admin = issue_cert(client_ca, "admin", organizations=("system:masters",), client=True)
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    paths = {
        "ca_file": directory / "ca.crt",
        "serving_cert_file": directory / "apiserver.crt",
        "serving_key_file": directory / "apiserver.key",
        "client_ca_file": directory / "client-ca.crt",
        "admin_cert_file": directory / "admin.crt",
        "admin_key_file": directory / "admin.key",
        "sa_key_file": directory / "sa-signer.key",
        "sa_pub_file": directory / "sa-signer.pub",
    }
    paths["ca_file"].write_bytes(serving_ca.cert_pem)
    paths["serving_cert_file"].write_bytes(serving.cert_pem)
    _write_private(paths["serving_key_file"], serving.key_pem)
    paths["client_ca_file"].write_bytes(client_ca.cert_pem)
    paths["admin_cert_file"].write_bytes(admin.cert_pem)
    _write_private(paths["admin_key_file"], admin.key_pem)
    _write_private(
        paths["sa_key_file"],
        sa_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    paths["sa_pub_file"].write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return Pki(serving_ca, serving, client_ca, admin, sa_key, **paths)


# --------------------------------------------------------------------------------------------------
# Kubeconfig


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def write_kubeconfig(
    path: Path, *, server: str, ca_pem: bytes, user_name: str, user: dict[str, str], namespace: str = ""
) -> Path:
    """Write a self-contained kubeconfig (everything embedded, mode 0600). JSON is valid YAML."""
    context: dict[str, str] = {"cluster": "fleet-webhook-test", "user": user_name}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "fleet-webhook-test",
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)},
            }
        ],
        "users": [{"name": user_name, "user": user}],
        "contexts": [{"name": user_name, "context": context}],
        "current-context": user_name,
    }
    _write_private(path, json.dumps(config, indent=2).encode())
    return path


# --------------------------------------------------------------------------------------------------
# Processes

_PR_SET_PDEATHSIG = 1
try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - non-glibc platforms
    _LIBC = None


def _child_preexec(parent_pid: int) -> Callable[[], None]:
    """Runs in the forked child before exec: die with SIGKILL when the spawning thread dies."""

    def preexec() -> None:
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


class _Spawner:
    """Forks children from one long-lived daemon thread.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process. Spawning
    from a worker thread (asyncio.to_thread, a thread pool) would kill the apiserver when that thread
    ends. A daemon thread lives until the process exits, which is exactly the lifetime we want.
    """

    _instance: _Spawner | None = None
    _instance_lock = threading.Lock()

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[concurrent.futures.Future[subprocess.Popen[bytes]], dict[str, Any]]]
        self._jobs = queue.Queue()
        threading.Thread(target=self._run, name="controlplane-spawner", daemon=True).start()

    @classmethod
    def get(cls) -> _Spawner:
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _run(self) -> None:
        while True:
            future, kwargs = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(subprocess.Popen(**kwargs))
            except BaseException as exc:
                future.set_exception(exc)

    def popen(
        self,
        args: Sequence[str],
        log: IO[bytes],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        future: concurrent.futures.Future[subprocess.Popen[bytes]] = concurrent.futures.Future()
        kwargs: dict[str, Any] = {
            "args": list(args),
            "env": env,
            "cwd": cwd,
            "stdin": subprocess.DEVNULL,
            "stdout": log,
            "stderr": subprocess.STDOUT,
            "close_fds": True,
            "start_new_session": True,  # own session and process group: terminal Ctrl-C doesn't reach it
            "preexec_fn": _child_preexec(os.getpid()),
        }
        self._jobs.put((future, kwargs))
        return future.result()


def _terminate(proc: subprocess.Popen[bytes] | None, grace: float) -> None:
    """SIGTERM the process group, SIGKILL after `grace` seconds, and reap."""
    if proc is None:
        return
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # Anything the leader left behind in its group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def spawn(
    args: Sequence[str], log: IO[bytes], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start a child in its own process group that is SIGKILLed if this process dies (any test tool
    server: the e2e suite's gitea and fleetcontroller too). Stop it with `terminate`."""
    return _Spawner.get().popen(args, log, env=env, cwd=cwd)


def terminate(proc: subprocess.Popen[bytes] | None, grace: float) -> None:
    """SIGTERM the process group, SIGKILL after `grace` seconds, and reap."""
    _terminate(proc, grace)


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback TCP ports that were free a moment ago."""
    return _free_ports(count)


def _free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


_TMP_PREFIX = "fleet-webhook-cp-"


def _remove_stale_tmpdirs(parent: Path | None) -> None:
    """Remove temp dirs left by a control plane whose Python process was SIGKILLed (its children die
    with it through PR_SET_PDEATHSIG, but nobody removes the folder)."""
    for folder in Path(parent or tempfile.gettempdir()).glob(_TMP_PREFIX + "*"):
        try:
            pid = int((folder / "owner.pid").read_text())
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (OSError, ValueError):
            continue  # no pid file yet, not ours to judge, or alive (PermissionError)


def new_api_client(kubeconfig: str | Path) -> ApiClient:
    """`kubernetes.config.new_client_from_config` for a kubeconfig file, typed. Close the client."""
    from kubernetes import config as kube_config

    api: ApiClient = kube_config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    return api


# --------------------------------------------------------------------------------------------------
# Control plane


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
            _remove_stale_tmpdirs(self._tmp_parent)
            self._tmpdir = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=self._tmp_parent))
            (self._tmpdir / "owner.pid").write_text(str(os.getpid()))
            if not self._atexit_registered:
                atexit.register(self.stop)
                self._atexit_registered = True
            try:
                (self._tmpdir / "pki").mkdir(mode=0o700)
                self._pki = generate_pki(self._tmpdir / "pki")
                self._etcd_port, self._etcd_peer_port, self._apiserver_port = _free_ports(3)
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
                        "client-certificate-data": _b64(self._pki.admin.cert_pem),
                        "client-key-data": _b64(self._pki.admin.key_pem),
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
                _terminate(self._apiserver, self.stop_grace)
                _terminate(self._etcd, self.stop_grace)
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
            self._etcd = _Spawner.get().popen(self._etcd_args(), log)
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
            _terminate(self._etcd, self.stop_grace if grace is None else grace)
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
            self._apiserver = _Spawner.get().popen(self._apiserver_args(), log)
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
            _terminate(self._apiserver, self.stop_grace)
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
                    f"{name} exited with code {code} during startup; last lines of {log_path}:\n" + _tail(log_path)
                )
            if probe():
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"{name} not ready after {self.start_timeout:.0f}s; last lines of {log_path}:\n" + _tail(log_path)
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
                    "client-certificate-data": _b64(cert.cert_pem),
                    "client-key-data": _b64(cert.key_pem),
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


# --------------------------------------------------------------------------------------------------
# CRDs


def _crd_files(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix in (".yaml", ".yml", ".json") and f.is_file())
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"CRD path {p} does not exist")
    return files


def load_crds(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Read CustomResourceDefinition documents from files and folders (*.yaml, *.yml, *.json)."""
    import yaml

    docs: list[dict[str, Any]] = []
    for path in _crd_files(paths):
        with path.open(encoding="utf-8") as f:
            for index, doc in enumerate(yaml.safe_load_all(f)):
                if doc is None:
                    continue
                if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
                    kind = doc.get("kind") if isinstance(doc, dict) else type(doc).__name__
                    raise ValueError(f"{path}: document {index} is {kind!r}, expected kind CustomResourceDefinition")
                docs.append(doc)
    return docs


def install_crds(kubeconfig: str | Path, paths: Iterable[str | Path], *, timeout: float = 30.0) -> list[str]:
    """Create (or replace) the CRDs found in `paths` with ApiextensionsV1Api and wait until each is
    Established. Returns the CRD names."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    docs = load_crds(paths)
    names: list[str] = []
    with new_api_client(kubeconfig) as api:
        ext = client.ApiextensionsV1Api(api)
        raw = client.CustomObjectsApi(api)
        crd_api = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        for doc in docs:
            name = doc["metadata"]["name"]
            names.append(name)
            # The typed model is used when it round-trips the document exactly; otherwise the raw JSON
            # goes through the generic endpoint so no schema field can be lost.
            model = client.V1CustomResourceDefinition.from_dict(doc)
            if model is not None and api.sanitize_for_serialization(model) != doc:
                model = None
            try:
                if model is not None:
                    ext.create_custom_resource_definition(model)
                else:
                    raw.create_cluster_custom_object(*crd_api, doc)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                current = ext.read_custom_resource_definition(name)
                assert current.metadata is not None
                body = json.loads(json.dumps(doc))
                body["metadata"]["resourceVersion"] = current.metadata.resource_version
                replacement = client.V1CustomResourceDefinition.from_dict(body) if model else None
                if replacement is not None:
                    ext.replace_custom_resource_definition(name, replacement)
                else:
                    raw.replace_cluster_custom_object(*crd_api, name, body)

        deadline = time.monotonic() + timeout
        pending = list(names)
        while pending:
            name = pending[0]
            status = ext.read_custom_resource_definition_status(name).status
            conditions = {c.type: c for c in (status.conditions or [])} if status else {}
            accepted = conditions.get("NamesAccepted")
            if accepted is not None and accepted.status == "False":
                raise ControlPlaneError(f"CRD {name}: names not accepted: {accepted.message}")
            established = conditions.get("Established")
            if established is not None and established.status == "True":
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"CRD {name} not Established after {timeout:.0f}s: "
                    + "; ".join(f"{t}={c.status} ({c.message})" for t, c in conditions.items())
                )
            time.sleep(0.05)
    return names


# --------------------------------------------------------------------------------------------------
# CLI


def _raise_exit(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.controlplane",
        description="Run a throw-away etcd + kube-apiserver on 127.0.0.1 until Ctrl-C.",
    )
    parser.add_argument(
        "--crds",
        action="append",
        default=[],
        metavar="DIR",
        help="CRD file or folder to install (repeatable); `make cluster` passes Fleet's (tools.fleet.fleet_crds_file)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="startup timeout in seconds")
    args = parser.parse_args(argv)

    # SIGINT may be inherited as ignored (e.g. `make cluster &`); make Ctrl-C / kill -INT always work.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_exit)
    signal.signal(signal.SIGHUP, _raise_exit)

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        with ControlPlane(start_timeout=args.timeout) as cp:
            phases = ", ".join(f"{k} {v:.2f}s" for k, v in cp.timings.items())
            say(f"control plane ready in {cp.startup_seconds:.2f}s ({phases}); server {cp.server}")
            say(f"logs: {cp.tmpdir}/etcd.log, {cp.tmpdir}/kube-apiserver.log")
            if args.crds:
                t = time.monotonic()
                names = install_crds(cp.kubeconfig, args.crds)
                say(f"installed CRDs {', '.join(names)} in {time.monotonic() - t:.2f}s")
            print(f"export KUBECONFIG={cp.kubeconfig}", flush=True)
            say("Ctrl-C to stop")
            while True:
                dead = [name for name, alive in cp.running().items() if not alive]
                if dead:
                    say(f"{', '.join(dead)} exited unexpectedly; logs in {cp.tmpdir}:")
                    for name in dead:
                        say(_tail(cp.tmpdir / f"{name}.log"))
                    return 1
                time.sleep(1)
    except KeyboardInterrupt:
        say("stopped")
        return 130
    except ToolsMissingError as exc:
        say(f"error: {exc}")
        return 2
    except ControlPlaneError as exc:
        say(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
