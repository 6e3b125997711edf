"""Starting and stopping benchmark server processes (bench/server.py) and pinning them to CPUs."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bench.stats import REPO_ROOT, python, subprocess_env


def cpu_plan() -> tuple[set[int] | None, set[int] | None]:
    """(server CPUs, load generator CPUs): one core each when at least two are available, else no pinning."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None, None
    if len(cpus) < 2:
        return None, None
    return {cpus[0]}, {cpus[1]}


def pin(pid: int, cpus: set[int] | None) -> None:
    """Restrict a process to `cpus` (no-op when None or unsupported)."""
    if cpus:
        with contextlib.suppress(AttributeError, OSError):
            os.sched_setaffinity(pid, cpus)


@dataclass
class ServerProcess:
    """A running `python -m bench.server`."""

    kind: str
    proc: subprocess.Popen[bytes]
    port: int
    info: dict[str, Any]
    log_path: Path
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait (the profiler, if any, writes its report meanwhile), SIGKILL if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._log is not None:
            self._log.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

    def alive(self) -> bool:
        return self.proc.poll() is None


def start_server(
    kind: str, log_dir: Path, args: Sequence[str] = (), timeout: float = 120.0, cwd: Path | None = None
) -> ServerProcess:
    """Start a bench server and wait for its "listening" line.

    `cwd` (default: the repo root) comes first on the server's sys.path, so a folder holding another
    `controller/` package (say, a copy of an older commit) is what the server runs: an A/B check."""
    log_path = log_dir / f"server-{kind}-{time.monotonic_ns()}.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [python(), "-m", "bench.server", "--kind", kind, *args],
        cwd=cwd or REPO_ROOT,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=log,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            break
        if proc.poll() is not None:
            break
    if not line:
        proc.kill()
        proc.wait(5)
        log.close()
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"bench server {kind!r} did not start; its log ends with:\n{tail}")
    info = json.loads(line)
    return ServerProcess(kind, proc, int(info["port"]), info, log_path, log)
