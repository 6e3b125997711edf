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
        self.global_secret = "gitjob-webhook"  # the default config.secrets.source
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
  polling: {{manage: true}}
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


async def test_default_install_records_pushes_through_status_only_and_reads_one_secret(
    helm: Helm,
    control_plane: ControlPlane,
    kube_api: client.ApiClient,
    release_namespace: str,
    receivers: list[ReceiverEnv],
    sa_api: list[client.ApiClient],
) -> None:
    """Empty config (issue 22, part 6): the receiver does its job with gitrepos get/list/watch, gitrepos/status
    patch, events create and the one named Secret; patching a GitRepo itself or reading any other Secret is 403."""
    ns_one = create_namespace(kube_api, unique("one"))
    ns_two = create_namespace(kube_api, unique("two"))
    release = Release(
        helm,
        control_plane,
        kube_api,
        release_namespace,
        f"webhookSecret:\n  create: true\n  data: {{github: {GLOBAL_SECRET}}}\n",  # values only; config empty
    )
    repo_one = "https://github.com/example-org/one"
    repo_two = "https://github.com/example-org/two"
    env = ReceiverEnv(kube_api, release.kubeconfig, release_namespace)
    receivers.append(env)
    create_secret(kube_api, ns_one, "own-hook", {"github": GITREPO_SECRET})
    create_secret(kube_api, release_namespace, "unrelated", {"token": "x"})
    env.create_gitrepo("one", repo_one, namespace=ns_one)
    env.create_gitrepo("two", repo_two, namespace=ns_two)

    await env.start(release.config_text)
    await env.wait_indexed("one", namespace=ns_one)
    await env.wait_indexed("two", namespace=ns_two)
    for name, ns, repo in (("one", ns_one, repo_one), ("two", ns_two, repo_two)):
        before = env.gitrepo(name, ns)
        resp = await env.send(delivery("github", https_url=repo, commit=sha(name), secret=GLOBAL_SECRET))
        assert resp.status == 200, resp.body
        assert resp.names("updated") == {name}
        stored = env.gitrepo(name, ns)
        assert stored["status"]["webhookCommit"] == sha(name)
        assert stored["metadata"]["generation"] == before["metadata"]["generation"]  # the object is untouched
        assert "pollingInterval" not in stored["spec"]
        assert "annotations" not in stored["metadata"]  # no ledger, no polling marker
        ours = [m for m in stored["metadata"]["managedFields"] if m["manager"] == "fleet-webhook"]
        assert [m.get("subresource") for m in ours] == ["status"]  # every write it made went through /status
        assert [e.reason for e in await events_on(kube_api, ns, name)] == ["WebhookCommit"]

    sa = new_api_client(release.kubeconfig)
    sa_api.append(sa)
    core, custom = client.CoreV1Api(sa), client.CustomObjectsApi(sa)
    assert present(core.read_namespaced_secret(release.global_secret, release_namespace).data)  # the one it needs
    assert refused(core.read_namespaced_secret, "unrelated", release_namespace) == 403
    assert refused(core.read_namespaced_secret, "own-hook", ns_one) == 403  # no GitRepo secrets by default
    assert refused(core.list_secret_for_all_namespaces) == 403
    assert refused(core.list_namespaced_secret, release_namespace) == 403
    spec_patch = {"spec": {"pollingInterval": "1h"}}
    assert refused(custom.patch_namespaced_custom_object, GROUP, VERSION, ns_one, PLURAL, "one", spec_patch) == 403
    annotation = {"metadata": {"annotations": {"fleet-webhook.cattle.io/webhook-ledger": "{}"}}}
    assert refused(custom.patch_namespaced_custom_object, GROUP, VERSION, ns_two, PLURAL, "two", annotation) == 403
    assert refused(client.AppsV1Api(sa).list_namespaced_deployment, release_namespace) == 403
    assert refused(custom.delete_namespaced_custom_object, GROUP, VERSION, ns_one, PLURAL, "one") == 403


async def test_gitrepo_secrets_are_readable_only_in_the_namespaces_routes_serve(
    helm: Helm,
    control_plane: ControlPlane,
    kube_api: client.ApiClient,
    release_namespace: str,
    receivers: list[ReceiverEnv],
    sa_api: list[client.ApiClient],
) -> None:
    """config.secrets.gitRepoSecrets: true with a route for one namespace: a GitRepo's own Secret verifies
    there; the same get in a watched namespace no route serves is 403."""
    served = create_namespace(kube_api, unique("served"))
    unserved = create_namespace(kube_api, unique("unserved"))
    release = Release(
        helm,
        control_plane,
        kube_api,
        release_namespace,
        f"""
config:
  secrets: {{gitRepoSecrets: true}}
  watch: {{namespaces: [{served}, {unserved}]}}
  routes:
    - path: /
      prefix: true
      namespaces: [{served}]
webhookSecret:
  create: true
  data: {{github: {GLOBAL_SECRET}}}
""",
    )
    repo = "https://github.com/example-org/own"
    env = ReceiverEnv(kube_api, release.kubeconfig, release_namespace)
    receivers.append(env)
    create_secret(kube_api, served, "own-hook", {"github": GITREPO_SECRET})
    create_secret(kube_api, unserved, "own-hook", {"github": GITREPO_SECRET})
    env.create_gitrepo("own-secret", repo, namespace=served, webhookSecret="own-hook")

    await env.start(release.config_text)
    await env.wait_indexed("own-secret", namespace=served)
    resp = await env.send(delivery("github", https_url=repo, commit=sha("own"), secret=GITREPO_SECRET))
    assert resp.status == 200, resp.body
    assert env.webhook_commit("own-secret", served) == sha("own")

    sa = new_api_client(release.kubeconfig)
    sa_api.append(sa)
    core = client.CoreV1Api(sa)
    assert refused(core.read_namespaced_secret, "own-hook", unserved) == 403
    assert refused(core.list_namespaced_secret, served) == 403  # get by name only, never list
    assert refused(core.read_namespaced_secret, "own-hook", release_namespace) in (403, 404)  # no Role there
    assert refused(core.list_secret_for_all_namespaces) == 403


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
