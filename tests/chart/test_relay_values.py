"""The chart deploys either relay role (docs/relay.md): the right variables, the Secret mounted, and for
the edge no Kubernetes grant at all; inconsistent relay values fail with the field's name."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.support import CHART, Helm

RBAC_KINDS = {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}


def deployment(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = [m for m in manifests if m["kind"] == "Deployment"]
    return found


def env_of(manifests: list[dict[str, Any]]) -> dict[str, str]:
    (container,) = deployment(manifests)["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", "") for e in container["env"]}


def test_the_edge_gets_its_url_and_tls_files_and_no_rbac(helm: Helm) -> None:
    manifests = helm.template(
        sets=[
            "relay.role=publish",
            "relay.url=tls://nats.example.com:4222",
            "relay.existingSecret=relay-broker",
            "relay.secretKeys={ca.crt,tls.crt,tls.key}",
        ]
    )

    env = env_of(manifests)
    assert env["FLEET_WEBHOOK_RELAY_PUBLISH"] == "tls://nats.example.com:4222"
    assert env["FLEET_WEBHOOK_RELAY_MAX_AGE_SECONDS"] == "604800"
    assert env["FLEET_WEBHOOK_RELAY_TLS_CA_FILE"] == "/etc/fleet-webhook-relay/ca.crt"
    assert env["FLEET_WEBHOOK_RELAY_TLS_KEY_FILE"] == "/etc/fleet-webhook-relay/tls.key"
    assert "FLEET_WEBHOOK_RELAY_CONSUME" not in env
    pod = deployment(manifests)["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "relay"]
    assert volume["secret"]["secretName"] == "relay-broker"
    assert {m["kind"] for m in manifests} & RBAC_KINDS == set()  # the edge never calls the Kubernetes API


def test_the_consumer_keeps_the_receivers_rbac_and_reads_its_creds(helm: Helm) -> None:
    manifests = helm.template(
        sets=[
            "relay.role=consume",
            "relay.url=nats://nats.example.com:4222",
            "relay.existingSecret=relay-broker",
            "relay.secretKeys={nats.creds}",
        ]
    )

    env = env_of(manifests)
    assert env["FLEET_WEBHOOK_RELAY_CONSUME"] == "nats://nats.example.com:4222"
    assert env["FLEET_WEBHOOK_RELAY_CREDENTIALS_FILE"] == "/etc/fleet-webhook-relay/nats.creds"
    assert "FLEET_WEBHOOK_RELAY_MAX_AGE_SECONDS" not in env  # the edge owns the stream's limits
    assert {"ClusterRole", "ClusterRoleBinding"} <= {m["kind"] for m in manifests}


def test_no_role_renders_no_relay_setting(helm: Helm) -> None:
    assert not [name for name in env_of(helm.template()) if name.startswith("FLEET_WEBHOOK_RELAY_")]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["relay.role=consume"], 'relay.url: relay.role "consume" needs the NATS URL'),
        (["relay.role=publish", "relay.url=nats://n:4222", "relay.secretKeys={ca.crt}"], "relay.existingSecret"),
        (
            ["relay.role=publish", "relay.url=nats://n:4222", "relay.existingSecret=s", "relay.secretKeys={tls.crt}"],
            "tls.crt and tls.key go together",
        ),
        (["relay.role=consume", "relay.url=nats://n:4222", "replicaCount=2"], "consume runs exactly one replica"),
        (["relay.role=edge"], "relay/role"),
        (["relay.role=publish", "relay.url=http://n:4222"], "relay/url"),
    ],
    ids=["no-url", "keys-without-secret", "cert-without-key", "replicas", "bad-role", "bad-url"],
)
def test_inconsistent_relay_values_fail_naming_the_field(helm: Helm, sets: list[str], message: str) -> None:
    args = ["template", "fw", str(CHART)]
    for item in sets:
        args += ["--set", item]
    assert message in helm.fails(*args)


def test_the_url_may_come_from_a_secret_through_extra_env(helm: Helm) -> None:
    manifests = helm.template(
        sets=[
            "relay.role=consume",
            "extraEnv[0].name=FLEET_WEBHOOK_RELAY_CONSUME",
            "extraEnv[0].valueFrom.secretKeyRef.name=relay-url",
            "extraEnv[0].valueFrom.secretKeyRef.key=url",
        ]
    )
    (container,) = deployment(manifests)["spec"]["template"]["spec"]["containers"]
    (from_secret,) = [e for e in container["env"] if e["name"] == "FLEET_WEBHOOK_RELAY_CONSUME"]
    assert from_secret["valueFrom"]["secretKeyRef"]["name"] == "relay-url"
