"""Real `fleet-webhook serve` processes on loopback, for tests that need the whole program (signals, RSS, replicas).

`start_serve` writes the config, starts the console script against the test control plane and waits
for `/readyz`; `start_replicas` starts several at once; `Served.post` sends a delivery, `Served.metric`
reads one sample, `Served.stop` kills one if it is still running.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

FLEET_WEBHOOK = Path(sys.executable).parent / "fleet-webhook"


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Sendable(Protocol):
    """What `Served.post` sends: a signed delivery (tests.support.Delivery)."""

    @property
    def body(self) -> bytes: ...

    @property
    def headers(self) -> Mapping[str, str]: ...


class Served:
    """One `fleet-webhook serve` process and its log."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path, probe_port: int | None = None) -> None:
        self.proc, self.port, self.log = proc, port, log
        self.probe_port = probe_port or port

    def ready(self) -> bool:
        """Whether /readyz answers 200."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.probe_port}/readyz", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def accepts(self) -> bool:
        """Whether the webhook port accepts connections."""
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def rss_bytes(self) -> int:
        """Resident memory of the process and its children (the parse worker), from /proc."""
        total = 0
        for pid in [self.proc.pid, *_children(self.proc.pid)]:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                continue
        return total

    def log_lines(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far."""
        lines = []
        for raw in self.log.read_text(errors="replace").splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                lines.append({"msg": raw})
        return lines

    def post(self, delivery: Sendable, timeout: float = 30) -> tuple[int, dict[str, Any]]:
        """POST one delivery to the webhook port on a fresh connection; (status, JSON answer)."""
        url = f"http://127.0.0.1:{self.port}/"
        request = urllib.request.Request(url, data=delivery.body, headers=dict(delivery.headers), method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def metric(self, name: str) -> float | None:
        """One sample (`name` with its labels, as exposed) from the process's /metrics; None if absent."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.probe_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        return float(found.group(1)) if found else None

    def stop(self) -> None:
        """Kill the process if it is still running."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def launch_serve(
    kubeconfig: Path,
    namespace: str,
    folder: Path,
    config: str,
    *,
    grace: float = 10.0,
    probe_port: int | None = None,
    extra_args: tuple[str, ...] = (),
) -> Served:
    """Start `fleet-webhook serve` with `config` without waiting for it (see `wait_ready`)."""
    # In a folder of its own: the reloader watches the config's folder, and the log written next to
    # it would otherwise look like a config change every time a line is written.
    port = free_port()
    config_file = folder / f"config-{port}" / "config.yaml"
    config_file.parent.mkdir(parents=True)
    config_file.write_text(config)
    log = folder / f"serve-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(FLEET_WEBHOOK),
                "serve",
                f"--kubeconfig={kubeconfig}",
                "--host=127.0.0.1",
                f"--port={port}",
                f"--namespace={namespace}",
                f"--config={config_file}",
                f"--shutdown-grace-seconds={grace}",
                "--log-format=json",
                *([f"--probe-port={probe_port}"] if probe_port else []),
                *extra_args,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Served(proc, port, log, probe_port)


def wait_ready(served: Served, within: float = 30.0) -> Served:
    """Wait until `served` answers /readyz with 200; kill it and fail the test when it never does."""
    deadline = time.monotonic() + within
    while not served.ready():
        if served.proc.poll() is not None:
            raise AssertionError(f"serve exited with {served.proc.returncode}:\n{served.log.read_text()}")
        if time.monotonic() > deadline:
            served.stop()
            raise AssertionError(f"serve never became ready:\n{served.log.read_text()}")
        time.sleep(0.1)
    return served


def start_serve(
    kubeconfig: Path,
    namespace: str,
    folder: Path,
    config: str,
    *,
    grace: float = 10.0,
    probe_port: int | None = None,
    extra_args: tuple[str, ...] = (),
) -> Served:
    """Start `fleet-webhook serve` with `config` and wait until it is ready (30 s at most)."""
    served = launch_serve(
        kubeconfig, namespace, folder, config, grace=grace, probe_port=probe_port, extra_args=extra_args
    )
    return wait_ready(served)


def start_replicas(
    count: int,
    kubeconfig: Path,
    namespace: str,
    folder: Path,
    config: str,
    *,
    grace: float = 10.0,
    extra_args: tuple[str, ...] = (),
) -> list[Served]:
    """`count` processes of the same config, as replicas of one Deployment: started together, all ready.

    Each gets its own webhook port; a test spreads deliveries over them the way a Service would.
    """
    started = [
        launch_serve(kubeconfig, namespace, folder, config, grace=grace, extra_args=extra_args) for _ in range(count)
    ]
    try:
        for served in started:
            wait_ready(served, within=60.0)  # several start at once on a loaded machine
    except AssertionError:
        for served in started:
            served.stop()
        raise
    return started
