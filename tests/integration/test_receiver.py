"""Every provider end to end against the real API: signed pushes update exactly the right GitRepos."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes import client

from controller.index import MANAGED_INTERVAL_ANNOTATION
from tests.factories import forms
from tests.integration.receiver_env import ReceiverEnv
from tests.support import PROVIDERS, Delivery, delivery, secret_data, sha, sign

SECRET = "integration-secret-5f2a"

# Per provider: the web/clone URL its payload names, and the SSH form a GitRepo may use instead.


def all_secrets() -> dict[str, str]:
    data: dict[str, str] = {}
    for provider in PROVIDERS:
        data.update(secret_data(provider, SECRET))
    return data


@pytest.fixture
async def env(kube_api: client.ApiClient, control_plane: Any, namespace: str) -> AsyncIterator[ReceiverEnv]:
    e = ReceiverEnv(kube_api, control_plane.kubeconfig, namespace)
    e.create_secret("gitjob-webhook", all_secrets())
    yield e
    await e.stop()


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_signed_push_updates_exactly_the_right_gitrepos(env: ReceiverEnv, provider: str) -> None:
    https, ssh = forms(provider, "apps")
    mirror = "https://mirror.example.net/mirrors/apps.git"
    env.create_gitrepo("by-https", https)
    env.create_gitrepo("by-ssh", ssh)
    env.create_gitrepo("by-mirror", mirror)
    env.create_gitrepo("user-polling", https, pollingInterval="24h")
    env.create_gitrepo("other-branch", https, branch="dev")
    env.create_gitrepo("suffix", https.replace("apps", "apps-suffix"))
    env.create_gitrepo("other-repo", https.replace("apps", "unrelated"))
    await env.start(f"watch:\n  namespaces: [{env.namespace}]\nmappings:\n  - repo: {https}\n    aliases: [{mirror}]\n")
    await env.wait_indexed("by-https", "by-ssh", "by-mirror", "user-polling", "other-branch", "suffix")

    commit = sha(f"{provider}-1")
    resp = await env.send(
        delivery(provider, https_url=https, ssh_url=ssh, commit=commit, before=sha("p"), secret=SECRET)
    )

    assert resp.status == 200, resp.body
    assert resp.names("updated") == {"by-https", "by-ssh", "by-mirror", "user-polling"}
    assert resp.names("skipped") == {"other-branch"}
    for name in ("by-https", "by-ssh", "by-mirror", "user-polling"):
        stored = env.gitrepo(name)
        assert stored["status"]["webhookCommit"] == commit, name
        assert stored["status"]["lastWebhookTime"].endswith("Z")
    for name in ("other-branch", "suffix", "other-repo"):
        assert env.webhook_commit(name) is None, name
    # Polling policy: 1h set where none was, marked as ours; a user's interval is left alone.
    by_https = env.gitrepo("by-https")
    assert by_https["spec"]["pollingInterval"] == "1h"
    assert by_https["metadata"]["annotations"][MANAGED_INTERVAL_ANNOTATION] == "1h"
    user = env.gitrepo("user-polling")
    assert user["spec"]["pollingInterval"] == "24h"
    assert MANAGED_INTERVAL_ANNOTATION not in user["metadata"].get("annotations", {})


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_wrong_or_missing_signature_updates_nothing(env: ReceiverEnv, provider: str) -> None:
    https, ssh = forms(provider, "guarded")
    env.create_gitrepo("guarded", https)
    await env.start(f"watch:\n  namespaces: [{env.namespace}]\n")
    await env.wait_indexed("guarded")
    for secret in ("wrong-secret", None):
        resp = await env.send(delivery(provider, https_url=https, ssh_url=ssh, commit=sha("evil"), secret=secret))
        assert resp.status == 401, (secret, resp.body)
    assert env.webhook_commit("guarded") is None
    assert "pollingInterval" not in env.gitrepo("guarded")["spec"]
    metrics = await env.metrics()
    assert f'fleet_webhook_verification_failures_total{{provider="{provider}",reason="mismatch"}} 1.0' in metrics
    assert f'fleet_webhook_verification_failures_total{{provider="{provider}",reason="missing"}} 1.0' in metrics


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_branch_mismatch_updates_nothing_and_says_why(env: ReceiverEnv, provider: str) -> None:
    https, ssh = forms(provider, "steady")
    env.create_gitrepo("steady", https, branch="production")
    await env.start(f"watch:\n  namespaces: [{env.namespace}]\n")
    await env.wait_indexed("steady")
    resp = await env.send(
        delivery(provider, https_url=https, ssh_url=ssh, ref="refs/heads/feature-x", commit=sha("f"), secret=SECRET)
    )
    assert resp.status == 200
    assert resp.body["updated"] == []
    [skip] = resp.body["skipped"]
    assert skip["name"] == "steady"
    assert "branch differs" in skip["reason"]
    assert "'production'" in skip["reason"]
    assert "'feature-x'" in skip["reason"]
    assert env.webhook_commit("steady") is None


@pytest.mark.parametrize("provider", ["github", "gitlab", "bitbucket-server", "azure-devops"])
async def test_tag_push_triggers_gitrepo_pinned_to_that_revision(env: ReceiverEnv, provider: str) -> None:
    https, ssh = forms(provider, "released")
    env.create_gitrepo("pinned-v2", https, branch="", revision="v2.0.0")
    env.create_gitrepo("pinned-v1", https, branch="", revision="v1.0.0")
    env.create_gitrepo("tracks-main", https)
    await env.start(f"watch:\n  namespaces: [{env.namespace}]\n")
    await env.wait_indexed("pinned-v2", "pinned-v1", "tracks-main")
    commit = sha("tag-v2")
    resp = await env.send(
        delivery(provider, https_url=https, ssh_url=ssh, ref="refs/tags/v2.0.0", commit=commit, secret=SECRET)
    )
    assert resp.status == 200, resp.body
    assert resp.names("updated") == {"pinned-v2"}
    assert resp.names("skipped") == {"pinned-v1", "tracks-main"}
    assert env.webhook_commit("pinned-v2") == commit
    assert env.webhook_commit("pinned-v1") is None


async def test_several_namespaces_and_a_kubernetes_event(env: ReceiverEnv, kube_api: client.ApiClient) -> None:
    other = env.namespace + "-b"
    client.CoreV1Api(kube_api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=other)))
    https, ssh = forms("github", "shared")
    env.create_gitrepo("here", https)
    env.create_gitrepo("there", ssh, namespace=other)
    await env.start(f"watch:\n  namespaces: [{env.namespace}, {other}]\n")
    await env.wait_indexed("here")
    await env.wait_indexed("there", namespace=other)
    commit = sha("multi")
    resp = await env.send(delivery("github", https_url=https, ssh_url=ssh, commit=commit, secret=SECRET))
    assert resp.status == 200
    assert {(u["namespace"], u["name"]) for u in resp.body["updated"]} == {(env.namespace, "here"), (other, "there")}
    assert env.webhook_commit("there", namespace=other) == commit
    assert env.components is not None
    await env.components.updater.drain(within=5)
    events = env.events_for("here")
    assert any(e.reason == "WebhookCommit" and commit in e.message for e in events)


async def test_redelivery_is_answered_without_writing(env: ReceiverEnv) -> None:
    https, ssh = forms("github", "dedupe")
    env.create_gitrepo("once", https)
    await env.start(f"watch:\n  namespaces: [{env.namespace}]\n")
    await env.wait_indexed("once")
    d = delivery("github", https_url=https, ssh_url=ssh, commit=sha("d1"), secret=SECRET, delivery_id="fixed-id")
    first = await env.send(d)
    assert first.names("updated") == {"once"}
    version = env.gitrepo("once")["metadata"]["resourceVersion"]
    second = await env.send(d)
    assert second.status == 200
    assert second.body["duplicate"] is True
    assert env.gitrepo("once")["metadata"]["resourceVersion"] == version
    assert 'fleet_webhook_dedupe_hits_total{provider="github"} 1.0' in await env.metrics()


async def test_out_of_order_delivery_does_not_move_commit_back(env: ReceiverEnv) -> None:
    https, _ = forms("github", "ordered")
    env.create_gitrepo("ordered", https)
    await env.start(f"watch:\n  namespaces: [{env.namespace}]\n")
    await env.wait_indexed("ordered")
    c0, c1, c2 = sha("c0"), sha("c1"), sha("c2")
    newer = await env.send(delivery("github", https_url=https, commit=c2, before=c1, secret=SECRET))
    assert newer.names("updated") == {"ordered"}
    older = await env.send(delivery("github", https_url=https, commit=c1, before=c0, secret=SECRET))
    assert older.status == 200
    [skip] = older.body["skipped"]
    assert "out of order" in skip["reason"]
    assert env.webhook_commit("ordered") == c2


@pytest.mark.parametrize("provider", ["github", "gitea"])
async def test_force_push_rollback_is_recorded_at_once(env: ReceiverEnv, provider: str) -> None:
    """W -> X, then a force push back to W (before = X): the rollback is the newest, not "out of order".

    GitHub marks it `forced: true`; Gitea sends no such flag, and `before` equal to the recorded
    commit is what says the push is the newest. A redelivery of W -> X (same delivery id) is answered from the dedupe cache.
    """
    https, _ = forms(provider, f"rollback-{provider}")
    name = f"rollback-{provider}"
    env.create_gitrepo(name, https)
    await env.start(f"watch:\n  namespaces: [{env.namespace}]\n")
    await env.wait_indexed(name)
    w, x = sha(f"{provider}-w"), sha(f"{provider}-x")
    forward = delivery(provider, https_url=https, commit=x, before=w, secret=SECRET)
    assert (await env.send(forward)).names("updated") == {name}
    rollback = delivery(provider, https_url=https, commit=w, before=x, secret=SECRET)
    if provider == "github":
        doc = json.loads(rollback.body)
        doc["forced"] = True
        body = json.dumps(doc).encode()
        rollback = Delivery(
            sign(provider, {k: v for k, v in rollback.headers.items() if "Signature" not in k}, body, SECRET), body
        )
    answer = await env.send(rollback)
    assert answer.names("updated") == {name}, answer.body
    assert env.webhook_commit(name) == w
    late = await env.send(forward)  # the host redelivers the first push (same delivery id)
    assert late.status == 200
    assert late.body.get("duplicate") is True
    assert env.webhook_commit(name) == w


async def test_form_encoded_github_and_gitea(env: ReceiverEnv) -> None:
    gh_https, gh_ssh = forms("github", "formy")
    gt_https, gt_ssh = forms("gitea", "formy")
    env.create_gitrepo("gh", gh_https)
    env.create_gitrepo("gt", gt_https)
    await env.start(f"watch:\n  namespaces: [{env.namespace}]\n")
    await env.wait_indexed("gh", "gt")
    for provider, (https, ssh), name in (("github", (gh_https, gh_ssh), "gh"), ("gitea", (gt_https, gt_ssh), "gt")):
        commit = sha(f"form-{provider}")
        resp = await env.send(delivery(provider, https_url=https, ssh_url=ssh, commit=commit, secret=SECRET, form=True))
        assert resp.status == 200, resp.body
        assert env.webhook_commit(name) == commit


async def test_gitrepo_webhook_secret_takes_precedence(env: ReceiverEnv) -> None:
    https, _ = forms("github", "private")
    env.create_secret("team-secret", {"github": "team-only"})
    env.create_gitrepo("own-secret", https, webhookSecret="team-secret")
    env.create_gitrepo("global-secret", https)
    await env.start(f"watch:\n  namespaces: [{env.namespace}]\n")
    await env.wait_indexed("own-secret", "global-secret")
    with_global = await env.send(delivery("github", https_url=https, commit=sha("g"), secret=SECRET))
    assert with_global.status == 200
    assert with_global.names("updated") == {"global-secret"}
    assert "webhookSecret" in with_global.body["skipped"][0]["reason"]
    with_team = await env.send(delivery("github", https_url=https, commit=sha("t"), secret="team-only"))
    assert with_team.status == 200
    assert with_team.names("updated") == {"own-secret"}
    assert env.webhook_commit("own-secret") == sha("t")
    assert env.webhook_commit("global-secret") == sha("g")


async def test_metrics_and_logs_move(env: ReceiverEnv, tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from controller.reload import ConfigReloader
    from controller.runtime import reload_callback

    https, ssh = forms("gitlab", "observed")
    env.create_gitrepo("observed", https)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(f"watch:\n  namespaces: [{env.namespace}]\n")
    await env.start(config_file.read_text())
    await env.wait_indexed("observed")
    caplog.set_level(logging.INFO, logger="fleet_webhook")
    commit = sha("observed-1")
    resp = await env.send(
        delivery("gitlab", https_url=https, ssh_url=ssh, commit=commit, secret=SECRET, delivery_id="obs-1")
    )
    assert resp.status == 200

    assert env.components is not None
    receiver = env.components.receiver
    reloader = ConfigReloader(config_file, receiver.holder, reload_callback(receiver.metrics))
    config_file.write_text("polling:\n  webhookInterval: nope\n")
    assert await reloader.check_now() is False
    config_file.write_text(f"watch:\n  namespaces: [{env.namespace}]\npolling:\n  webhookInterval: 2h\n")
    assert await reloader.check_now() is True

    text = await env.metrics()
    assert 'fleet_webhook_requests_total{code="200",outcome="accepted",provider="gitlab",route="/"} 1.0' in text
    assert 'fleet_webhook_gitrepos_updated_total{provider="gitlab"} 1.0' in text
    assert "fleet_webhook_api_write_seconds_count 1.0" in text
    assert "fleet_webhook_index_gitrepos 1.0" in text
    assert 'fleet_webhook_config_reloads_total{result="failure"} 1.0' in text
    assert 'fleet_webhook_config_reloads_total{result="success"} 1.0' in text
    assert "fleet_webhook_config_last_success_timestamp_seconds" in text
    assert 'fleet_webhook_polling_interval_changes_total{action="set"} 1.0' in text

    [record] = [r for r in caplog.records if r.getMessage() == "delivery handled"]
    assert record.__dict__["delivery"] == "obs-1"
    assert record.__dict__["provider"] == "gitlab"
    assert record.__dict__["commit"] == commit
    assert record.__dict__["outcome"] == "accepted"
    assert record.__dict__["updated"] == [f"{env.namespace}/observed"]
    assert SECRET not in caplog.text


async def test_polling_fallback_undoes_only_our_own_interval(env: ReceiverEnv) -> None:
    import asyncio

    from controller.runtime import polling_fallback

    https, ssh = forms("github", "quiet")
    env.create_gitrepo("quiet", https)
    env.create_gitrepo("user-changed", https)
    await env.start(f"watch:\n  namespaces: [{env.namespace}]\npolling:\n  fallbackAfter: 1s\n")
    await env.wait_indexed("quiet", "user-changed")
    resp = await env.send(delivery("github", https_url=https, ssh_url=ssh, commit=sha("q"), secret=SECRET))
    assert resp.names("updated") == {"quiet", "user-changed"}
    assert env.gitrepo("quiet")["spec"]["pollingInterval"] == "1h"
    # A user (or GitOps) sets their own interval afterwards: it is theirs now, even with our annotation.
    env.custom.patch_namespaced_custom_object(
        "fleet.cattle.io", "v1alpha1", env.namespace, "gitrepos", "user-changed", {"spec": {"pollingInterval": "2h"}}
    )
    assert env.components is not None
    stop = asyncio.Event()
    task = asyncio.create_task(polling_fallback(env.components.receiver, env.components.updater, stop))
    try:
        for _ in range(100):
            if "pollingInterval" not in env.gitrepo("quiet")["spec"]:
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await task
    quiet = env.gitrepo("quiet")
    assert "pollingInterval" not in quiet["spec"]
    assert MANAGED_INTERVAL_ANNOTATION not in quiet["metadata"].get("annotations", {})
    assert env.gitrepo("user-changed")["spec"]["pollingInterval"] == "2h"


async def test_ping_signed_with_a_gitrepo_secret_is_accepted(env: ReceiverEnv) -> None:
    from tests.support import raw_delivery

    # The ping fixture names https://github.com/example-org/fleet-apps.
    env.create_secret("own", {"github": "own-secret"})
    env.create_gitrepo("apps", "https://github.com/example-org/fleet-apps", webhookSecret="own")
    await env.start(f"watch:\n  namespaces: [{env.namespace}]\n")
    await env.wait_indexed("apps")
    ok = await env.send(raw_delivery("github", "ping", "own-secret"))
    assert (ok.status, ok.body.get("ping")) == (200, True)
    forged = await env.send(raw_delivery("github", "ping", "guess"))
    assert forged.status == 401


async def test_disable_polling_and_the_per_delivery_limit(env: ReceiverEnv) -> None:
    https, ssh = forms("github", "limited")
    env.create_gitrepo("a-no-polling", https, disablePolling=True)
    env.create_gitrepo("b-second", https)
    env.create_gitrepo("c-third", https)
    await env.start(f"watch:\n  namespaces: [{env.namespace}]\nlimits:\n  maxGitReposPerDelivery: 2\n")
    await env.wait_indexed("a-no-polling", "b-second", "c-third")
    resp = await env.send(delivery("github", https_url=https, ssh_url=ssh, commit=sha("lim"), secret=SECRET))
    assert resp.status == 200
    assert resp.names("updated") == {"a-no-polling", "b-second"}
    [over] = resp.body["skipped"]
    assert over["name"] == "c-third"
    assert "maxGitReposPerDelivery" in over["reason"]
    assert "pollingInterval" not in env.gitrepo("a-no-polling")["spec"], "disablePolling: no interval is set"
    assert env.gitrepo("b-second")["spec"]["pollingInterval"] == "1h"
