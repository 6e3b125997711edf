"""Child processes that die with their parent, loopback ports, and typed API clients."""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import os
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

# --------------------------------------------------------------------------------------------------
# Processes

LOOPBACK = "127.0.0.1"  # every server the tools start binds here, never all interfaces

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


class Spawner:
    """Forks children from one long-lived daemon thread.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process. Spawning
    from a worker thread (asyncio.to_thread, a thread pool) would kill the apiserver when that thread
    ends. A daemon thread lives until the process exits, which is exactly the lifetime we want.
    """

    _instance: Spawner | None = None
    _instance_lock = threading.Lock()

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[concurrent.futures.Future[subprocess.Popen[bytes]], dict[str, Any]]]
        self._jobs = queue.Queue()
        threading.Thread(target=self._run, name="controlplane-spawner", daemon=True).start()

    @classmethod
    def get(cls) -> Spawner:
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


def terminate(proc: subprocess.Popen[bytes] | None, grace: float) -> None:
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
    return Spawner.get().popen(args, log, env=env, cwd=cwd)


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback TCP ports that were free a moment ago."""
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


def tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log file, or "(no log)"."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


TMP_PREFIX = "fleet-webhook-cp-"


def remove_stale_tmpdirs(parent: Path | None) -> None:
    """Remove temp dirs left by a control plane whose Python process was SIGKILLed (its children die
    with it through PR_SET_PDEATHSIG, but nobody removes the folder)."""
    for folder in Path(parent or tempfile.gettempdir()).glob(TMP_PREFIX + "*"):
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

    api: ApiClient = kube_config.new_client_from_config(config_file=str(kubeconfig))
    return api
