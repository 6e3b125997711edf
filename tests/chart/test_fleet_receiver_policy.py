"""The optional NetworkPolicy that closes Fleet's own receiver (gitjob pods, port 8080), with the real helm.

Fleet's receiver stays reachable in-cluster on Service `gitjob:80` after the Ingress moves to
fleet-webhook, and accepts unsigned deliveries; `fleetReceiverNetworkPolicy.enabled` closes it while
Fleet's metrics port stays open. There is no CNI here: what is checked is the rendered policy and that
the real API server accepts and stores it.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client

from tests.chart.support import CHART, Helm, by_kind, present, unique
from tools.controlplane import ControlPlane

ON = "fleetReceiverNetworkPolicy.enabled=true"


def gitjob_policy(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in by_kind(manifests, "NetworkPolicy") if m["metadata"]["name"].endswith("-close-gitjob")]


def test_off_by_default(helm: Helm) -> None:
    assert gitjob_policy(helm.template()) == []
    # The receiver's own policy is unaffected either way.
    assert len(by_kind(helm.template(), "NetworkPolicy")) == 1


def test_selects_fleets_gitjob_pods_and_leaves_only_the_metrics_port_open(helm: Helm) -> None:
    (policy,) = gitjob_policy(helm.template(sets=[ON]))
    spec = policy["spec"]
    assert policy["metadata"]["namespace"] == "cattle-fleet-system"
    assert spec["podSelector"] == {"matchLabels": {"app": "gitjob"}}
    assert spec["policyTypes"] == ["Ingress"]  # egress untouched: gitjob still reaches git hosts and the API
    assert spec["ingress"] == [{"ports": [{"port": 8081, "protocol": "TCP"}]}]
    ports = [p["port"] for rule in spec["ingress"] for p in rule["ports"]]
    assert 8080 not in ports


def test_no_open_ports_denies_every_ingress(helm: Helm) -> None:
    (policy,) = gitjob_policy(helm.template(sets=[ON, "fleetReceiverNetworkPolicy.openPorts=null"]))
    assert policy["spec"]["ingress"] == []


def test_a_custom_selector_and_ports(helm: Helm) -> None:
    sets = [ON, "fleetReceiverNetworkPolicy.podSelector.fleet\\.cattle\\.io/shard-id=shard-a"]
    sets += ["fleetReceiverNetworkPolicy.openPorts[0].port=9090"]
    (policy,) = gitjob_policy(helm.template(sets=sets))
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app": "gitjob", "fleet.cattle.io/shard-id": "shard-a"}
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": 9090, "protocol": "TCP"}]


def test_opening_port_8080_is_rejected_by_the_values_schema(helm: Helm) -> None:
    stderr = helm.fails(
        "template", "fw", str(CHART), "--set", ON, "--set", "fleetReceiverNetworkPolicy.openPorts[0].port=8080"
    )
    assert "fleetReceiverNetworkPolicy/openPorts/0/port" in stderr


def test_the_api_server_stores_the_policy(
    helm: Helm, control_plane: ControlPlane, kube_api: client.ApiClient, release_namespace: str
) -> None:
    release = unique("fw")
    helm.run(
        "install",
        release,
        str(CHART),
        "--namespace",
        release_namespace,
        "--set",
        ON,
        kubeconfig=control_plane.kubeconfig,
    )
    policies = client.NetworkingV1Api(kube_api).list_namespaced_network_policy(release_namespace).items
    (stored,) = [p for p in policies if present(present(p.metadata).name).endswith("-close-gitjob")]
    spec = present(stored.spec)
    assert present(spec.pod_selector).match_labels == {"app": "gitjob"}
    assert [(p.port, p.protocol) for rule in present(spec.ingress) for p in present(rule.ports)] == [(8081, "TCP")]
