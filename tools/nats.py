"""A real, throw-away nats-server with JetStream on loopback, for relay mode's tests (docs/relay.md).

Built by `make tools` (tools/build-nats.sh). The store lives in a folder the caller may keep, so a
test can stop the broker and start it again on the same store and port (a broker restart):

    with NatsServer(store_dir=tmp_path / "js") as broker:
        broker.url                     # nats://127.0.0.1:<port>
        broker.stop(); broker.start()  # same port, same store: what was acknowledged is still there

The process dies with the Python process that started it (tools.controlplane.spawn).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tools.controlplane import LOOPBACK, free_ports, spawn, terminate
from tools.fleet import built_tool

NATS_SERVER_VERSION = "v2.15.3"  # also in tools/build-nats.sh
MAX_PAYLOAD = 8 * 1024 * 1024  # the server's default is 1 MiB; webhook bodies go up to limits.maxBodyBytes


@dataclass(frozen=True)
class ServerTls:
    """The server's certificate and key, the CA its clients' certificates must chain to (`verify_clients`)."""

    cert_file: Path
    key_file: Path
    ca_file: Path
    verify_clients: bool = True


class NatsServerError(RuntimeError):
    """nats-server is missing, or did not start (the message carries its log)."""


def find_nats_server() -> Path:
    """The nats-server binary, or NatsServerError naming `make tools`."""
    return built_tool("nats-server", NATS_SERVER_VERSION, "nats-server", "build-nats.sh", NatsServerError)


class NatsServer:
    """nats-server -js on 127.0.0.1 with a config file of its own (store dir, max_payload)."""

    def __init__(
        self,
        *,
        store_dir: Path | None = None,
        binary: Path | None = None,
        tls: ServerTls | None = None,
        extra_config: str = "",
    ) -> None:
        self.binary = binary or find_nats_server()
        self.tls = tls
        self.extra_config = extra_config  # e.g. an `authorization { users: [...] }` block
        self._own_dir = store_dir is None
        self.home = Path(tempfile.mkdtemp(prefix="fleet-webhook-nats-")) if store_dir is None else store_dir
        self.home.mkdir(parents=True, exist_ok=True)
        (self.port,) = free_ports(1)
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.home, ignore_errors=True)

    @property
    def url(self) -> str:
        """The client URL."""
        return f"{'tls' if self.tls else 'nats'}://{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path:
        """The server's log file (appended to across restarts)."""
        return self.home / "nats-server.log"

    def _write_config(self) -> Path:
        config = self.home / "nats-server.conf"
        store = self.home / "store"
        text = (
            f'listen: "{LOOPBACK}:{self.port}"\nmax_payload: {MAX_PAYLOAD}\njetstream {{\n  store_dir: "{store}"\n}}\n'
        )
        if self.tls is not None:
            t = self.tls
            text += (
                f'tls {{\n  cert_file: "{t.cert_file}"\n  key_file: "{t.key_file}"\n'
                f'  ca_file: "{t.ca_file}"\n  verify: {"true" if t.verify_clients else "false"}\n}}\n'
            )
        config.write_text(text + self.extra_config)
        return config

    def start(self, timeout: float = 20.0) -> NatsServer:
        """Start (or start again, on the same port and store) and wait until it accepts connections."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        config = self._write_config()
        with self.log_path.open("ab") as log:
            self.proc = spawn([str(self.binary), "-c", str(config)], log)
        deadline = time.monotonic() + timeout
        while not self._accepts():
            if self.proc.poll() is not None:
                raise NatsServerError(f"nats-server exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise NatsServerError(f"nats-server did not listen within {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.05)
        return self

    def stop(self, grace: float = 5.0) -> None:
        """Stop the server (SIGTERM: it flushes the store); the store stays for a restart."""
        terminate(self.proc, grace)
        self.proc = None

    def _accepts(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=0.5) as sock:
                return sock.recv(4) == b"INFO"  # the server's greeting
        except OSError:
            return False

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
