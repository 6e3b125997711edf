"""/metrics: the per-GitRepo last-webhook gauge the "GitRepo stopped getting webhooks" alert is built on."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from controller.app import make_app
from controller.config import load_text
from controller.index import GitRepoIndex, gitrepo_info
from controller.metrics import Metrics
from controller.pipeline import Receiver
from controller.reload import ConfigHolder
from controller.secrets import SecretStore

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
GAUGE = "fleet_webhook_gitrepo_last_webhook_timestamp_seconds"


def gitrepo(namespace: str, name: str, last_webhook: str | None) -> dict[str, Any]:
    status = {"lastWebhookTime": last_webhook} if last_webhook else {}
    return {
        "metadata": {"namespace": namespace, "name": name, "resourceVersion": "1"},
        "spec": {"repo": f"https://github.com/example-org/{name}", "branch": "main"},
        "status": status,
    }


def receiver(*objects: dict[str, Any]) -> Receiver:
    async def read(namespace: str, name: str) -> dict[str, bytes] | None:
        return None

    index = GitRepoIndex()
    index.replace_all([i for i in map(gitrepo_info, objects) if i is not None])
    index.synced = True
    return Receiver(ConfigHolder(load_text("", "test.yaml")), index, SecretStore(read, "ns"), Metrics(), updater=None)


async def scrape(client: TestClient[Any, Any]) -> dict[tuple[str, str], float]:
    """The gauge's samples by (gitrepo_namespace, gitrepo), read with prometheus_client's own parser."""
    text = await (await client.get("/metrics")).text()
    (family,) = [f for f in text_string_to_metric_families(text) if f.name == GAUGE]
    assert family.type == "gauge"
    return {(s.labels["gitrepo_namespace"], s.labels["gitrepo"]): s.value for s in family.samples}


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC).timestamp()


async def test_one_series_per_gitrepo_that_got_a_webhook(aiohttp_client: ClientFactory) -> None:
    r = receiver(
        gitrepo("fleet-default", "apps", "2026-11-25T08:23:58Z"),
        gitrepo("team-a", "infra", "2026-11-20T00:00:00Z"),
        gitrepo("fleet-default", "never-hooked", None),  # no series: it never got a webhook
    )
    client = await aiohttp_client(make_app(r))
    assert await scrape(client) == {
        ("fleet-default", "apps"): epoch("2026-11-25T08:23:58Z"),
        ("team-a", "infra"): epoch("2026-11-20T00:00:00Z"),
    }


async def test_series_follow_the_index_between_scrapes(aiohttp_client: ClientFactory) -> None:
    """A newer webhook moves the value; a deleted GitRepo's series is gone at the next scrape."""
    r = receiver(
        gitrepo("fleet-default", "apps", "2026-11-25T08:00:00Z"),
        gitrepo("fleet-default", "old", "2026-01-01T00:00:00Z"),
    )
    client = await aiohttp_client(make_app(r))
    assert set(await scrape(client)) == {("fleet-default", "apps"), ("fleet-default", "old")}
    newer = gitrepo_info(
        gitrepo("fleet-default", "apps", "2026-11-25T09:30:00Z")
        | {"metadata": {"namespace": "fleet-default", "name": "apps", "resourceVersion": "2"}}
    )
    assert newer is not None
    r.index.upsert(newer)
    r.index.remove("fleet-default", "old")
    assert await scrape(client) == {("fleet-default", "apps"): epoch("2026-11-25T09:30:00Z")}


async def test_empty_index_still_declares_the_gauge(aiohttp_client: ClientFactory) -> None:
    """HELP/TYPE are there with no GitRepo, so the dashboard and rules find the name from the start."""
    client = await aiohttp_client(make_app(receiver()))
    assert await scrape(client) == {}
    text = await (await client.get("/metrics")).text()
    assert f"# TYPE {GAUGE} gauge" in text
