"""values.schema.json: generated, current, and what makes `helm` refuse bad values naming the field."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from kubernetes import client

from controller.config import ConfigError, load_text
from tests.chart.support import CHART, CI_VALUES, REPO_ROOT, Helm, unique
from tools import gen_values_schema
from tools.controlplane import ControlPlane

VALUES_SCHEMA = CHART / "values.schema.json"


def test_committed_schema_is_current() -> None:
    """Fails when schema/config.schema.json or chart/values.yaml changed without `make chart-schema`."""
    assert VALUES_SCHEMA.read_text(encoding="utf-8") == gen_values_schema.render(), (
        "chart/values.schema.json is stale: run `make chart-schema`"
    )
    assert gen_values_schema.main(["--check"]) == 0


def test_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "values.schema.json"
    stale.write_text(VALUES_SCHEMA.read_text().replace('"replicaCount"', '"replicas"', 1))
    assert gen_values_schema.main(["--check", "--output", str(stale)]) == 1


def test_config_is_the_controller_schema_verbatim() -> None:
    config_schema = json.loads((REPO_ROOT / "schema" / "config.schema.json").read_text())
    embedded = json.loads(VALUES_SCHEMA.read_text())["properties"]["config"]
    assert embedded["properties"] == config_schema["properties"]
    assert embedded["additionalProperties"] is False
    assert "$id" not in embedded
    assert "$schema" not in embedded


def test_schema_declares_draft_07_and_closes_every_chart_object() -> None:
    schema = json.loads(VALUES_SCHEMA.read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False
    open_objects = [
        key
        for key, node in schema["properties"].items()
        if node.get("type") == "object" and "properties" in node and node.get("additionalProperties") is not False
    ]
    assert open_objects == []


def test_every_value_is_documented_in_place() -> None:
    """A value without a comment above it, or one the schema does not declare, stops the generator."""
    text = (CHART / "values.yaml").read_text()
    undocumented = re.sub(r"(?:^#.*\n)+(?=replicaCount:)", "", text, flags=re.MULTILINE)
    assert undocumented != text
    with pytest.raises(gen_values_schema.GenerateError, match="replicaCount: no comment above it"):
        gen_values_schema.build({}, undocumented)
    undeclared = text + "\n# -- A value nobody declared.\nsurprise: 1\n"
    with pytest.raises(gen_values_schema.GenerateError, match=r"surprise: set in chart/values\.yaml but not declared"):
        gen_values_schema.build({}, undeclared)
    descriptions = json.loads(VALUES_SCHEMA.read_text())["properties"]
    assert descriptions["ingress"]["properties"]["form"]["description"].startswith("The two forms of Fleet's docs")


# Each bad value, and the text helm's error must contain: the field's path and what is wrong.
BAD_VALUES = [
    pytest.param(
        ["config.polling.webhookInterval=soon"],
        "at '/config/polling/webhookInterval': 'soon' does not match",
        id="duration",
    ),
    pytest.param(
        ["config.routes[0].path=hooks"], "at '/config/routes/0/path': 'hooks' does not match pattern", id="route-path"
    ),
    pytest.param(["replicaCount=two"], "at '/replicaCount': got string, want integer", id="replicas-type"),
    pytest.param(
        ["config.watchNamespaces={a}"],
        "at '/config': additional properties 'watchNamespaces' not allowed",
        id="unknown-config-key",
    ),
    pytest.param(
        ["config.polling.manage=sometimes"], "at '/config/polling/manage': got string, want boolean", id="bool"
    ),
    pytest.param(
        ["config.limits.maxBodyBytes=100"],
        "at '/config/limits/maxBodyBytes': minimum: got 100, want 1,024",
        id="minimum",
    ),
    pytest.param(
        ["config.watch.namespaces={Team_A}"],
        "at '/config/watch/namespaces/0': 'Team_A' does not match",
        id="namespace-name",
    ),
    pytest.param(
        ["ingress.form=traefik"], "at '/ingress/form': value must be one of 'plain', 'nginx-rewrite'", id="ingress-form"
    ),
    pytest.param(
        ["webhookSecret.data.githb=x"],
        "at '/webhookSecret/data': additional properties 'githb' not allowed",
        id="secret-key",
    ),
    pytest.param(["servce.port=80"], "additional properties 'servce' not allowed", id="typo-top-level"),
    pytest.param(["service.port=0"], "at '/service/port': minimum: got 0, want 1", id="port"),
    pytest.param(["settings.logLevel=verbose"], "at '/settings/logLevel': value must be one of", id="log-level"),
]


@pytest.mark.parametrize(("sets", "expected"), BAD_VALUES)
def test_bad_value_is_rejected_naming_the_field(helm: Helm, sets: list[str], expected: str) -> None:
    args = ["template", "fw", str(CHART)]
    for item in sets:
        args += ["--set", item]
    stderr = helm.fails(*args)
    assert "values don't meet the specifications of the schema" in stderr
    assert expected in stderr


# Rules JSON Schema cannot express: the chart's templates enforce the controller's own semantic checks
# (controller/config.py), so helm refuses what the receiver would refuse to load.
SEMANTIC = [
    pytest.param(
        "routes:\n- path: /a\n- path: /a\n",
        'config.routes[1].path: route "/a" is already defined',
        "$.routes[1].path",
        id="duplicate-route",
    ),
    pytest.param(
        "watch: {namespaces: [team-a]}\nroutes:\n- path: /\n  namespaces: [team-b]\n",
        'config.routes[0].namespaces: namespace "team-b" is not watched',
        "$.routes[0].namespaces",
        id="route-namespace-not-watched",
    ),
    pytest.param(
        "providers: {gitlab: {enabled: false}}\nroutes:\n- path: /\n  providers: [gitlab]\n",
        'config.routes[0].providers: provider "gitlab" is disabled',
        "$.routes[0].providers",
        id="route-provider-disabled",
    ),
    pytest.param(
        "polling: {webhookInterval: 0s}\n",
        "config.polling.webhookInterval: must be longer than 0",
        "$.polling.webhookInterval",
        id="zero-interval",
    ),
    pytest.param(
        "mappings:\n- repo: https://github.com/example-org/apps\n",
        "config.mappings[0]: mapping does nothing",
        "$.mappings[0]",
        id="empty-mapping",
    ),
]


@pytest.mark.parametrize(("config_yaml", "helm_message", "controller_path"), SEMANTIC)
def test_semantic_rules_agree_with_the_controller(
    helm: Helm, tmp_path: Path, config_yaml: str, helm_message: str, controller_path: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_text(config_yaml, "values")
    assert any(p.path == controller_path for p in refused.value.problems), refused.value
    values = tmp_path / "values.yaml"
    values.write_text("config:\n" + "".join(f"  {line}\n" for line in config_yaml.splitlines()))
    stderr = helm.fails("template", "fw", str(CHART), "-f", str(values))
    assert helm_message in stderr


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_every_ci_config_is_one_the_controller_loads(helm: Helm, values: Path) -> None:
    """The schema and the templates accept it, and so does the receiver's own loader."""
    manifests = helm.template(values=[values])
    (configmap,) = [m for m in manifests if m["kind"] == "ConfigMap" and "config.yaml" in m["data"]]
    config = load_text(configmap["data"]["config.yaml"], f"{values.name}:config.yaml")
    assert config.routes


def test_bad_install_applies_nothing(
    helm: Helm, control_plane: ControlPlane, kube_api: client.ApiClient, release_namespace: str
) -> None:
    release = unique("bad")
    stderr = helm.fails(
        "install",
        release,
        str(CHART),
        "--namespace",
        release_namespace,
        "--set",
        "config.polling.webhookInterval=soon",
        kubeconfig=control_plane.kubeconfig,
    )
    assert "at '/config/polling/webhookInterval'" in stderr
    core = client.CoreV1Api(kube_api)
    mine = f"app.kubernetes.io/instance={release}"
    assert core.list_namespaced_config_map(release_namespace, label_selector=mine).items == []
    assert core.list_namespaced_service_account(release_namespace, label_selector=mine).items == []
    # Not even helm's release record (a Secret labelled owner=helm).
    assert core.list_namespaced_secret(release_namespace, label_selector=f"owner=helm,name={release}").items == []
    assert client.RbacAuthorizationV1Api(kube_api).list_cluster_role(label_selector=mine).items == []
