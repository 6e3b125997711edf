"""The chart with several replicas: rollout strategy, PDB, spread, the optional HPA and shared order (real helm)."""

from __future__ import annotations

from typing import Any

from tests.chart.support import CHART, Helm, by_kind, one

REPLICAS = CHART / "ci" / "replicas-values.yaml"


def container_env(manifests: list[dict[str, Any]]) -> dict[str, str]:
    (container,) = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", "") for e in container["env"]}


def gitrepo_verbs(manifests: list[dict[str, Any]]) -> set[str]:
    role = one(manifests, "ClusterRole")
    return {v for r in role["rules"] if r["resources"] == ["gitrepos"] for v in r["verbs"]}


def test_defaults_roll_with_a_surge_and_one_replica_keeps_order_in_process(helm: Helm) -> None:
    manifests = helm.template()
    spec = one(manifests, "Deployment")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    # What tests/integration/test_rolling_upgrade.py needs: delay + grace inside the termination grace period.
    pod = spec["template"]["spec"]
    env = container_env(manifests)
    delay, grace = (
        float(env["FLEET_WEBHOOK_SHUTDOWN_DELAY_SECONDS"]),
        float(env["FLEET_WEBHOOK_SHUTDOWN_GRACE_SECONDS"]),
    )
    assert delay + grace < pod["terminationGracePeriodSeconds"]
    assert env["FLEET_WEBHOOK_SHARED_ORDER"] == "false"  # settings.sharedOrder empty, one replica
    assert "patch" not in gitrepo_verbs(manifests)  # no ledger annotation, no spec.pollingInterval: /status only
    assert one(manifests, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert "topologySpreadConstraints" not in pod  # one replica: nothing to spread
    assert by_kind(manifests, "HorizontalPodAutoscaler") == []


def test_several_replicas_get_a_soft_spread_over_hostname_and_zone(helm: Helm) -> None:
    manifests = helm.template(sets=["replicaCount=3"])
    deployment = one(manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    selector = deployment["spec"]["selector"]
    assert [(c["topologyKey"], c["whenUnsatisfiable"], c["maxSkew"]) for c in spread] == [
        ("kubernetes.io/hostname", "ScheduleAnyway", 1),
        ("topology.kubernetes.io/zone", "ScheduleAnyway", 1),
    ]
    assert all(c["labelSelector"] == selector for c in spread)


def test_a_given_spread_replaces_the_default_and_the_default_can_be_turned_off(helm: Helm) -> None:
    given = helm.template(
        sets=[
            "replicaCount=3",
            "topologySpreadConstraints[0].maxSkew=2",
            "topologySpreadConstraints[0].topologyKey=kubernetes.io/hostname",
            "topologySpreadConstraints[0].whenUnsatisfiable=DoNotSchedule",
        ]
    )
    (constraint,) = one(given, "Deployment")["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert (constraint["maxSkew"], constraint["whenUnsatisfiable"]) == (2, "DoNotSchedule")
    off = helm.template(sets=["replicaCount=3", "defaultTopologySpread=false"])
    assert "topologySpreadConstraints" not in one(off, "Deployment")["spec"]["template"]["spec"]


def test_autoscaling_owns_the_replica_count(helm: Helm) -> None:
    manifests = helm.template(values=[REPLICAS])
    deployment = one(manifests, "Deployment")
    assert "replicas" not in deployment["spec"]  # else every `helm upgrade` would reset what the HPA chose
    hpa = one(manifests, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 4)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"] == {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}
    assert len(deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]) == 2


def test_refused_combinations_name_the_values(helm: Helm) -> None:
    err = helm.fails("template", "fw", str(CHART), "--set", "replicaCount=2", "--set", "settings.sharedOrder=false")
    assert "settings.sharedOrder: false with several replicas" in err
    err = helm.fails(
        "template", "fw", str(CHART), "--set", "autoscaling.enabled=true", "--set", "autoscaling.minReplicas=6"
    )
    assert "autoscaling.minReplicas (6) must not be greater than autoscaling.maxReplicas (5)" in err
    err = helm.fails("template", "fw", str(CHART), "--set", "autoscaling.targetCPUUtilizationPercentage=0")
    assert "targetCPUUtilizationPercentage" in err


def test_several_replicas_share_order_unless_refused(helm: Helm) -> None:
    for sets in (["replicaCount=2"], ["autoscaling.enabled=true"], ["settings.sharedOrder=true"]):
        manifests = helm.template(sets=sets)
        assert container_env(manifests)["FLEET_WEBHOOK_SHARED_ORDER"] == "true", sets
        assert "patch" in gitrepo_verbs(manifests), sets  # the ledger annotation


def test_one_replica_without_shared_order_or_polling_writes_status_only(helm: Helm) -> None:
    manifests = helm.template(sets=["settings.sharedOrder=false", "config.polling.manage=false"])
    assert container_env(manifests)["FLEET_WEBHOOK_SHARED_ORDER"] == "false"
    assert "patch" not in gitrepo_verbs(manifests)
