"""RBAC exactly enough: the real receiver, running as the chart's ServiceAccount, does its whole job and nothing more.

Each test installs the chart into the control plane, takes a token for the ServiceAccount the chart
created, and builds the receiver the way `fleet-webhook serve` does (controller.runtime.build through
tests/integration/receiver_env.ReceiverEnv) with the config the chart rendered into its ConfigMap.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from controller.index import MANAGED_INTERVAL_ANNOTATION
from controller.kube import GROUP, PLURAL, VERSION
from tests.chart.support import CHART, Helm, create_namespace, create_secret, present, unique
from tests.integration.receiver_env import ReceiverEnv, gitrepo_body
from tests.support import delivery, sha
from tools.controlplane import ControlPlane, new_api_client

GLOBAL_SECRET = "global-secret-1f3c"
GITREPO_SECRET = "gitrepo-secret-8d2e"


class Release:
    """One installed release and its ServiceAccount's identity."""

    def __init__(self, helm: Helm, cp: ControlPlane, api: client.ApiClient, namespace: str, values: str) -> None:
        self.name = unique("fw")
        self.namespace = namespace
        self.fullname = f"{self.name}-fleet-webhook"
        values_file = Path(cp.tmpdir) / f"{self.name}-values.yaml"
        values_file.write_text(values)
        helm.run(
            "install", self.name, str(CHART), "--namespace", namespace, "-f", str(values_file), kubeconfig=cp.kubeconfig
        )
        self.config_text: str = present(
            client.CoreV1Api(api).read_namespaced_config_map(self.fullname, namespace).data
        )["config.yaml"]
        # The ServiceAccount must come from the chart (create=False fails if it does not exist).
        self.kubeconfig = cp.kubeconfig_for_service_account(namespace, self.fullname, create=False)


@pytest.fixture
def sa_api() -> Iterator[list[client.ApiClient]]:
    """Closes the ServiceAccount API clients a test opens."""
    opened: list[client.ApiClient] = []
    yield opened
    for api in opened:
        api.close()


@pytest.fixture
async def receivers() -> AsyncIterator[list[ReceiverEnv]]:
    started: list[ReceiverEnv] = []
    yield started
    for env in started:
        await env.stop()


def refused(call: Any, *args: Any, **kwargs: Any) -> int:
    """Status of a call that must fail; the test fails if it succeeds."""
    try:
        call(*args, **kwargs)
    except client.ApiException as exc:
        return int(exc.status)
    raise AssertionError(f"{getattr(call, '__name__', call)} succeeded for the receiver's ServiceAccount")


async def events_on(api: client.ApiClient, namespace: str, name: str, within: float = 5.0) -> list[Any]:
    """Events recorded on a GitRepo (they are sent in the background after the answer)."""
    deadline = time.monotonic() + within
    while True:
        events = [
            e
            for e in client.CoreV1Api(api).list_namespaced_event(namespace).items
            if e.involved_object.name == name and e.involved_object.kind == "GitRepo"
        ]
        if events or time.monotonic() > deadline:
            return events
        await asyncio.sleep(0.05)


async def test_namespaced_receiver_does_its_job_and_nothing_outside_its_namespaces(
    helm: Helm,
    control_plane: ControlPlane,
    kube_api: client.ApiClient,
    release_namespace: str,
    receivers: list[ReceiverEnv],
    sa_api: list[client.ApiClient],
) -> None:
    team = create_namespace(kube_api, unique("team"))
    outside = create_namespace(kube_api, unique("other"))
    release = Release(
        helm,
        control_plane,
        kube_api,
        release_namespace,
        f"""
config:
  watch: {{namespaces: [{team}]}}
  secrets: {{gitRepoSecrets: false}}
webhookSecret:
  create: true
  data: {{github: {GLOBAL_SECRET}}}
""",
    )
    repo = "https://github.com/example-org/team-apps"
    env = ReceiverEnv(kube_api, release.kubeconfig, release_namespace)
    receivers.append(env)
    env.create_gitrepo("apps", repo, namespace=team)
    env.create_gitrepo("apps", repo, namespace=outside)
    create_secret(kube_api, release_namespace, "unrelated", {"token": "x"})
    create_secret(kube_api, team, "team-credentials", {"github": "x"})

    # list + watch GitRepos (the index syncs), read the webhook Secret, patch status and spec, create an Event.
    await env.start(release.config_text)
    await env.wait_indexed("apps", namespace=team)
    commit = sha("namespaced-1")
    resp = await env.send(delivery("github", https_url=repo, commit=commit, secret=GLOBAL_SECRET))
    assert resp.status == 200, resp.body
    assert resp.names("updated") == {"apps"}
    stored = env.gitrepo("apps", team)
    assert stored["status"]["webhookCommit"] == commit
    assert stored["spec"]["pollingInterval"] == "1h"
    assert stored["metadata"]["annotations"][MANAGED_INTERVAL_ANNOTATION] == "1h"
    events = await events_on(kube_api, team, "apps")
    assert [e.reason for e in events] == ["WebhookCommit"]
    assert env.webhook_commit("apps", outside) is None  # never indexed: outside the watched namespaces

    # ... and is refused everything else.
    sa = new_api_client(release.kubeconfig)
    sa_api.append(sa)
    core, custom = client.CoreV1Api(sa), client.CustomObjectsApi(sa)
    assert refused(core.read_namespaced_secret, "unrelated", release_namespace) == 403
    assert refused(core.read_namespaced_secret, "team-credentials", team) == 403  # gitRepoSecrets: false
    assert refused(core.list_namespaced_secret, release_namespace) == 403
    status_patch = {"status": {"webhookCommit": sha("forged")}}
    assert (
        refused(custom.patch_namespaced_custom_object_status, GROUP, VERSION, outside, PLURAL, "apps", status_patch)
        == 403
    )
    spec_patch = {"spec": {"pollingInterval": "1h"}}
    assert refused(custom.patch_namespaced_custom_object, GROUP, VERSION, outside, PLURAL, "apps", spec_patch) == 403
    assert refused(custom.list_cluster_custom_object, GROUP, VERSION, PLURAL) == 403
    assert (
        refused(custom.create_namespaced_custom_object, GROUP, VERSION, team, PLURAL, gitrepo_body("new", repo)) == 403
    )
    event = client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name="x."),
        involved_object=client.V1ObjectReference(kind="GitRepo", name="apps", namespace=outside),
    )
    assert refused(core.create_namespaced_event, outside, event) == 403


async def test_cluster_wide_receiver_reads_gitrepo_secrets_but_cannot_list_secrets(
    helm: Helm,
    control_plane: ControlPlane,
    kube_api: client.ApiClient,
    release_namespace: str,
    receivers: list[ReceiverEnv],
    sa_api: list[client.ApiClient],
) -> None:
    """Default config: every namespace watched, a GitRepo's spec.webhookSecret honoured (get on any Secret)."""
    ns_one = create_namespace(kube_api, unique("one"))
    ns_two = create_namespace(kube_api, unique("two"))
    release = Release(
        helm,
        control_plane,
        kube_api,
        release_namespace,
        f"webhookSecret:\n  create: true\n  data: {{github: {GLOBAL_SECRET}}}\n",
    )
    repo_one = "https://github.com/example-org/one"
    repo_two = "https://github.com/example-org/two"
    env = ReceiverEnv(kube_api, release.kubeconfig, release_namespace)
    receivers.append(env)
    create_secret(kube_api, ns_one, "own-hook", {"github": GITREPO_SECRET})
    env.create_gitrepo("own-secret", repo_one, namespace=ns_one, webhookSecret="own-hook")
    env.create_gitrepo("global-secret", repo_two, namespace=ns_two)

    await env.start(release.config_text)
    await env.wait_indexed("own-secret", namespace=ns_one)
    await env.wait_indexed("global-secret", namespace=ns_two)
    own = await env.send(delivery("github", https_url=repo_one, commit=sha("one"), secret=GITREPO_SECRET))
    assert own.status == 200, own.body
    assert own.names("updated") == {"own-secret"}
    glob = await env.send(delivery("github", https_url=repo_two, commit=sha("two"), secret=GLOBAL_SECRET))
    assert glob.status == 200, glob.body
    assert env.webhook_commit("own-secret", ns_one) == sha("one")
    assert env.webhook_commit("global-secret", ns_two) == sha("two")
    assert env.gitrepo("global-secret", ns_two)["spec"]["pollingInterval"] == "1h"
    assert [e.reason for e in await events_on(kube_api, ns_two, "global-secret")] == ["WebhookCommit"]

    sa = new_api_client(release.kubeconfig)
    sa_api.append(sa)
    core = client.CoreV1Api(sa)
    assert refused(core.list_secret_for_all_namespaces) == 403  # get by name only, never list or watch
    assert refused(core.list_namespaced_secret, ns_one) == 403
    assert refused(core.delete_namespaced_secret, "own-hook", ns_one) == 403
    assert refused(client.AppsV1Api(sa).list_namespaced_deployment, release_namespace) == 403
    assert (
        refused(
            client.CustomObjectsApi(sa).delete_namespaced_custom_object, GROUP, VERSION, ns_one, PLURAL, "own-secret"
        )
        == 403
    )


def can(
    api: client.ApiClient, service_account: tuple[str, str], verb: str, resource: str, ns: str, name: str = ""
) -> bool:
    """SubjectAccessReview for a ServiceAccount; `resource` is `[group/]plural[/subresource]`."""
    namespace, sa = service_account
    parts = resource.split("/")
    group = parts.pop(0) if "." in parts[0] else ""
    plural, subresource = parts[0], (parts[1] if len(parts) > 1 else None)
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=f"system:serviceaccount:{namespace}:{sa}",
            groups=["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"],
            resource_attributes=client.V1ResourceAttributes(
                group=group,
                resource=plural,
                subresource=subresource,
                verb=verb,
                namespace=ns or None,
                name=name or None,
            ),
        )
    )
    result = client.AuthorizationV1Api(api).create_subject_access_review(review)
    return bool(present(result.status).allowed)


def test_switches_off_mean_no_spec_writes_and_no_unnamed_secrets(
    helm: Helm, control_plane: ControlPlane, kube_api: client.ApiClient, release_namespace: str
) -> None:
    """ci/existing-secret-values.yaml: polling.manage, sharedOrder and gitRepoSecrets false, a Secret by name."""
    values = (CHART / "ci" / "existing-secret-values.yaml").read_text()
    release = Release(helm, control_plane, kube_api, release_namespace, values)
    anywhere = create_namespace(kube_api, unique("any"))
    gitrepos = "fleet.cattle.io/gitrepos"

    def allowed(verb: str, resource: str, ns: str, name: str = "") -> bool:
        return can(kube_api, (release_namespace, release.fullname), verb, resource, ns, name)

    assert allowed("list", gitrepos, "")  # cluster-wide watch
    assert allowed("watch", gitrepos, anywhere)
    assert allowed("patch", gitrepos + "/status", anywhere, "x")
    assert allowed("create", "events", anywhere)
    assert allowed("get", "secrets", release_namespace, "fleet-webhook-credentials")
    assert not allowed("patch", gitrepos, anywhere, "x")  # polling.manage and settings.sharedOrder: false
    assert not allowed("update", gitrepos + "/status", anywhere, "x")
    assert not allowed("get", "secrets", anywhere, "x")  # gitRepoSecrets: false
    assert not allowed("get", "secrets", release_namespace, "gitjob-webhook")
    assert not allowed("patch", "events", anywhere, "x")
    assert not allowed("delete", gitrepos, anywhere, "x")
