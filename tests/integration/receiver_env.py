"""A running receiver wired to the real control plane, for integration tests.

`ReceiverEnv` owns a namespace's GitRepos and secrets, a `Components` built exactly as `serve`
builds it (watchers, updater, secret store), and an aiohttp test client in front of the app.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from aiohttp.test_utils import TestClient, TestServer
from kubernetes import client

from controller.app import make_app
from controller.config import load_text
from controller.kube import GROUP, PLURAL, VERSION, Kube, load_api_client
from controller.runtime import Components, build
from controller.settings import Settings
from tests.support import Delivery, secret_data


def gitrepo_body(name: str, repo: str, *, branch: str = "main", **spec: Any) -> dict[str, Any]:
    """A GitRepo manifest."""
    labels = spec.pop("labels", None)
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    body_spec: dict[str, Any] = {"repo": repo, **spec}
    if branch:
        body_spec["branch"] = branch
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GitRepo", "metadata": meta, "spec": body_spec}


@dataclass
class Response:
    """Status and decoded JSON body of one delivery."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def names(self, section: str) -> set[str]:
        """Names of GitRepos listed under `updated`, `skipped`, ..."""
        return {entry["name"] for entry in self.body.get(section, [])}


class ReceiverEnv:
    """Receiver + admin API access for one test."""

    def __init__(self, api: client.ApiClient, kubeconfig: Path, namespace: str) -> None:
        self.api = api
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.components: Components | None = None
        self.http: TestClient[Any, Any] | None = None

    # --- cluster objects ----------------------------------------------------------------

    def create_secret(self, name: str, data: dict[str, str], namespace: str | None = None) -> None:
        """Create or replace a Secret."""
        ns = namespace or self.namespace
        encoded: dict[str, bytes | str] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        secret = client.V1Secret(metadata=client.V1ObjectMeta(name=name), data=encoded)
        try:
            self.core.create_namespaced_secret(ns, secret)
        except client.ApiException as exc:
            if exc.status != 409:
                raise
            self.core.replace_namespaced_secret(name, ns, secret)

    def create_gitrepo(self, name: str, repo: str, *, namespace: str | None = None, **spec: Any) -> None:
        """Create a GitRepo (branch defaults to main; pass branch="" for none)."""
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace or self.namespace, PLURAL, gitrepo_body(name, repo, **spec)
        )

    def gitrepo(self, name: str, namespace: str | None = None) -> dict[str, Any]:
        """The GitRepo as stored."""
        # The client declares custom objects as `object`; they are the decoded JSON mapping.
        return cast(
            dict[str, Any],
            self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace or self.namespace, PLURAL, name),
        )

    def webhook_commit(self, name: str, namespace: str | None = None) -> str | None:
        """status.webhookCommit as stored (None when unset)."""
        value = self.gitrepo(name, namespace).get("status", {}).get("webhookCommit")
        return value if isinstance(value, str) else None

    def events_for(self, name: str) -> list[Any]:
        """Kubernetes Events recorded on a GitRepo."""
        events = self.core.list_namespaced_event(self.namespace).items
        return [e for e in events if e.involved_object.name == name]

    # --- receiver -----------------------------------------------------------------------

    async def start(self, config_text: str, *, shared_order: bool = False) -> None:
        """Build and start the receiver with this config (YAML), with `--shared-order` when asked."""
        config = load_text(config_text, "test-config.yaml")
        settings = Settings(namespace=self.namespace, shared_order=shared_order)
        kube = Kube(load_api_client(self.kubeconfig))
        self.components = build(settings, config, "", kube)
        self.components.sync.start(config.watch)
        await self.components.wait_synced(30)
        self.http = TestClient(TestServer(make_app(self.components.receiver)))
        await self.http.start_server()

    async def stop(self) -> None:
        """Stop the HTTP server and the watchers."""
        if self.http is not None:
            await self.http.close()
        if self.components is not None:
            await self.components.close()

    async def wait_indexed(self, *names: str, namespace: str | None = None, within: float = 10.0) -> None:
        """Wait until the watch has brought these GitRepos into the index."""
        assert self.components is not None
        ns = namespace or self.namespace
        deadline = time.monotonic() + within
        index = self.components.receiver.index
        while not all(index.get(ns, n) is not None for n in names):
            if time.monotonic() > deadline:
                missing = [n for n in names if index.get(ns, n) is None]
                raise AssertionError(f"GitRepos never indexed: {missing}")
            await asyncio.sleep(0.02)

    async def send(self, delivery: Delivery, path: str = "/") -> Response:
        """POST a delivery and decode the answer."""
        assert self.http is not None
        resp = await self.http.post(path, data=delivery.body, headers=delivery.headers)
        text = await resp.text()
        return Response(resp.status, json.loads(text) if text else {}, dict(resp.headers))

    async def readiness(self) -> tuple[int, dict[str, Any]]:
        """/readyz: status code and body."""
        assert self.http is not None
        resp = await self.http.get("/readyz")
        return resp.status, json.loads(await resp.text())

    async def metrics(self) -> str:
        """The /metrics text."""
        assert self.http is not None
        resp = await self.http.get("/metrics")
        return await resp.text()


@contextlib.asynccontextmanager
async def github_env(
    kube_api: client.ApiClient, kubeconfig: Path, namespace: str, secret: str
) -> AsyncIterator[ReceiverEnv]:
    """A ReceiverEnv whose `gitjob-webhook` Secret holds `secret` for GitHub, stopped on exit: the
    fixture most tests that send GitHub pushes start from."""
    env = ReceiverEnv(kube_api, kubeconfig, namespace)
    env.create_secret("gitjob-webhook", secret_data("github", secret))
    try:
        yield env
    finally:
        await env.stop()
