"""The whole chain on loopback, for the e2e suite (tests/e2e) and the headline benchmark (bench/headline.py):

    git push -> Gitea -> webhook -> fleet-webhook serve -> status.webhookCommit -> Fleet's gitjob
    controller -> ls-remote against Gitea -> a batch/v1 Job with annotation `commit`

`Stack(kubeconfig)` takes a running control plane (tools/controlplane/), installs what Fleet needs
(tools/fleet.py), and starts `fleetcontroller gitjob`, Gitea (tools/gitea.py) and
`fleet-webhook serve` (`WebhookServer`), all bound to 127.0.0.1. `stop()` ends them and removes
their folders.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tools.controlplane import LOOPBACK, free_ports, new_api_client
from tools.fleet import FLEET_NAMESPACE, FleetController, install_fleet_prerequisites, list_jobs
from tools.gitea import Gitea

REPO_ROOT = Path(__file__).resolve().parent.parent
WEBHOOK_SECRET = "e2e-hook-secret-4f1c9a"  # a test value; Gitea signs with it, both receivers check it
SECRET_KEYS = ("github", "gitlab", "gitea", "gogs")  # gitjob-webhook keys (Fleet's receiver reads gogs)
GROUP, VERSION, PLURAL = "fleet.cattle.io", "v1alpha1", "gitrepos"
TMP_PREFIX = "fleet-webhook-e2e-"

# The suite only fast-forwards the Gitea's branches, so it says so (`refusesForcePush`): the paths rule
# may then trust Gitea's file lists (tests/e2e/test_monorepo.py), as an operator with branch protection would.
DEFAULT_CONFIG = "watch:\n  namespaces: []\nproviders:\n  gitea: {refusesForcePush: true}\n"


class WebhookServer:
    """`fleet-webhook serve` as a user runs it (python -m controller.cli serve), on loopback.

    The port stays the same across `restart()`, so a Gitea hook keeps pointing at it."""

    def __init__(
        self,
        kubeconfig: Path,
        workdir: Path,
        config_text: str = "",
        *,
        name: str = "fleet-webhook",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.kubeconfig = kubeconfig
        self.name = name
        self.extra_args = extra_args  # e.g. a relay role (--relay-publish / --relay-consume)
        self.workdir = workdir / name  # its own folder: serve watches the config's folder
        self.workdir.mkdir()
        self.config = self.workdir / "config.yaml"
        self.config.write_text(config_text or DEFAULT_CONFIG)
        self.port, self.probe_port = free_ports(2)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/"

    @property
    def log_path(self) -> Path:
        return self.workdir.parent / f"{self.name}.log"

    def start(self, timeout: float = 30.0) -> None:
        """Start and wait for /readyz (the GitRepo index has synced)."""
        args = [
            sys.executable, "-m", "controller.cli", "serve",
            f"--kubeconfig={self.kubeconfig}", f"--host={LOOPBACK}", f"--port={self.port}",
            f"--probe-port={self.probe_port}", f"--namespace={FLEET_NAMESPACE}", f"--config={self.config}",
            "--log-format=json", *self.extra_args,
        ]  # fmt: skip
        self.starts += 1
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                args, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"fleet-webhook serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"fleet-webhook serve not ready within {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (serve drains and exits 0), SIGKILL if it hangs; returns the exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return proc.returncode

    def restart(self) -> int | None:
        """Stop, then start on the same port; returns the old process's exit code."""
        code = self.stop()
        self.start()
        return code

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{self.probe_port}/readyz", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def log_lines(self) -> list[dict[str, Any]]:
        """The JSON log lines so far."""
        out = []
        with contextlib.suppress(OSError):
            for raw in self.log_path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    out.append(json.loads(raw))
        return out

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"


class Stack:
    """Fleet's gitjob controller + Gitea + fleet-webhook serve on one control plane; a context manager."""

    def __init__(self, kubeconfig: Path, *, tmp_parent: Path | None = None, webhook_config: str = "") -> None:
        self.kubeconfig = kubeconfig
        self._tmp_parent = tmp_parent
        self._webhook_config = webhook_config
        self.tmpdir: Path | None = None
        self.fleet: FleetController | None = None
        self.gitea: Gitea | None = None
        self.webhook: WebhookServer | None = None
        self.api: client.ApiClient | None = None
        self.timings: dict[str, float] = {}
        self.first_poll_nudges = 0

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    def _timed(self, phase: str, started: float) -> None:
        self.timings[phase] = time.monotonic() - started

    def start(self) -> Stack:
        self.tmpdir = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=self._tmp_parent))
        try:
            t = time.monotonic()
            install_fleet_prerequisites(self.kubeconfig)
            self.api = new_api_client(self.kubeconfig)
            self.put_secret(FLEET_NAMESPACE, "gitjob-webhook", {k: WEBHOOK_SECRET for k in SECRET_KEYS})
            self._timed("fleet objects", t)
            t = time.monotonic()
            self.fleet = FleetController(self.kubeconfig, tmp_parent=self.tmpdir)
            self.fleet.start()
            self._timed("fleetcontroller", t)
            t = time.monotonic()
            self.gitea = Gitea(tmp_parent=self.tmpdir)
            self.gitea.start()
            self._timed("gitea", t)
            t = time.monotonic()
            self.webhook = WebhookServer(self.kubeconfig, self.tmpdir, self._webhook_config)
            self.webhook.start()
            self._timed("fleet-webhook", t)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop fleet-webhook, Gitea and Fleet; remove the folder. Safe to call twice."""
        if self.webhook is not None:
            self.webhook.stop()
            self.webhook = None
        if self.gitea is not None:
            self.gitea.stop()
            self.gitea = None
        if self.fleet is not None:
            self.fleet.stop()
            self.fleet = None
        if self.api is not None:
            self.api.close()
            self.api = None
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    def pids(self) -> list[int]:
        """Process ids of what is running now (for the no-leftovers check)."""
        procs = [p.proc for p in (self.fleet, self.gitea, self.webhook) if p is not None]
        return [p.pid for p in procs if p is not None and p.poll() is None]

    # --- cluster objects ----------------------------------------------------------------

    def put_secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        """Create or replace a Secret."""
        assert self.api is not None
        core = client.CoreV1Api(self.api)
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(name=name),
            data={k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        )
        try:
            core.create_namespaced_secret(namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            core.replace_namespaced_secret(name, namespace, body)

    def namespace(self, prefix: str = "e2e") -> str:
        """A fresh namespace for one scenario's GitRepos (Fleet creates its Jobs there)."""
        assert self.api is not None
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        client.CoreV1Api(self.api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        return name

    def create_gitrepo(self, namespace: str, name: str, repo: str, **spec: Any) -> None:
        """A GitRepo (branch main unless `branch`/`revision` is given)."""
        assert self.api is not None
        body_spec: dict[str, Any] = {"repo": repo, **spec}
        if "revision" not in spec:
            body_spec.setdefault("branch", "main")
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GitRepo", "metadata": {"name": name}, "spec": body_spec}
        client.CustomObjectsApi(self.api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

    def gitrepo(self, namespace: str, name: str) -> dict[str, Any]:
        assert self.api is not None
        # The client declares custom objects as `object`; they are the decoded JSON mapping.
        return cast(
            dict[str, Any],
            client.CustomObjectsApi(self.api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name),
        )

    def jobs(self, namespace: str, gitrepo: str) -> list[dict[str, Any]]:
        """Fleet's Jobs for one GitRepo, as {name, gitrepo, commit, created}."""
        assert self.api is not None
        return list_jobs(self.api, namespace, gitrepo)

    def job_commits(self, namespace: str, gitrepo: str) -> set[str]:
        return {j["commit"] for j in self.jobs(namespace, gitrepo)}

    def wait_job(self, namespace: str, gitrepo: str, commit: str, within: float = 20.0, poll: float = 0.05) -> float:
        """Seconds until a Job of `gitrepo` carries annotation commit=`commit`; AssertionError (with
        what Fleet and fleet-webhook said) if none appears `within` seconds."""
        started = time.monotonic()
        while True:
            if commit in self.job_commits(namespace, gitrepo):
                return time.monotonic() - started
            if time.monotonic() - started > within:
                raise AssertionError(
                    f"no Job for {commit[:12]} within {within:.0f}s\n" + self.explain(namespace, gitrepo)
                )
            time.sleep(poll)

    def wait_first_job(self, namespace: str, gitrepo: str, commit: str, within: float = 30.0) -> float:
        """Like `wait_job`, for the Job Fleet makes when a GitRepo is created (its first ls-remote).

        Fleet v0.16.1 sometimes loses that first poll's result (the poller's status patch and the
        reconciler's first status write race: the Event `GotNewCommit` is there, status.pollingCommit
        is not), and with an hourly pollingInterval nothing would retry for an hour. After 8 s this
        nudges it once the way a user would: a changed spec.pollingInterval makes Fleet poll at once.
        Counted in `first_poll_nudges`."""
        try:
            return self.wait_job(namespace, gitrepo, commit, min(8.0, within))
        except AssertionError:
            if self.job_commits(namespace, gitrepo) or within <= 8.0:
                raise
        assert self.api is not None
        interval = self.gitrepo(namespace, gitrepo)["spec"].get("pollingInterval") or "15s"
        nudged = "3601s" if interval != "3601s" else "3602s"
        client.CustomObjectsApi(self.api).patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, gitrepo, {"spec": {"pollingInterval": nudged}}
        )
        self.first_poll_nudges += 1
        return 8.0 + self.wait_job(namespace, gitrepo, commit, within - 8.0)

    def explain(self, namespace: str, gitrepo: str) -> str:
        """What a person would look at: the GitRepo status, its Jobs and Events, both logs' tails."""
        assert self.api is not None
        parts = []
        with contextlib.suppress(ApiException):
            status = self.gitrepo(namespace, gitrepo).get("status", {})
            keep = ("commit", "webhookCommit", "pollingCommit", "lastWebhookTime", "lastPollingTime")
            parts.append("status: " + json.dumps({k: status.get(k) for k in keep}))
        parts.append("jobs: " + json.dumps([(j["name"], j["commit"]) for j in self.jobs(namespace, gitrepo)]))
        with contextlib.suppress(ApiException):
            events = client.CoreV1Api(self.api).list_namespaced_event(namespace).items
            parts += [f"event: {e.reason}: {e.message}" for e in events if e.involved_object.name == gitrepo][-10:]
        if self.gitea is not None:
            parts += self._gitea_view(namespace, gitrepo)
        if self.webhook is not None:
            parts.append("fleet-webhook log:\n" + self.webhook.log_tail(15))
        if self.fleet is not None:
            parts.append("fleetcontroller log:\n" + self.fleet.log_tail(15))
        return "\n".join(parts)

    def _gitea_view(self, namespace: str, gitrepo: str) -> list[str]:
        """The webhooks Gitea recorded for the GitRepo's repository, and Gitea's own warnings."""
        assert self.gitea is not None
        parts = []
        with contextlib.suppress(ApiException, sqlite3.Error, KeyError):
            repo = self.gitrepo(namespace, gitrepo)["spec"]["repo"].rstrip("/").rsplit("/", 1)[-1]
            parts.append(
                f"gitea webhooks sent for {repo}: " + json.dumps(self.gitea.hook_tasks(repo.removesuffix(".git")))
            )
        parts.append("gitea log:\n" + self.gitea.log_tail(10))
        return parts

    def events(self, namespace: str, gitrepo: str) -> list[tuple[str | None, str | None]]:
        """(reason, message) of the Events on a GitRepo (the API leaves either unset at times)."""
        assert self.api is not None
        events = client.CoreV1Api(self.api).list_namespaced_event(namespace).items
        return [(e.reason, e.message) for e in events if e.involved_object.name == gitrepo]


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")
