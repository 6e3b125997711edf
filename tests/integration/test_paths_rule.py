"""The monorepo paths rule against the real API: GitRepos opted in by annotation or mapping are written
only when the push changed a file under their spec.paths, and always when the payload cannot tell."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes import client

from controller.index import ALSO_TRIGGER_ON_PATHS_ANNOTATION, TRIGGER_ON_PATHS_ANNOTATION
from controller.kube import GROUP, PLURAL, VERSION
from tests.integration.receiver_env import ReceiverEnv
from tests.support import Delivery, delivery, secret_data, sha

SECRET = "integration-paths-secret-7c1d"
URL = "https://git.example.com/platform/monorepo"
OPT_IN = {TRIGGER_ON_PATHS_ANNOTATION: "true"}
# GitLab and Gitea do not mark force pushes: their file lists count only when the operator says
# branch protection refuses them.
TRUSTED = "providers:\n  gitlab: {refusesForcePush: true}\n  gitea: {refusesForcePush: true}\n"


@pytest.fixture
async def env(kube_api: client.ApiClient, control_plane: Any, namespace: str) -> AsyncIterator[ReceiverEnv]:
    e = ReceiverEnv(kube_api, control_plane.kubeconfig, namespace)
    data: dict[str, str] = {}
    for provider in ("github", "gitlab", "gitea"):
        data.update(secret_data(provider, SECRET))
    e.create_secret("gitjob-webhook", data)
    yield e
    await e.stop()


def create(env: ReceiverEnv, name: str, annotations: dict[str, str] | None = None, **spec: Any) -> None:
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "GitRepo",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {"repo": URL, "branch": "main", **spec},
    }
    env.custom.create_namespaced_custom_object(GROUP, VERSION, env.namespace, PLURAL, body)


def push(provider: str, commit: str, files: list[str], before: str, **fields: Any) -> Delivery:
    """A signed push of one commit that modified `files` (a fresh delivery id), with extra top-level fields."""
    return delivery(
        provider, https_url=URL, commit=commit, before=before, secret=SECRET, files=files, fields=fields or None
    )


async def test_only_gitrepos_whose_paths_the_push_touched_are_written(env: ReceiverEnv) -> None:
    for i in range(5):
        create(env, f"app-{i}", OPT_IN, paths=[f"apps/app-{i}"])
    create(env, "not-opted", paths=["apps/app-0"])
    create(env, "whole-repo", OPT_IN)
    create(env, "glob", OPT_IN, paths=["apps/app-[34]"])
    create(env, "reads-docs", {**OPT_IN, ALSO_TRIGGER_ON_PATHS_ANNOTATION: "docs"}, paths=["apps/app-9"])
    await env.start(TRUSTED + f"watch:\n  namespaces: [{env.namespace}]\n")
    await env.wait_indexed("app-0", "app-4", "not-opted", "whole-repo", "glob", "reads-docs")

    commit = sha("paths-1")
    resp = await env.send(push("github", commit, ["apps/app-2/deploy.yaml", "docs/readme.md"], sha("paths-0")))

    assert resp.status == 200, resp.body
    assert resp.names("updated") == {"app-2", "not-opted", "whole-repo", "reads-docs"}
    verdicts = {e["name"]: e.get("pathsRule") for e in resp.body["updated"]}
    assert verdicts == {
        "app-2": "triggers: apps/app-2/deploy.yaml changed under spec.paths entry 'apps/app-2'",
        "not-opted": None,
        "whole-repo": "triggers: spec.paths is empty, so the GitRepo deploys the whole repository",
        "reads-docs": f"triggers: docs/readme.md changed under annotation {ALSO_TRIGGER_ON_PATHS_ANNOTATION} entry 'docs'",
    }
    skipped = {e["name"]: e["reason"] for e in resp.body["skipped"]}
    assert set(skipped) == {"app-0", "app-1", "app-3", "app-4", "glob"}
    assert skipped["app-1"] == (
        "push changed no file under spec.paths [apps/app-1] (2 files changed, e.g. apps/app-2/deploy.yaml)"
    )
    assert env.webhook_commit("app-2") == commit
    for name in ("app-0", "app-1", "app-3", "app-4", "glob"):
        assert env.webhook_commit(name) is None, name
    metrics = await env.metrics()
    assert 'fleet_webhook_paths_rule_total{outcome="skipped"} 5.0' in metrics
    assert 'fleet_webhook_paths_rule_total{outcome="touched"} 2.0' in metrics
    assert 'fleet_webhook_paths_rule_total{outcome="not_judged"} 1.0' in metrics

    second = sha("paths-2")
    resp = await env.send(push("gitea", second, ["apps/app-4/values.yaml"], commit))
    assert resp.status == 200, resp.body
    assert resp.names("updated") == {"app-4", "glob", "not-opted", "whole-repo"}
    assert env.webhook_commit("glob") == second


@pytest.mark.parametrize(
    ("provider", "fields", "why"),
    [
        ("gitlab", {"total_commits_count": 23}, "the payload lists 1 of the push's 23 commits"),
        ("gitea", {"total_commits": 7}, "the payload lists 1 of the push's 7 commits"),
        ("github", {"forced": True}, "forced push"),
        ("github", {"created": True}, "the push created the ref"),
    ],
    ids=["gitlab-cut", "gitea-cut", "github-forced", "github-created"],
)
async def test_a_push_whose_files_cannot_be_told_writes_every_gitrepo(
    env: ReceiverEnv, provider: str, fields: dict[str, Any], why: str
) -> None:
    create(env, "app-a", OPT_IN, paths=["apps/a"])
    create(env, "app-b", OPT_IN, paths=["apps/b"])
    await env.start(TRUSTED + f"watch:\n  namespaces: [{env.namespace}]\n")
    await env.wait_indexed("app-a", "app-b")

    commit = sha(f"cannot-tell-{provider}-{why}")
    before = "0" * 40 if fields.get("created") else sha("before")
    resp = await env.send(push(provider, commit, ["apps/a/x.yaml"], before, **fields))

    assert resp.status == 200, resp.body
    assert resp.names("updated") == {"app-a", "app-b"}
    verdicts = {e["name"]: e["pathsRule"] for e in resp.body["updated"]}
    assert verdicts["app-b"].startswith(f"triggers: the payload cannot tell which files changed ({why}")
    assert env.webhook_commit("app-b") == commit


async def test_a_mapping_opts_in_and_an_annotation_edit_takes_effect_through_the_watch(env: ReceiverEnv) -> None:
    create(env, "mapped", paths=["apps/a"])
    create(env, "opted-out", {TRIGGER_ON_PATHS_ANNOTATION: "false"}, paths=["apps/a"])
    await env.start(
        TRUSTED + f"watch:\n  namespaces: [{env.namespace}]\nmappings:\n  - repo: {URL}\n    triggerOnPaths: true\n"
    )
    await env.wait_indexed("mapped", "opted-out")

    first = sha("mapping-1")
    resp = await env.send(push("gitlab", first, ["apps/b/x.yaml"], sha("mapping-0")))
    assert resp.status == 200, resp.body
    assert resp.names("updated") == {"opted-out"}
    assert resp.names("skipped") == {"mapped"}

    env.custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        env.namespace,
        PLURAL,
        "mapped",
        {"metadata": {"annotations": {TRIGGER_ON_PATHS_ANNOTATION: "false"}}},
    )
    assert env.components is not None
    index = env.components.receiver.index
    deadline = time.monotonic() + 10
    while (info := index.get(env.namespace, "mapped")) is None or info.trigger_on_paths != "false":
        assert time.monotonic() < deadline, "the annotation never reached the index"
        await asyncio.sleep(0.02)

    second = sha("mapping-2")
    resp = await env.send(push("gitlab", second, ["apps/b/x.yaml"], first))
    assert resp.status == 200, resp.body
    assert resp.names("updated") == {"mapped", "opted-out"}
    assert env.webhook_commit("mapped") == second


@pytest.mark.parametrize("provider", ["gitlab", "gitea"])
async def test_a_host_that_does_not_mark_force_pushes_writes_every_gitrepo_by_default(
    env: ReceiverEnv, provider: str
) -> None:
    """Without `refusesForcePush` a GitLab or Gitea push may have been forced (they never say), and a
    forced push lists only its new commits: every opted-in GitRepo is written, with the reason."""
    create(env, "app-a", OPT_IN, paths=["apps/a"])
    create(env, "app-b", OPT_IN, paths=["apps/b"])
    await env.start(f"watch:\n  namespaces: [{env.namespace}]\n")
    await env.wait_indexed("app-a", "app-b")

    commit = sha(f"unmarked-{provider}")
    resp = await env.send(push(provider, commit, ["apps/a/x.yaml"], sha("before")))

    assert resp.status == 200, resp.body
    assert resp.names("updated") == {"app-a", "app-b"}
    verdicts = {e["name"]: e["pathsRule"] for e in resp.body["updated"]}
    assert verdicts["app-b"].startswith(
        f"triggers: the payload cannot tell which files changed ({provider} does not mark force pushes"
    )
    assert env.webhook_commit("app-b") == commit
