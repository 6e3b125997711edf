"""fleet_webhook_gitrepo_last_webhook_timestamp_seconds against a real API server: the GitRepo's own status.

The chart's FleetWebhookGitRepoNoWebhooks alert relies on two properties checked here: the value is the
`status.lastWebhookTime` the receiver wrote (not a pod-local clock), and a restarted receiver reports
it again from the GitRepo before any new delivery arrives.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.receiver_env import ReceiverEnv, github_env
from tests.support import delivery, sha

SECRET = "integration-secret-lw"
GAUGE = "fleet_webhook_gitrepo_last_webhook_timestamp_seconds"
URL = "https://github.com/example-org/{r}"


@pytest.fixture
async def env(kube_api: client.ApiClient, control_plane: Any, namespace: str) -> AsyncIterator[ReceiverEnv]:
    async with github_env(kube_api, control_plane.kubeconfig, namespace, SECRET) as e:
        yield e


async def gauge(env: ReceiverEnv) -> dict[tuple[str, str], float]:
    (family,) = [f for f in text_string_to_metric_families(await env.metrics()) if f.name == GAUGE]
    return {(s.labels["gitrepo_namespace"], s.labels["gitrepo"]): s.value for s in family.samples}


async def wait_for_series(env: ReceiverEnv, key: tuple[str, str], within: float = 10.0) -> float:
    """The series' value once the watch has brought the status write back into the index."""
    deadline = time.monotonic() + within
    while (value := (await gauge(env)).get(key)) is None:
        assert time.monotonic() < deadline, f"no {GAUGE} series for {key}"
        await asyncio.sleep(0.05)
    return value


async def test_the_gauge_is_the_gitrepos_last_webhook_time_and_survives_a_restart(env: ReceiverEnv) -> None:
    env.create_gitrepo("pushed", URL.format(r="pushed"))
    env.create_gitrepo("quiet", URL.format(r="quiet"))
    config = f"watch:\n  namespaces: [{env.namespace}]\n"
    await env.start(config)
    await env.wait_indexed("pushed", "quiet")
    assert await gauge(env) == {}  # neither ever got a webhook

    resp = await env.send(delivery("github", https_url=URL.format(r="pushed"), commit=sha("lw"), secret=SECRET))
    assert resp.status == 200
    value = await wait_for_series(env, (env.namespace, "pushed"))
    stamp = env.gitrepo("pushed")["status"]["lastWebhookTime"]
    assert value == datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    assert abs(value - time.time()) < 60
    assert (env.namespace, "quiet") not in await gauge(env)

    await env.stop()
    await env.start(config)  # a new process state: only the GitRepo's status knows the time
    assert (await gauge(env)).get((env.namespace, "pushed")) == value
