"""`make run`'s script, headless: the printed curl delivers a signed push and the GitRepo changes."""

from __future__ import annotations

import json
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def send_curl(command: str) -> tuple[int, dict[str, Any]]:
    """Execute a printed `curl -H ... --data-binary @file URL` with urllib (no curl needed)."""
    args = shlex.split(command)
    assert args[0] == "curl"
    headers: dict[str, str] = {}
    url, data = "", b""
    i = 1
    while i < len(args):
        if args[i] == "-H":
            name, _, value = args[i + 1].partition(":")
            headers[name.strip()] = value.strip()
            i += 2
        elif args[i] == "--data-binary":
            data = Path(args[i + 1].removeprefix("@")).read_bytes()
            i += 2
        elif args[i].startswith("http"):
            url = args[i]
            i += 1
        else:
            i += 1
    req = urllib.request.Request(url, data=data, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, json.loads(resp.read())


def test_make_run_demo_headless() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.demo", "--port", str(port), "--headless"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if line.strip() == "DEMO READY":
                break
        assert lines[-1:] == ["DEMO READY"], "\n".join(lines)
        printed = {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in lines if ": " in line}
        status, body = send_curl(printed["CURL"])
        assert status == 200
        updated = {u["name"] for u in body["updated"]}
        assert updated == {"apps-main", "apps-ssh"}
        api = shlex.split(printed["API"])
        out = subprocess.run(api, capture_output=True, text=True, timeout=10, check=True).stdout
        gitrepo = json.loads(out)
        commit = Path(shlex.split(printed["CURL"])[-1].removeprefix("@")).read_text()
        assert gitrepo["status"]["webhookCommit"] == json.loads(commit)["after"]
        assert gitrepo["spec"]["pollingInterval"] == "1h"
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert "stopped: fleet-webhook, kube-apiserver and etcd are gone" in rest
    kubeconfig_line = next(line for line in lines if line.startswith("export KUBECONFIG="))
    workdir = str(Path(kubeconfig_line.split("=", 1)[1]).parent)
    leftovers = subprocess.run(["pgrep", "-f", workdir], capture_output=True, text=True).stdout.strip()
    assert leftovers == "", f"processes left behind: {leftovers}"
    assert not Path(workdir).exists()
