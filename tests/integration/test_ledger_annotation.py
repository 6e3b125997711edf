"""A ledger annotation that is not one (nested past the JSON decoder's limit, a list, a number, huge)
never costs a delivery: with --shared-order the receiver reads it as empty, logs why, records the
commit and writes a good ledger over it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes import client

from controller.kube import GROUP, PLURAL, VERSION
from controller.ledger import LEDGER_ANNOTATION, Ledger
from tests.integration.receiver_env import ReceiverEnv, github_env
from tests.support import delivery, sha

SECRET = "integration-ledger-secret-4e2a"
URL = "https://github.com/example-org/ledger-annotation"


@pytest.fixture
async def env(kube_api: client.ApiClient, control_plane: Any, namespace: str) -> AsyncIterator[ReceiverEnv]:
    async with github_env(kube_api, control_plane.kubeconfig, namespace, SECRET) as e:
        yield e


@pytest.mark.parametrize(
    "annotation",
    [
        "[" * 20_000 + "]" * 20_000,
        '{"v": 1, "e": ' + "[" * 5_000 + "]" * 5_000 + "}",
        "[1, 2, 3]",
        "42",
        '{"v": 1, "e": [["d", "c", "b", ' + "9" * 5_000 + "]]}",
        "x" * 100_000,
    ],
    ids=["nested", "nested-entries", "list", "number", "huge-int", "huge"],
)
async def test_a_malformed_ledger_annotation_is_logged_and_replaced_not_a_500(
    env: ReceiverEnv, annotation: str, caplog: pytest.LogCaptureFixture
) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "GitRepo",
        "metadata": {"name": "app", "annotations": {LEDGER_ANNOTATION: annotation}},
        "spec": {"repo": URL, "branch": "main"},
    }
    env.custom.create_namespaced_custom_object(GROUP, VERSION, env.namespace, PLURAL, body)
    await env.start(f"watch:\n  namespaces: [{env.namespace}]\n", shared_order=True)
    await env.wait_indexed("app")

    commit = sha("ledger-1")
    with caplog.at_level(logging.WARNING, logger="fleet_webhook.updater"):
        resp = await env.send(delivery("github", https_url=URL, commit=commit, before=sha("ledger-0"), secret=SECRET))

    assert resp.status == 200, resp.body
    assert env.webhook_commit("app") == commit
    written = env.gitrepo("app")["metadata"]["annotations"][LEDGER_ANNOTATION]
    assert [e.commit for e in Ledger.parse(written).entries] == [commit]
    warnings = [r for r in caplog.records if r.getMessage() == "ledger annotation unreadable, taken as empty"]
    assert warnings, [r.getMessage() for r in caplog.records]
