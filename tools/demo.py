"""`make run`: a local demo of fleet-webhook against a real kube-apiserver + etcd.

Starts the control plane, installs the GitRepo CRD, creates sample GitRepos and the
`gitjob-webhook` Secret with a demo GitHub secret, runs `fleet-webhook serve` with
config/example.yaml, then prints a `curl` that delivers a correctly signed GitHub push and the
commands that show `status.webhookCommit` change. Ctrl-C stops everything.

    python -m tools.demo [--port 8080] [--headless]

`--headless` (used by the test of this script) prints the same lines and a final `DEMO READY`
marker, and waits for SIGINT/SIGTERM like the interactive run.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from kubernetes import client

from tools.controlplane import ControlPlane, install_crds, new_api_client
from tools.fleet import fleet_crds_file

ROOT = Path(__file__).resolve().parents[1]
DEMO_SECRET = "demo-webhook-secret"  # a demo value, printed on purpose
NAMESPACE = "cattle-fleet-system"
REPO = "https://github.com/example-org/fleet-apps"
SAMPLES = [
    ("fleet-default", "apps-main", {"repo": REPO, "branch": "main"}),
    ("fleet-default", "apps-ssh", {"repo": "git@github.com:example-org/fleet-apps.git", "branch": "main"}),
    ("fleet-default", "apps-dev", {"repo": REPO, "branch": "dev"}),
    ("fleet-local", "other-repo", {"repo": "https://github.com/example-org/other", "branch": "main"}),
]


def say(line: str = "") -> None:
    print(line, flush=True)


def seed_cluster(cp: ControlPlane) -> None:
    """Namespaces, the webhook Secret and the sample GitRepos."""
    with new_api_client(cp.kubeconfig) as api:
        core = client.CoreV1Api(api)
        custom = client.CustomObjectsApi(api)
        for ns in (NAMESPACE, "fleet-default", "fleet-local"):
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        core.create_namespaced_secret(
            NAMESPACE,
            client.V1Secret(
                metadata=client.V1ObjectMeta(name="gitjob-webhook"),
                data={"github": base64.b64encode(DEMO_SECRET.encode()).decode()},
            ),
        )
        for ns, name, spec in SAMPLES:
            body = {
                "apiVersion": "fleet.cattle.io/v1alpha1",
                "kind": "GitRepo",
                "metadata": {"name": name},
                "spec": spec,
            }
            custom.create_namespaced_custom_object("fleet.cattle.io", "v1alpha1", ns, "gitrepos", body)


def write_payload(workdir: Path) -> tuple[Path, str, str]:
    """A GitHub push to main of the demo repo, and its signature."""
    payload: dict[str, Any] = json.loads((ROOT / "tests/fixtures/payloads/github/push.json").read_text())
    commit = hashlib.sha1(str(time.time()).encode(), usedforsecurity=False).hexdigest()
    payload["after"] = commit
    path = workdir / "github-push.json"
    raw = json.dumps(payload).encode()
    path.write_bytes(raw)
    signature = "sha256=" + hmac.new(DEMO_SECRET.encode(), raw, hashlib.sha256).hexdigest()
    return path, signature, commit


def wait_ready(port: int, proc: subprocess.Popen[bytes], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"fleet-webhook exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("fleet-webhook did not become ready")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEMO_PORT", "8080")))
    parser.add_argument("--headless", action="store_true", help="no interactive prompt (tests)")
    args = parser.parse_args(argv)

    stop = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    say("starting a local kube-apiserver + etcd ...")
    with ControlPlane() as cp:
        install_crds(cp.kubeconfig, [fleet_crds_file()])  # Fleet v0.16.1's own CRDs
        seed_cluster(cp)
        log_path = cp.tmpdir / "fleet-webhook.log"
        env = {**os.environ, "FLEET_WEBHOOK_LOG_FORMAT": "text"}
        serve = [
            sys.executable,
            "-m",
            "controller.cli",
            "serve",
            "--config",
            str(ROOT / "config/example.yaml"),
            "--kubeconfig",
            str(cp.kubeconfig),
            "--namespace",
            NAMESPACE,
            "--host",
            "127.0.0.1",
            "--port",
            str(args.port),
        ]
        with log_path.open("wb") as log:
            proc = subprocess.Popen(serve, stdout=log, stderr=subprocess.STDOUT, env=env)
            try:
                wait_ready(args.port, proc)
                payload, signature, commit = write_payload(cp.tmpdir)
                curl = shlex.join(
                    [
                        "curl",
                        "-sS",
                        f"http://127.0.0.1:{args.port}/",
                        "-H",
                        "Content-Type: application/json",
                        "-H",
                        "X-GitHub-Event: push",
                        "-H",
                        "X-GitHub-Delivery: demo-1",
                        "-H",
                        f"X-Hub-Signature-256: {signature}",
                        "--data-binary",
                        f"@{payload}",
                    ]
                )
                kubectl = (
                    f"KUBECONFIG={cp.kubeconfig} kubectl get gitrepos -A "
                    "-o custom-columns=NS:.metadata.namespace,NAME:.metadata.name,"
                    "BRANCH:.spec.branch,WEBHOOK_COMMIT:.status.webhookCommit,POLLING:.spec.pollingInterval"
                )
                pki = cp.pki
                api_curl = shlex.join(
                    [
                        "curl",
                        "-sS",
                        "--cacert",
                        str(cp.ca_file),
                        "--cert",
                        str(pki.admin_cert_file),
                        "--key",
                        str(pki.admin_key_file),
                        f"{cp.server}/apis/fleet.cattle.io/v1alpha1/namespaces/fleet-default/gitrepos/apps-main",
                    ]
                )
                say()
                say(f"fleet-webhook is serving on http://127.0.0.1:{args.port} (log: {log_path})")
                say(f"sample GitRepos: {', '.join(f'{ns}/{name}' for ns, name, _ in SAMPLES)}")
                say(f"export KUBECONFIG={cp.kubeconfig}")
                say()
                say(f"1. deliver a signed GitHub push of {REPO} (main -> {commit[:12]}):")
                say(f"CURL: {curl}")
                say()
                say("2. see status.webhookCommit change (apps-main and apps-ssh; apps-dev tracks another branch):")
                say(f"KUBECTL: {kubectl}")
                say(f"API: {api_curl}")
                say()
                say("3. ask why a GitRepo was or was not updated:")
                explain = shlex.join(
                    [
                        "fleet-webhook",
                        "explain",
                        "--provider",
                        "github",
                        "--payload",
                        str(payload),
                        "--kubeconfig",
                        str(cp.kubeconfig),
                    ]
                )
                say(f"EXPLAIN: {explain}")
                say()
                say("Ctrl-C stops everything." if not args.headless else "DEMO READY")
                while not stop and proc.poll() is None:
                    time.sleep(0.2)
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout=25)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
    say("stopped: fleet-webhook, kube-apiserver and etcd are gone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
