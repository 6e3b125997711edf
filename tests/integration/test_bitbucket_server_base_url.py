"""A Bitbucket Server push without repository links, on the real apiserver: 200 and the GitRepo moves
when the config names the server's base URL; 200 with a reason naming the setting when it does not."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes import client

from tests.integration.receiver_env import ReceiverEnv
from tests.support import PAYLOADS, raw_delivery, secret_data

SECRET = "bbs-secret-for-tests"
COMMIT = json.loads((PAYLOADS / "bitbucket-server" / "repo-refs-changed-no-links.json").read_text())["changes"][0][
    "toHash"
]


@pytest.fixture
async def env(kube_api: client.ApiClient, control_plane: Any, namespace: str) -> AsyncIterator[ReceiverEnv]:
    e = ReceiverEnv(kube_api, control_plane.kubeconfig, namespace)
    e.create_secret("gitjob-webhook", secret_data("bitbucket-server", SECRET))
    e.create_gitrepo("by-ssh", "ssh://git@bitbucket.example.com:7999/plat/fleet-apps.git")
    e.create_gitrepo("by-https", "https://bitbucket.example.com/scm/plat/fleet-apps.git")
    e.create_gitrepo("other-server", "https://bitbucket.other.example/scm/plat/fleet-apps.git")
    yield e
    await e.stop()


async def test_with_a_base_url_the_push_updates_the_repository(env: ReceiverEnv) -> None:
    await env.start(
        f"watch:\n  namespaces: [{env.namespace}]\n"
        "providers:\n  bitbucket-server:\n    baseUrl: https://bitbucket.example.com\n"
    )
    await env.wait_indexed("by-ssh", "by-https", "other-server")
    resp = await env.send(raw_delivery("bitbucket-server", "repo-refs-changed-no-links", SECRET))
    assert resp.status == 200, resp.body
    assert resp.names("updated") == {"by-ssh", "by-https"}
    assert env.webhook_commit("by-ssh") == COMMIT
    assert env.webhook_commit("other-server") is None


async def test_a_route_names_its_own_server(env: ReceiverEnv) -> None:
    await env.start(
        f"watch:\n  namespaces: [{env.namespace}]\n"
        "providers:\n  bitbucket-server:\n    baseUrl: https://bitbucket.example.com\n"
        "routes:\n  - path: /\n  - path: /other\n    bitbucketServerBaseUrl: https://bitbucket.other.example\n"
    )
    await env.wait_indexed("other-server")
    resp = await env.send(raw_delivery("bitbucket-server", "repo-refs-changed-no-links", SECRET), "/other")
    assert resp.status == 200, resp.body
    assert resp.names("updated") == {"other-server"}
    assert env.webhook_commit("by-ssh") is None


async def test_without_a_base_url_the_answer_is_200_and_says_what_to_configure(env: ReceiverEnv) -> None:
    await env.start(f"watch:\n  namespaces: [{env.namespace}]\n")
    await env.wait_indexed("by-ssh")
    resp = await env.send(raw_delivery("bitbucket-server", "repo-refs-changed-no-links", SECRET))
    assert resp.status == 200, resp.body
    assert "providers.bitbucket-server.baseUrl" in json.dumps(resp.body)
    assert env.webhook_commit("by-ssh") is None
