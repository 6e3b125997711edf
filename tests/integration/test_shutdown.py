"""SIGTERM to a real `fleet-webhook serve` process: stop accepting, finish what is in flight, exit 0.

A request is held in flight by sending its body in two parts around the signal.
"""

from __future__ import annotations

import json
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.integration.receiver_env import ReceiverEnv
from tests.live import build_request, read_response
from tests.support import delivery, secret_data, sha
from tools.served import Served, free_port, start_serve

SECRET = "shutdown-secret-6b2d"
URL = "https://github.com/example-org/draining"


def half_sent_delivery(port: int, commit: str) -> tuple[socket.socket, bytes]:
    """A signed push whose body is only partly sent: the handler waits in its body read."""
    d = delivery("github", https_url=URL, commit=commit, secret=SECRET)
    request = build_request(d.headers, d.body)
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    sock.sendall(request[:-100])
    return sock, request[-100:]


@pytest.fixture
def serve(control_plane: Any, namespace: str, tmp_path: Path) -> Iterator[Any]:
    started: list[Served] = []

    def start(grace: float, read_timeout: float = 10, probe_port: int | None = None) -> Served:
        config = f"watch:\n  namespaces: [{namespace}]\nlimits:\n  readTimeoutSeconds: {read_timeout}\n"
        served = start_serve(control_plane.kubeconfig, namespace, tmp_path, config, grace=grace, probe_port=probe_port)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()


def prepare(kube_api: client.ApiClient, control_plane: Any, namespace: str) -> ReceiverEnv:
    env = ReceiverEnv(kube_api, control_plane.kubeconfig, namespace)
    env.create_secret("gitjob-webhook", secret_data("github", SECRET))
    env.create_gitrepo("draining", URL)
    return env


def test_sigterm_finishes_the_in_flight_delivery_and_exits_0(
    serve: Any, kube_api: client.ApiClient, control_plane: Any, namespace: str
) -> None:
    env = prepare(kube_api, control_plane, namespace)
    served = serve(grace=10)
    commit = sha("in-flight")
    sock, rest = half_sent_delivery(served.port, commit)
    time.sleep(0.3)

    signalled = time.monotonic()
    served.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 3
    while served.accepts():  # the listener closes promptly
        assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
        time.sleep(0.05)
    assert served.proc.poll() is None, "exited before the in-flight delivery finished"

    time.sleep(0.5)
    sock.sendall(rest)
    answer = read_response(sock, time.monotonic())
    sock.close()
    assert answer.status == 200, answer.body
    assert [u["name"] for u in json.loads(answer.body)["updated"]] == ["draining"]
    assert served.proc.wait(10) == 0
    took = time.monotonic() - signalled
    assert took < 10, f"shutdown took {took:.1f}s"
    assert env.webhook_commit("draining") == commit
    messages = [line.get("msg") for line in served.log_lines()]
    assert "shutting down: finishing in-flight deliveries" in messages
    assert messages[-1] == "stopped"


def test_sigterm_does_not_wait_past_the_grace_period(
    serve: Any, kube_api: client.ApiClient, control_plane: Any, namespace: str
) -> None:
    env = prepare(kube_api, control_plane, namespace)
    served = serve(grace=1, read_timeout=60)
    sock, _rest = half_sent_delivery(served.port, sha("never-finished"))  # the client stalls for good
    time.sleep(0.3)
    signalled = time.monotonic()
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(10) == 0
    took = time.monotonic() - signalled
    sock.close()
    assert took < 1 + 3, f"shutdown took {took:.1f}s with a 1s grace"
    assert env.webhook_commit("draining") is None


def test_probe_port_keeps_probes_and_metrics_off_the_webhook_port(serve: Any) -> None:
    probe_port = free_port()
    served = serve(grace=2, probe_port=probe_port)  # ready() polled /readyz on the probe port
    for path in ("/metrics", "/readyz", "/healthz"):
        with urllib.request.urlopen(f"http://127.0.0.1:{probe_port}{path}", timeout=5) as resp:
            assert resp.status == 200, path
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{served.port}{path}", timeout=5)
        assert refused.value.code in (404, 405), path  # not served there: a GET on a webhook route is 405
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(30) == 0
