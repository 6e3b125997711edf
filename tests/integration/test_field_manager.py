"""Every write names the field manager `fleet-webhook`, as the real apiserver records it in managedFields.

A user reading `kubectl get gitrepo -o yaml --show-managed-fields`, or a server-side-apply conflict
message from a GitOps tool, sees which fields this product owns; the Kubernetes client's default
manager ("OpenAPI-Generator") would name nobody.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes import client

from controller.kube import FIELD_MANAGER
from tests.integration.receiver_env import ReceiverEnv, github_env
from tests.support import delivery, sha

SECRET = "field-manager-secret"
HTTPS = "https://github.com/example-org/managed"
SSH = "git@github.com:example-org/managed.git"


@pytest.fixture
async def env(kube_api: client.ApiClient, control_plane: Any, namespace: str) -> AsyncIterator[ReceiverEnv]:
    async with github_env(kube_api, control_plane.kubeconfig, namespace, SECRET) as e:
        yield e


def managers(obj: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(manager, subresource) -> the fieldsV1 it owns."""
    return {
        (entry["manager"], entry.get("subresource", "")): entry.get("fieldsV1", {})
        for entry in obj["metadata"].get("managedFields", [])
    }


async def test_status_spec_and_event_writes_name_fleet_webhook(env: ReceiverEnv) -> None:
    assert FIELD_MANAGER == "fleet-webhook"
    env.create_gitrepo("managed", HTTPS)
    await env.start(f"watch:\n  namespaces: [{env.namespace}]\npolling:\n  manage: true\n  webhookInterval: 1h\n")
    await env.wait_indexed("managed")

    commit = sha("field-manager")
    resp = await env.send(delivery("github", https_url=HTTPS, ssh_url=SSH, commit=commit, secret=SECRET))
    assert resp.status == 200, resp.body
    assert resp.names("updated") == {"managed"}

    stored = env.gitrepo("managed")
    owned = managers(stored)
    status_fields = owned.get(("fleet-webhook", "status"))
    assert status_fields is not None, sorted(owned)
    assert "f:webhookCommit" in status_fields["f:status"]
    assert "f:lastWebhookTime" in status_fields["f:status"]
    spec_fields = owned.get(("fleet-webhook", ""))
    assert spec_fields is not None, sorted(owned)
    assert "f:pollingInterval" in spec_fields["f:spec"]
    assert stored["spec"]["pollingInterval"] == "1h"
    # The only other manager is the test's own create (spec.repo, spec.branch): it owns nothing we wrote.
    others = {key: fields for key, fields in owned.items() if key[0] != "fleet-webhook"}
    assert all(sub != "status" for _, sub in others), sorted(owned)
    assert not any("f:pollingInterval" in fields.get("f:spec", {}) for fields in others.values()), others

    assert env.components is not None
    await env.components.updater.drain(within=5)
    events = [e for e in env.events_for("managed") if e.reason == "WebhookCommit"]
    assert events
    assert {m.manager for e in events for m in e.metadata.managed_fields or []} == {"fleet-webhook"}
