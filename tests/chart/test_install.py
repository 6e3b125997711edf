"""The chart against a real kube-apiserver: server-side dry runs, install, upgrade and hot reload of the config.

There is no kubelet or controller-manager: pods never run and `--wait` is never used. What is checked
is what the API server accepts and stores, and what the receiver does with the ConfigMap it would see.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from controller.config import load_file
from controller.reload import ConfigHolder, ConfigReloader, file_digest
from tests.chart.support import CHART, CI_VALUES, Helm, create_namespace, present, unique
from tools.controlplane import ControlPlane

TEAM_NAMESPACES = ("team-a", "team-b")  # named by ci/namespaced-values.yaml


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda p: p.name if p else "chart-defaults")
def test_server_side_dry_run_then_install(
    helm: Helm,
    control_plane: ControlPlane,
    kube_api: client.ApiClient,
    release_namespace: str,
    values: Path | None,
) -> None:
    """Every scenario: the API server accepts every object in a dry run, then for real."""
    for namespace in TEAM_NAMESPACES:
        create_namespace(kube_api, namespace)
    release = unique("fw")
    args = ["install", release, str(CHART), "--namespace", release_namespace, *(["-f", str(values)] if values else [])]
    dry = helm.run(*args, "--dry-run=server", kubeconfig=control_plane.kubeconfig).stdout
    assert "kind: Deployment" in dry
    assert "STATUS: pending-install" in dry
    core = client.CoreV1Api(kube_api)
    helm_records = f"owner=helm,name={release}"
    assert core.list_namespaced_secret(release_namespace, label_selector=helm_records).items == []

    assert "STATUS: deployed" in helm.run(*args, kubeconfig=control_plane.kubeconfig).stdout
    mine = f"app.kubernetes.io/instance={release}"
    (deployment,) = client.AppsV1Api(kube_api).list_namespaced_deployment(release_namespace, label_selector=mine).items
    configmaps = core.list_namespaced_config_map(release_namespace, label_selector=mine).items
    (configmap,) = [c for c in configmaps if "config.yaml" in (c.data or {})]  # not the Grafana dashboard
    volumes = {v.name: v for v in present(present(deployment.spec.template.spec).volumes)}
    assert present(volumes["config"].config_map).name == present(configmap.metadata).name


def helm_install(helm: Helm, cp: ControlPlane, verb: str, release: str, namespace: str, *sets: str) -> None:
    args = [verb, release, str(CHART), "--namespace", namespace]
    for item in sets:
        args += ["--set", item]
    helm.run(*args, kubeconfig=cp.kubeconfig)


def test_install_then_upgrade_reconfigures_without_a_rollout(
    helm: Helm, control_plane: ControlPlane, kube_api: client.ApiClient, release_namespace: str
) -> None:
    release = unique("fw")
    name = f"{release}-fleet-webhook"
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    rbac = client.RbacAuthorizationV1Api(kube_api)

    helm_install(helm, control_plane, "install", release, release_namespace)
    installed = yaml.safe_load(present(core.read_namespaced_config_map(name, release_namespace).data)["config.yaml"])
    assert installed == {"polling": {"manage": False}, "secrets": {"gitRepoSecrets": False}}  # the chart's defaults
    assert present(apps.read_namespaced_deployment(name, release_namespace).metadata).generation == 1
    assert rbac.read_cluster_role(f"{release_namespace}-{name}").rules

    # Config only: the ConfigMap changes, the Deployment's spec does not (no restart; hot reload).
    helm_install(helm, control_plane, "upgrade", release, release_namespace, "config.polling.webhookInterval=2h")
    assert (
        "webhookInterval: 2h" in present(core.read_namespaced_config_map(name, release_namespace).data)["config.yaml"]
    )
    assert present(apps.read_namespaced_deployment(name, release_namespace).metadata).generation == 1

    # A setting (environment) is part of the pod template: the Deployment rolls.
    helm_install(
        helm,
        control_plane,
        "upgrade",
        release,
        release_namespace,
        "config.polling.webhookInterval=2h",
        "settings.logLevel=debug",
    )
    deployment = apps.read_namespaced_deployment(name, release_namespace)
    assert present(deployment.metadata).generation == 2
    env = {e.name: e.value for e in present(present(deployment.spec.template.spec).containers[0].env)}
    assert env["FLEET_WEBHOOK_LOG_LEVEL"] == "debug"

    # Narrowing the watch to one namespace swaps the ClusterRole for a Role there.
    team = create_namespace(kube_api, unique("team"))
    helm_install(helm, control_plane, "upgrade", release, release_namespace, f"config.watch.namespaces={{{team}}}")
    assert rbac.list_cluster_role(label_selector=f"app.kubernetes.io/instance={release}").items == []
    assert rbac.read_namespaced_role(name, team).rules
    history = helm.run("history", release, "-n", release_namespace, kubeconfig=control_plane.kubeconfig).stdout
    assert len(history.strip().splitlines()) == 1 + 4  # header + 4 revisions


class KubeletVolume:
    """A ConfigMap volume laid out as the kubelet's atomic writer does: files -> ..data -> ..<timestamp>/."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.generation = 0

    def write(self, data: dict[str, str]) -> None:
        self.generation += 1
        stamp = self.root / f"..2026_11_25_00_00_{self.generation:02d}.000000000"
        stamp.mkdir()
        for key, value in data.items():
            (stamp / key).write_text(value)
        tmp_link = self.root / "..data_tmp"
        tmp_link.symlink_to(stamp.name)
        os.replace(tmp_link, self.root / "..data")  # the atomic swap
        for key in data:
            link = self.root / key
            if not link.is_symlink():
                link.symlink_to(f"..data/{key}")


async def test_upgraded_configmap_is_hot_reloaded_by_the_receiver(
    helm: Helm, control_plane: ControlPlane, kube_api: client.ApiClient, release_namespace: str, tmp_path: Path
) -> None:
    """`helm upgrade` -> new ConfigMap data -> kubelet swap -> the receiver's reloader installs it, no restart."""
    release = unique("fw")
    name = f"{release}-fleet-webhook"
    core = client.CoreV1Api(kube_api)
    helm_install(helm, control_plane, "install", release, release_namespace, "config.polling.webhookInterval=1h")
    volume = KubeletVolume(tmp_path)
    volume.write(present(core.read_namespaced_config_map(name, release_namespace).data))
    config_path = tmp_path / "config.yaml"  # FLEET_WEBHOOK_CONFIG, relative to the mount
    holder = ConfigHolder(load_file(config_path), file_digest(config_path))
    results: list[bool] = []
    reloader = ConfigReloader(config_path, holder, results.append, debounce_ms=50)
    task = asyncio.create_task(reloader.run())
    try:
        await asyncio.sleep(0.3)  # let the watcher start
        assert holder.current.polling.webhook_interval == "1h"
        helm_install(helm, control_plane, "upgrade", release, release_namespace, "config.polling.webhookInterval=3h")
        volume.write(present(core.read_namespaced_config_map(name, release_namespace).data))
        deadline = time.monotonic() + 5
        while holder.current.polling.webhook_interval != "3h":
            assert time.monotonic() < deadline, f"config not reloaded; reload results {results}"
            await asyncio.sleep(0.05)
        assert results == [True]
    finally:
        reloader.stop()
        await asyncio.wait_for(task, 5)


@pytest.mark.parametrize("values", [None, CHART / "ci" / "full-values.yaml"], ids=["default", "full"])
def test_pod_is_admitted_under_pod_security_restricted(
    helm: Helm, kube_api: client.ApiClient, values: Path | None
) -> None:
    """The Deployment's pod, created (dry run) in a namespace enforcing the `restricted` Pod Security Standard."""
    namespace = unique("psa")
    core = client.CoreV1Api(kube_api)
    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=namespace, labels={"pod-security.kubernetes.io/enforce": "restricted"})
        )
    )
    manifests = helm.template(values=[values] if values else [], namespace=namespace)
    (deployment,) = [m for m in manifests if m["kind"] == "Deployment"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "receiver", "namespace": namespace},
        "spec": deployment["spec"]["template"]["spec"],
    }
    # The client validates a plain dict body into V1Pod itself (pydantic validate_call); done here so the
    # argument has the declared type.
    created = core.create_namespaced_pod(namespace, client.V1Pod.model_validate(pod), dry_run="All")
    assert present(created.metadata).name == "receiver"
    # The namespace really enforces: one relaxed field is refused.
    pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    with pytest.raises(client.ApiException) as refused:
        core.create_namespaced_pod(namespace, client.V1Pod.model_validate(pod), dry_run="All")
    assert refused.value.status == 403
    assert 'violates PodSecurity "restricted' in json.loads(present(refused.value.body))["message"]
