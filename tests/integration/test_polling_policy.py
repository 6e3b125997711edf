"""The polling policy against the real apiserver and Fleet v0.16.1's real GitRepo CRD.

* The config accepts exactly the intervals Fleet's CRD accepts (its maxLength and CEL rule).
* A refused interval write (HTTP 422, here from an admission policy) shows in the answer and the
  metrics; the commit is still recorded.
* `fallbackAfter` reverts the interval fleet-webhook set, and never one a GitOps tool applied,
  server-side (a second field manager) or client-side (last-applied-configuration).
* On a GitRepo CRD without `status.lastWebhookTime` (Fleet <= v0.14, hand-written), the fallback
  counts from the webhook this process saw instead of reverting at its first pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from kubernetes import client

from controller import config as cfg
from controller.kube import GROUP, PLURAL, VERSION
from controller.runtime import polling_fallback
from tests.conftest import OLD_FLEET_CRD_DIR
from tests.integration.receiver_env import ReceiverEnv
from tests.support import delivery, secret_data, sha
from tools.controlplane import ControlPlane, find_tools_bin, install_crds, new_api_client

SECRET = "polling-secret-for-tests"
HTTPS = "https://github.com/example-org/polling"
SSH = "git@github.com:example-org/polling.git"
ANNOTATION = "fleet-webhook.cattle.io/polling-interval-set"

# Candidate intervals around the edges of Fleet's rule (units, fractions, the 2562047h cap, 32 chars).
CANDIDATES = [
    "1h",
    "90s",
    "1.5h",
    "1h30m",
    "250ms",
    "2562047h",
    "2562047h1s",
    "2562048h",
    "1d",
    "2w",
    "1H",
    "h",
    "1",
    "-1h",
    ".5h",
    "1h ",
    "1h1m1s1ms1us1ns1h1m1s1ms1us1ns1h",  # 32 characters
    "1h1m1s1ms1us1ns1h1m1s1ms1us1ns1h1",  # 33
]


def config_accepts(interval: str) -> bool:
    try:
        cfg.load_text(f"polling:\n  webhookInterval: {json.dumps(interval)}\n", "c.yaml")
    except cfg.ConfigError:
        return False
    return True


@pytest.fixture
async def env(kube_api: client.ApiClient, control_plane: Any, namespace: str) -> AsyncIterator[ReceiverEnv]:
    e = ReceiverEnv(kube_api, control_plane.kubeconfig, namespace)
    e.create_secret("gitjob-webhook", secret_data("github", SECRET))
    yield e
    await e.stop()


@contextlib.asynccontextmanager
async def fallback_running(env: ReceiverEnv) -> AsyncIterator[None]:
    """The receiver's own fallback loop (as `serve` runs it) for the duration of the block."""
    assert env.components is not None
    stop = asyncio.Event()
    task = asyncio.create_task(polling_fallback(env.components.receiver, env.components.updater, stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def wait_for(predicate: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.1)


def test_the_config_accepts_exactly_the_intervals_fleets_crd_accepts(
    kube_api: client.ApiClient, namespace: str
) -> None:
    custom = client.CustomObjectsApi(kube_api)
    api_accepts: dict[str, bool] = {}
    for i, interval in enumerate(CANDIDATES):
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "GitRepo",
            "metadata": {"name": f"interval-{i}"},
            "spec": {"repo": HTTPS, "pollingInterval": interval},
        }
        try:
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body, dry_run="All")
            status = 201
        except client.ApiException as exc:
            status = exc.status
        assert status in (201, 422), (interval, status)
        api_accepts[interval] = status == 201
    ours = {interval: config_accepts(interval) for interval in CANDIDATES}
    assert ours == api_accepts
    assert sum(ours.values()) >= 6  # both sides of the rule are exercised
    assert not all(ours.values())


async def test_a_refused_interval_shows_in_the_answer_and_metrics(env: ReceiverEnv, kube_api: client.ApiClient) -> None:
    """An admission policy (as a cluster may have) refuses `1h`: the answer says so, the metric counts it."""
    admission = client.AdmissionregistrationV1Api(kube_api)
    name = f"no-hourly-polling-{env.namespace}"
    # The client validates a plain dict body into the model itself (pydantic validate_call); done here so
    # the argument has the declared type.
    admission.create_validating_admission_policy(
        client.V1ValidatingAdmissionPolicy.model_validate(
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingAdmissionPolicy",
                "metadata": {"name": name},
                "spec": {
                    "failurePolicy": "Fail",
                    "matchConstraints": {
                        "resourceRules": [
                            {
                                "apiGroups": [GROUP],
                                "apiVersions": [VERSION],
                                "operations": ["UPDATE"],
                                "resources": ["gitrepos"],
                            }
                        ]
                    },
                    "validations": [
                        {
                            "expression": "!has(object.spec.pollingInterval) || object.spec.pollingInterval != '1h'",
                            "message": "hourly polling is not allowed in this namespace",
                        }
                    ],
                },
            }
        )
    )
    admission.create_validating_admission_policy_binding(
        client.V1ValidatingAdmissionPolicyBinding.model_validate(
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingAdmissionPolicyBinding",
                "metadata": {"name": name},
                "spec": {
                    "policyName": name,
                    "validationActions": ["Deny"],
                    "matchResources": {
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": env.namespace}}
                    },
                },
            }
        )
    )
    try:
        env.create_gitrepo("refused", HTTPS)
        await env.start(f"watch:\n  namespaces: [{env.namespace}]\n")
        await env.wait_indexed("refused")
        # The policy takes a moment to be loaded by the apiserver; retry until the refusal is seen.
        deadline = time.monotonic() + 20
        while True:
            commit = sha(f"refused-{time.monotonic()}")
            resp = await env.send(delivery("github", https_url=HTTPS, ssh_url=SSH, commit=commit, secret=SECRET))
            assert resp.status == 200, resp.body
            (entry,) = resp.body["updated"]
            if "pollingIntervalError" in entry or time.monotonic() > deadline:
                break
            # The interval went through before the policy was active: remove it and try again.
            env.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                env.namespace,
                PLURAL,
                "refused",
                {"spec": {"pollingInterval": None}, "metadata": {"annotations": {ANNOTATION: None}}},
            )
            await asyncio.sleep(0.5)
        assert "hourly polling is not allowed" in entry["pollingIntervalError"], entry
        assert "pollingIntervalSet" not in entry
        assert env.webhook_commit("refused") == commit  # the commit itself was recorded
        assert "pollingInterval" not in env.gitrepo("refused")["spec"]
        metrics = await env.metrics()
        assert 'fleet_webhook_polling_interval_changes_total{action="rejected"} 1.0' in metrics
    finally:
        admission.delete_validating_admission_policy_binding(name)
        admission.delete_validating_admission_policy(name)


async def test_fallback_reverts_only_what_fleet_webhook_set(env: ReceiverEnv) -> None:
    for name in ("ours", "gitops-ssa", "gitops-csa"):
        env.create_gitrepo(name, HTTPS)
    await env.start(f"watch:\n  namespaces: [{env.namespace}]\npolling:\n  webhookInterval: 1h\n  fallbackAfter: 2s\n")
    await env.wait_indexed("ours", "gitops-ssa", "gitops-csa")
    resp = await env.send(delivery("github", https_url=HTTPS, ssh_url=SSH, commit=sha("fallback"), secret=SECRET))
    assert resp.names("updated") == {"ours", "gitops-ssa", "gitops-csa"}
    assert all(e.get("pollingIntervalSet") == "1h" for e in resp.body["updated"])

    # A GitOps tool applies the same interval server-side: it now shares the field.
    env.custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        env.namespace,
        PLURAL,
        "gitops-ssa",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "GitRepo",
            "metadata": {"name": "gitops-ssa", "namespace": env.namespace},
            "spec": {"repo": HTTPS, "pollingInterval": "1h"},
        },
        field_manager="argocd-controller",
        force=True,
        _content_type="application/apply-patch+yaml",
    )
    # A client-side apply (kubectl apply, Argo CD without SSA) records its manifest in an annotation.
    applied = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GitRepo", "spec": {"repo": HTTPS, "pollingInterval": "1h"}}
    env.custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        env.namespace,
        PLURAL,
        "gitops-csa",
        {"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": json.dumps(applied)}}},
    )
    ssa = env.gitrepo("gitops-ssa")
    managers = {
        m["manager"]
        for m in ssa["metadata"]["managedFields"]
        if "f:pollingInterval" in m.get("fieldsV1", {}).get("f:spec", {})
    }
    assert managers == {"fleet-webhook", "argocd-controller"}

    async with fallback_running(env):
        await wait_for(lambda: "pollingInterval" not in env.gitrepo("ours")["spec"], 15, "our interval reverted")
        await asyncio.sleep(3)  # two more fallback passes
    assert env.gitrepo("gitops-ssa")["spec"]["pollingInterval"] == "1h"
    assert env.gitrepo("gitops-csa")["spec"]["pollingInterval"] == "1h"
    assert ANNOTATION not in env.gitrepo("ours")["metadata"].get("annotations", {})
    metrics = await env.metrics()
    assert 'fleet_webhook_polling_interval_changes_total{action="reverted"} 1.0' in metrics


# ------------------------------------------------------------------ Fleet <= v0.14: no lastWebhookTime


@pytest.fixture(scope="module")
def old_fleet_cp() -> Iterator[ControlPlane]:
    """A control plane of its own with the hand-written v0.14-shaped GitRepo CRD (same CRD name)."""
    with ControlPlane(bin_dir=find_tools_bin()) as cp:
        install_crds(cp.kubeconfig, [OLD_FLEET_CRD_DIR])
        yield cp


@pytest.fixture
async def old_env(old_fleet_cp: ControlPlane) -> AsyncIterator[ReceiverEnv]:
    with new_api_client(old_fleet_cp.kubeconfig) as api:
        core = client.CoreV1Api(api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="old-fleet")))
        e = ReceiverEnv(api, old_fleet_cp.kubeconfig, "old-fleet")
        e.create_secret("gitjob-webhook", secret_data("github", SECRET))
        yield e
        await e.stop()


async def test_without_last_webhook_time_the_fallback_counts_from_the_webhook_it_saw(old_env: ReceiverEnv) -> None:
    env = old_env
    env.create_gitrepo("old", HTTPS)
    await env.start(f"watch:\n  namespaces: [{env.namespace}]\npolling:\n  webhookInterval: 1h\n  fallbackAfter: 5s\n")
    await env.wait_indexed("old")
    async with fallback_running(env):
        await asyncio.sleep(5.5)  # past fallbackAfter since the process started: only the webhook's time counts
        sent = time.monotonic()
        resp = await env.send(delivery("github", https_url=HTTPS, ssh_url=SSH, commit=sha("old"), secret=SECRET))
        assert resp.names("updated") == {"old"}
        stored = env.gitrepo("old")
        assert "lastWebhookTime" not in stored.get("status", {})  # pruned: this CRD does not declare it
        assert stored["spec"]["pollingInterval"] == "1h"
        await asyncio.sleep(3)  # several fallback passes (every 1 s here), all before fallbackAfter
        assert env.gitrepo("old")["spec"].get("pollingInterval") == "1h"
        await wait_for(lambda: "pollingInterval" not in env.gitrepo("old")["spec"], 10, "reverted after fallbackAfter")
        assert time.monotonic() - sent >= 5
