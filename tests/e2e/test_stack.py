"""The e2e stack itself: every server it started listens on loopback only."""

from __future__ import annotations

import os
from pathlib import Path

from tools.e2e import Stack


def _listening_inodes() -> dict[str, str]:
    """socket inode -> local address of every listening TCP socket (IPv4 and IPv6)."""
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                out[fields[9]] = fields[1].split(":")[0]
    return out


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def test_every_server_of_the_stack_listens_on_127_0_0_1_only(stack: Stack) -> None:
    listening = _listening_inodes()
    loopback = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1, ::1
    seen = {}
    for pid in stack.pids():
        for inode in _socket_inodes(pid) & set(listening):
            seen[(pid, inode)] = listening[inode]
    assert len({pid for pid, _ in seen}) == 3, (
        seen
    )  # fleetcontroller (metrics, --listen), gitea, fleet-webhook (webhooks, probes)
    assert set(seen.values()) <= loopback, seen
