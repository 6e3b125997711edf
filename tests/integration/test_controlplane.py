"""The test control plane behaves like a real cluster for what fleet-webhook relies on: the GitRepo CRD
keeps Fleet's other fields, status is a subresource, RBAC is enforced, /version is truthful and data
survives restarts."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tools.controlplane import REPO_ROOT, ControlPlane, new_api_client

GROUP, VERSION, PLURAL = "fleet.cattle.io", "v1alpha1", "gitrepos"
SHA = "9f2c1e4b7a0d3c5e8f1a2b3c4d5e6f708192a3b4"
STATUS_PATCH = {"status": {"webhookCommit": SHA, "lastWebhookTime": "2026-01-01T00:00:00Z"}}
MERGE_PATCH = "application/merge-patch+json"

T = TypeVar("T")


def gitrepo(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "GitRepo",
        "metadata": {"name": name},
        "spec": {"repo": "https://github.com/example/fleet-apps", "branch": "main", **spec},
    }


def get_repo(objs: client.CustomObjectsApi, namespace: str, name: str = "apps") -> dict[str, Any]:
    return cast(dict[str, Any], objs.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))


def eventually(fn: Callable[[], T], timeout: float = 10.0) -> T:
    """Retry `fn` until it stops raising (RBAC and reconnects settle asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def status_code(fn: Callable[[], object]) -> int:
    try:
        fn()
    except ApiException as exc:
        return int(exc.status)
    return 200


def test_gitrepo_keeps_unknown_fields_and_status_is_a_subresource(kube_api: client.ApiClient, namespace: str) -> None:
    objs = client.CustomObjectsApi(kube_api)
    body = gitrepo(
        "apps",
        paths=["deploy/prod"],
        pollingInterval="1m30s",
        correctDrift={"enabled": True},  # a Fleet field this CRD does not type
        targets=[{"clusterSelector": {"matchLabels": {"env": "prod"}}}],
    )
    objs.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

    got = get_repo(objs, namespace)
    assert got["spec"]["repo"] == "https://github.com/example/fleet-apps"
    assert got["spec"]["branch"] == "main"
    assert got["spec"]["correctDrift"] == {"enabled": True}
    assert got["spec"]["targets"] == [{"clusterSelector": {"matchLabels": {"env": "prod"}}}]

    objs.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "apps", STATUS_PATCH, _content_type=MERGE_PATCH
    )
    got = get_repo(objs, namespace)
    assert got["status"]["webhookCommit"] == SHA
    assert got["status"]["lastWebhookTime"] == "2026-01-01T00:00:00Z"
    generation = got["metadata"]["generation"]

    # Status sent to the main resource is ignored (status subresource semantics) ...
    objs.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "apps",
        {"spec": {"branch": "release"}, "status": {"webhookCommit": "0" * 40}},
        _content_type=MERGE_PATCH,
    )
    got = get_repo(objs, namespace)
    assert got["spec"]["branch"] == "release"
    assert got["status"]["webhookCommit"] == SHA
    assert got["metadata"]["generation"] == generation + 1
    # ... and a status patch does not bump the generation.
    objs.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "apps", {"status": {"commit": SHA}}, _content_type=MERGE_PATCH
    )
    got = get_repo(objs, namespace)
    assert got["metadata"]["generation"] == generation + 1
    assert got["status"] == {"commit": SHA, "webhookCommit": SHA, "lastWebhookTime": "2026-01-01T00:00:00Z"}


@pytest.mark.parametrize("interval", ["0", "15s", "1m30s", "1.5h", "250ms", "10µs"])
def test_polling_interval_accepts_zero_and_go_durations(
    kube_api: client.ApiClient, namespace: str, interval: str
) -> None:
    objs = client.CustomObjectsApi(kube_api)
    objs.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, gitrepo("poll", pollingInterval=interval))
    assert get_repo(objs, namespace, "poll")["spec"]["pollingInterval"] == interval  # stored as written


@pytest.mark.parametrize("interval", ["", "5", "1 m", "one minute", "-1s", "1d"])
def test_polling_interval_rejects_non_durations(kube_api: client.ApiClient, namespace: str, interval: str) -> None:
    objs = client.CustomObjectsApi(kube_api)
    with pytest.raises(ApiException) as err:
        objs.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, gitrepo("poll", pollingInterval=interval)
        )
    assert err.value.status == 422
    assert "spec.pollingInterval" in str(err.value.body)


def test_rbac_is_enforced_for_service_account_tokens(
    control_plane: ControlPlane, kube_api: client.ApiClient, namespace: str
) -> None:
    client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, gitrepo("apps")
    )
    sa_kubeconfig = control_plane.kubeconfig_for_service_account(namespace, "webhook")
    with new_api_client(sa_kubeconfig) as sa_api:
        sa_objs = client.CustomObjectsApi(sa_api)

        def get() -> dict[str, Any]:
            return get_repo(sa_objs, namespace)

        def patch_status() -> Any:
            return sa_objs.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, "apps", STATUS_PATCH, _content_type=MERGE_PATCH
            )

        # Authenticated (not 401) but not authorized.
        assert status_code(get) == 403
        assert status_code(patch_status) == 403

        rbac = client.RbacAuthorizationV1Api(kube_api)
        rbac.create_namespaced_role(
            namespace,
            client.V1Role(
                metadata=client.V1ObjectMeta(name="webhook"),
                rules=[
                    client.V1PolicyRule(api_groups=[GROUP], resources=["gitrepos"], verbs=["get"]),
                    client.V1PolicyRule(api_groups=[GROUP], resources=["gitrepos/status"], verbs=["patch"]),
                ],
            ),
        )
        rbac.create_namespaced_role_binding(
            namespace,
            client.V1RoleBinding(
                metadata=client.V1ObjectMeta(name="webhook"),
                role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="webhook"),
                subjects=[client.RbacV1Subject(kind="ServiceAccount", name="webhook", namespace=namespace)],
            ),
        )
        patched = eventually(patch_status)
        assert patched["status"]["webhookCommit"] == SHA
        assert get()["status"]["webhookCommit"] == SHA
        # Only what the Role grants: the main resource stays read-only.
        assert (
            status_code(
                lambda: sa_objs.patch_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, "apps", {"spec": {"branch": "x"}}
                )
            )
            == 403
        )


def test_client_cert_users_and_groups(control_plane: ControlPlane, namespace: str) -> None:
    nobody = control_plane.kubeconfig_for_user("alice", ["developers"])
    with new_api_client(nobody) as api:
        assert status_code(lambda: client.CoreV1Api(api).list_namespaced_config_map(namespace)) == 403
    masters = control_plane.kubeconfig_for_user("root", ["system:masters"])
    with new_api_client(masters) as api:
        assert status_code(lambda: client.CoreV1Api(api).list_namespaced_config_map(namespace)) == 200


def test_version_is_truthfully_stamped(control_plane: ControlPlane, kube_api: client.ApiClient) -> None:
    info = client.VersionApi(kube_api).get_code()
    assert re.fullmatch(r"v1\.\d+\.\d+", info.git_version), info.git_version  # not v0.0.0-master+$Format
    assert (info.major, info.minor) == ("1", info.git_version.split(".")[1])

    binary = control_plane.bin_dir / "kube-apiserver"
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"Kubernetes {info.git_version}"

    pinned = re.search(r"^KUBE_VERSION=(\S+)$", (REPO_ROOT / "tools" / "build-tools.sh").read_text(), re.M)
    assert pinned is not None
    if binary.resolve().parent.name == f"kube-apiserver-{pinned[1]}":  # built by `make tools`
        assert info.git_version == pinned[1] == "v1.36.3"


def test_data_survives_apiserver_and_etcd_restarts(
    control_plane: ControlPlane, kube_api: client.ApiClient, namespace: str
) -> None:
    objs = client.CustomObjectsApi(kube_api)
    objs.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, gitrepo("apps"))
    objs.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "apps", STATUS_PATCH, _content_type=MERGE_PATCH
    )

    server = control_plane.server
    control_plane.stop_apiserver()
    try:
        assert not control_plane.running()["kube-apiserver"]
        with pytest.raises(Exception):  # noqa: B017, PT011 - connection refused, whatever urllib3 calls it
            client.VersionApi(kube_api).get_code(_request_timeout=2)
    finally:
        control_plane.start_apiserver()
    assert control_plane.server == server  # same port: clients keep working
    got = eventually(lambda: get_repo(objs, namespace))
    assert got["status"]["webhookCommit"] == SHA

    control_plane.restart_etcd()
    got = eventually(lambda: get_repo(objs, namespace))
    assert got["spec"]["repo"] == "https://github.com/example/fleet-apps"
    assert got["status"]["webhookCommit"] == SHA
    # Writes work again too.
    eventually(
        lambda: objs.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, "apps", {"status": {"commit": SHA}}, _content_type=MERGE_PATCH
        )
    )


def test_kubeconfig_is_self_contained(control_plane: ControlPlane, tmp_path: Path) -> None:
    copy = tmp_path / "kubeconfig"
    copy.write_bytes(control_plane.kubeconfig.read_bytes())
    with new_api_client(copy) as api:
        assert client.VersionApi(api).get_code().git_version.startswith("v1.")
    assert control_plane.ca_file.read_text().startswith("-----BEGIN CERTIFICATE-----")
