"""The built image, run the way the chart's Deployment runs it (tests/image/support.py: `PodRun`).

* The image's own user is the chart's runAsUser, and its root filesystem really is read-only.
* `check-config` on mounted good and bad files: exit 0, or 1 with `file:line: path: message`.
* `serve` as PID 1 against the project's real kube-apiserver, with the chart's own ServiceAccount and RBAC
  (installed by `helm install`; the kubeconfig carries a token of that ServiceAccount): a signed GitHub
  push updates a GitRepo, the probe port answers the chart's probe paths and /metrics counts the write.
* SIGTERM (what the kubelet sends): /readyz fails, the listener closes after the chart's shutdown delay,
  the delivery in flight is still answered and written, and the process exits 0.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes import client

from controller.kube import GROUP, PLURAL, VERSION
from tests.chart.support import CHART, Helm, create_namespace, one, present, unique
from tests.image.conftest import Built
from tests.image.support import (
    PodRun,
    exit_code,
    free_port,
    own_by_fs_group,
    pid_in_its_namespace,
    podman,
    run_to_completion,
)
from tests.integration.receiver_env import gitrepo_body
from tests.live import build_request, read_response
from tests.support import delivery, sha
from tools import image
from tools.controlplane import ControlPlane, write_kubeconfig

SECRET = "image-test-secret-3f9a"
REPO_URL = "https://github.com/example-org/{}"  # one repository per test: the chart watches every namespace
KUBECONFIG_IN_CONTAINER = "/var/run/fleet-webhook/kubeconfig"
FULL_VALUES = CHART / "ci" / "full-values.yaml"


def rendered(helm: Helm, *, values: tuple[Path, ...] = (), sets: tuple[str, ...] = (), **kw: str) -> dict[str, Any]:
    """The chart's pod spec and its ConfigMaps (name -> data), from `helm template`."""
    manifests = helm.template(values=values, sets=sets, **kw)
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    configmaps = {m["metadata"]["name"]: m["data"] for m in manifests if m["kind"] == "ConfigMap"}
    return {"pod": pod, "configmaps": configmaps}


def env_value(pod: dict[str, Any], name: str) -> str:
    """One literal env value of the chart's container."""
    (container,) = pod["containers"]
    (value,) = [e["value"] for e in container["env"] if e["name"] == name]
    return str(value)


def test_the_images_user_is_the_charts_and_its_root_is_read_only(built: Built, helm: Helm) -> None:
    pod = rendered(helm)["pod"]
    security = {**pod["securityContext"], **pod["containers"][0]["securityContext"]}
    assert security["readOnlyRootFilesystem"] is True
    probe = (
        "import os\n"
        "print(os.getuid(), os.getgid())\n"
        "for path in ('/probe', '/opt/fleet-webhook/probe', '/etc/probe', '/tmp/probe'):\n"
        "    try:\n"
        "        open(path, 'w').close()\n"
        "    except OSError as exc:\n"
        "        print(path, exc.strerror)\n"
        "    else:\n"
        "        print(path, 'written')\n"
    )
    # No --user: the image's own USER; no /tmp volume: the root filesystem alone.
    proc = podman(
        "run", "--rm", "--pull=never", "--network=none", "--read-only", "--read-only-tmpfs=false",
        "--entrypoint=/opt/fleet-webhook/bin/python", built.ref, "-c", probe,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"{security['runAsUser']} {security['runAsGroup']}"
    assert all(line.endswith("Read-only file system") for line in lines[1:]), lines


def check_config(built: Built, tmp_path: Path, helm: Helm, text: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """`check-config <the chart's config path>` in the chart's container, the file being `text`."""
    spec = rendered(helm, values=(FULL_VALUES,))
    pod = spec["pod"]
    path = env_value(pod, "FLEET_WEBHOOK_CONFIG")
    (volume,) = [v for v in pod["volumes"] if "configMap" in v]
    configmaps = {volume["configMap"]["name"]: {Path(path).name: text}}
    secrets: dict[str, dict[str, str]] = {
        v["secret"]["secretName"]: {} for v in pod["volumes"] if "secret" in v
    }  # not read by check-config
    run = PodRun(pod, "cattle-fleet-system", configmaps, tmp_path, network="none", secrets=secrets)
    name = unique("check")
    return run_to_completion(run.args(name, built.ref, command=["check-config", path]), name), path


def test_check_config_accepts_the_charts_rendered_config(built: Built, tmp_path: Path, helm: Helm) -> None:
    spec = rendered(helm, values=(FULL_VALUES,))
    (text,) = [data["config.yaml"] for data in spec["configmaps"].values()]
    assert "routes" in text  # the full scenario: a config with every part set
    proc, path = check_config(built, tmp_path, helm, text)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{path}: ok: ")


def test_check_config_rejects_a_bad_file_with_file_and_line(built: Built, tmp_path: Path, helm: Helm) -> None:
    proc, path = check_config(built, tmp_path, helm, "polling:\n  webhookInterval: soon\nroutes: []\n")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    err = proc.stderr.splitlines()
    assert f"{path}:2: $.polling.webhookInterval: " in err[0]
    assert f"{path}:3: $.routes: " in err[1]


# --------------------------------------------------------------------------------------------------
# serve


@dataclass
class Served:
    """A running `podman run ... serve` and where its ports ended up."""

    proc: subprocess.Popen[bytes]
    name: str
    http_port: int
    probe_port: int
    pod: dict[str, Any]
    log: Path
    release_namespace: str
    custom: client.CustomObjectsApi
    url: str

    def probe(self, kind: str) -> int:
        """GET the chart's liveness or readiness probe path on the probe port; the status code."""
        (container,) = self.pod["containers"]
        get = container[f"{kind}Probe"]["httpGet"]
        port = {"probes": self.probe_port, "http": self.http_port}[get["port"]]
        return status(f"http://127.0.0.1:{port}{get['path']}")

    def accepts(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.http_port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def webhook_commit(self, name: str) -> str | None:
        # The client declares custom objects as `object`; they are the decoded JSON mapping.
        obj = cast(
            dict[str, Any],
            self.custom.get_namespaced_custom_object(GROUP, VERSION, self.release_namespace, PLURAL, name),
        )
        value = obj.get("status", {}).get("webhookCommit")
        return value if isinstance(value, str) else None

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:  # loopback only
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def service_account_kubeconfig(
    kube_api: client.ApiClient, cp: ControlPlane, namespace: str, account: str, path: Path
) -> Path:
    """A kubeconfig with a token of the chart's ServiceAccount: the pod's identity, the chart's RBAC."""
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600))
    token = client.CoreV1Api(kube_api).create_namespaced_service_account_token(account, namespace, request)
    write_kubeconfig(
        path,
        server=cp.server,
        ca_pem=cp.ca_file.read_bytes(),
        user_name=account,
        user={"token": present(present(token.status).token)},
    )
    return path


@pytest.fixture
def serve(
    built: Built, helm: Helm, control_plane: ControlPlane, kube_api: client.ApiClient, tmp_path: Path
) -> Iterator[Served]:
    """helm install (ServiceAccount, RBAC, ConfigMap, webhook Secret), a GitRepo, then the container."""
    namespace = create_namespace(kube_api, unique("img"))
    release = unique("fw")
    sets = ("webhookSecret.create=true", f"webhookSecret.data.github={SECRET}")
    install = ["install", release, str(CHART), "--namespace", namespace]
    for item in sets:
        install += ["--set", item]
    helm.run(*install, kubeconfig=control_plane.kubeconfig)
    spec = rendered(helm, sets=sets, release=release, namespace=namespace)
    pod = spec["pod"]
    custom = client.CustomObjectsApi(kube_api)
    url = REPO_URL.format(namespace)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, gitrepo_body("in-the-image", url))

    # What the kubelet would mount: the ConfigMap as the API server stores it, the identity of the pod.
    core = client.CoreV1Api(kube_api)
    configmaps = {name: present(core.read_namespaced_config_map(name, namespace).data) for name in spec["configmaps"]}
    assert configmaps == spec["configmaps"]
    kubeconfig = service_account_kubeconfig(
        kube_api, control_plane, namespace, pod["serviceAccountName"], tmp_path / "kubeconfig"
    )
    own_by_fs_group(kubeconfig, pod["securityContext"].get("fsGroup"))

    # The chart's ports, each mapped to a free loopback port (host networking shares the host's ports).
    ports = PodRun(pod, namespace, configmaps, tmp_path).ports()
    assert int(env_value(pod, "FLEET_WEBHOOK_PORT")) == ports["http"]
    assert int(env_value(pod, "FLEET_WEBHOOK_PROBE_PORT")) == ports["probes"]
    http_port, probe_port = free_port(), free_port()
    run = PodRun(
        pod,
        namespace,
        configmaps,
        tmp_path,
        network="host",
        extra_env={
            "FLEET_WEBHOOK_HOST": "127.0.0.1",
            "FLEET_WEBHOOK_PORT": str(http_port),
            "FLEET_WEBHOOK_PROBE_PORT": str(probe_port),
            "FLEET_WEBHOOK_KUBECONFIG": KUBECONFIG_IN_CONTAINER,
        },
        extra_mounts=[f"--volume={kubeconfig}:{KUBECONFIG_IN_CONTAINER}:ro"],
    )
    name = unique("fleet-webhook")
    log = tmp_path / "container.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["podman", *run.args(name, built.ref)], stdout=out, stderr=subprocess.STDOUT, env=image.engine_env()
        )
    served = Served(proc, name, http_port, probe_port, pod, log, namespace, custom, url)
    try:
        deadline = time.monotonic() + 60
        while served.probe("readiness") != 200:
            assert proc.poll() is None, f"the container exited {proc.returncode}:\n{served.output()}"
            assert time.monotonic() < deadline, f"never ready:\n{served.output()}"
            time.sleep(0.2)
        yield served
    finally:
        if proc.poll() is None:
            podman("kill", name)
            proc.wait(30)
        podman("rm", "--force", "--ignore", name)


def test_serve_as_pid_1_updates_a_gitrepo_and_answers_probes_and_metrics(serve: Served) -> None:
    host_pid = int(podman("inspect", "--format={{.State.Pid}}", serve.name, check=True).stdout)
    assert pid_in_its_namespace(host_pid) == 1
    assert Path(f"/proc/{host_pid}/cmdline").read_bytes().split(b"\0")[1:3] == [
        b"/opt/fleet-webhook/bin/fleet-webhook",
        b"serve",
    ]
    uids = [line for line in Path(f"/proc/{host_pid}/status").read_text().splitlines() if line.startswith("Uid:")]
    assert uids[0].split()[1:] == [str(serve.pod["securityContext"]["runAsUser"])] * 4
    assert serve.probe("liveness") == 200

    commit = sha("pushed-to-the-image")
    d = delivery("github", https_url=serve.url, commit=commit, secret=SECRET)
    req = urllib.request.Request(f"http://127.0.0.1:{serve.http_port}/", data=d.body, headers=d.headers)
    with urllib.request.urlopen(req, timeout=10) as resp:  # loopback only
        answer = json.loads(resp.read())
    assert [u["name"] for u in answer["updated"]] == ["in-the-image"]
    assert serve.webhook_commit("in-the-image") == commit

    with urllib.request.urlopen(f"http://127.0.0.1:{serve.probe_port}/metrics", timeout=3) as resp:
        metrics = resp.read().decode()
    assert 'fleet_webhook_gitrepos_updated_total{provider="github"} 1.0' in metrics
    assert "fleet_webhook_index_synced 1.0" in metrics
    assert status(f"http://127.0.0.1:{serve.http_port}/metrics") in (404, 405)  # probes stay off the webhook port
    lines = [json.loads(line) for line in serve.output().splitlines() if line.startswith("{")]
    assert lines, serve.output()  # the chart's logFormat: json


def test_sigterm_finishes_the_in_flight_delivery_and_exits_0(serve: Served) -> None:
    delay = float(env_value(serve.pod, "FLEET_WEBHOOK_SHUTDOWN_DELAY_SECONDS"))
    grace = float(env_value(serve.pod, "FLEET_WEBHOOK_SHUTDOWN_GRACE_SECONDS"))
    assert serve.pod["terminationGracePeriodSeconds"] > delay + grace
    commit = sha("in-flight-in-the-image")
    d = delivery("github", https_url=serve.url, commit=commit, secret=SECRET)
    request = build_request(d.headers, d.body)
    sock = socket.create_connection(("127.0.0.1", serve.http_port), timeout=delay + grace + 10)
    sock.sendall(request[:-100])  # the handler now waits for the rest of the body
    time.sleep(0.3)

    signalled = time.monotonic()
    podman("kill", "--signal=TERM", serve.name, check=True)
    deadline = signalled + 3
    while serve.probe("readiness") != 503:  # endpoints drop the pod first
        assert time.monotonic() < deadline, "/readyz still passing after SIGTERM"
        time.sleep(0.05)
    while serve.accepts():  # then, after the chart's delay, the listener closes
        assert time.monotonic() < signalled + delay + 3, "still accepting connections after the shutdown delay"
        time.sleep(0.1)
    assert time.monotonic() - signalled >= delay * 0.9
    assert serve.proc.poll() is None, "exited before the in-flight delivery finished"

    sock.sendall(request[-100:])
    answer = read_response(sock, time.monotonic())
    sock.close()
    assert answer.status == 200, answer.body
    assert [u["name"] for u in json.loads(answer.body)["updated"]] == ["in-the-image"]
    serve.proc.wait(grace + 10)
    assert exit_code(serve.name) == 0, serve.output()
    assert serve.webhook_commit("in-the-image") == commit
