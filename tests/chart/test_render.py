"""What `helm lint` and `helm template` produce: valid Kubernetes 1.36 objects with the properties users rely on."""

from __future__ import annotations

import base64
import importlib
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

import controller
from controller import kube
from controller.settings import ENV_PREFIX, Settings
from tests.chart.support import CHART, CI_VALUES, REPO_ROOT, Helm, by_kind, one

FULL = CHART / "ci" / "full-values.yaml"
NAMESPACED = CHART / "ci" / "namespaced-values.yaml"
REWRITE = CHART / "ci" / "ingress-nginx-rewrite-values.yaml"
BUILT_IN_GROUPS = ("v1", "apps/v1", "policy/v1", "networking.k8s.io/v1", "rbac.authorization.k8s.io/v1")


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda p: p.name if p else "chart-defaults")
def test_lint_strict(helm: Helm, values: Path | None) -> None:
    args = ["lint", "--strict", str(CHART)] + (["-f", str(values)] if values else [])
    out = helm.run(*args).stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in out
    assert "[WARNING]" not in out
    assert "[ERROR]" not in out


@pytest.mark.parametrize("values", [None, FULL, NAMESPACED, REWRITE], ids=["default", "full", "namespaced", "rewrite"])
def test_manifests_are_valid_kubernetes_1_36(helm: Helm, values: Path | None) -> None:
    manifests = helm.template(values=[values] if values else [])
    checked = []
    for manifest in manifests:
        if manifest["apiVersion"] not in BUILT_IN_GROUPS:
            assert manifest["kind"] == "ServiceMonitor", manifest["kind"]  # the only custom resource
            continue
        kubernetes_validate.validate(manifest, "1.36", strict=True)
        checked.append(manifest["kind"])
    assert {"Deployment", "Service", "ServiceAccount", "ConfigMap"} <= set(checked)


def test_default_render_objects(helm: Helm) -> None:
    kinds = sorted(m["kind"] for m in helm.template())
    assert kinds == sorted(
        [
            "ServiceAccount",
            "ConfigMap",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",  # the named-secret Role (gitjob-webhook) in the release namespace
            "RoleBinding",
            "Service",  # the webhooks'
            "Service",  # /metrics, apart
            "Deployment",
            "PodDisruptionBudget",
            "NetworkPolicy",
        ]
    )


def test_full_render_has_every_optional_object(helm: Helm) -> None:
    kinds = {m["kind"] for m in helm.template(values=[FULL])}
    assert {"Ingress", "Secret", "ServiceMonitor", "PodDisruptionBudget", "NetworkPolicy"} <= kinds


def container(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    c: dict[str, Any]
    (c,) = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def test_pod_is_locked_down(helm: Helm) -> None:
    manifests = helm.template()
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    c = container(manifests)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    tmp = next(m for m in c["volumeMounts"] if m["mountPath"] == "/tmp")
    volume = next(v for v in pod["volumes"] if v["name"] == tmp["name"])
    assert "emptyDir" in volume
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "probes"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "probes"}
    assert c["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "probes", "containerPort": 8081, "protocol": "TCP"},
    ]


def test_config_is_a_directory_mount_the_receiver_is_pointed_at(helm: Helm) -> None:
    manifests = helm.template(sets=["config.polling.webhookInterval=2h"])
    c = container(manifests)
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    env = {e["name"]: e for e in c["env"]}
    config_path = Path(env["FLEET_WEBHOOK_CONFIG"]["value"])
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == str(config_path.parent)]
    assert "subPath" not in mount  # subPath mounts never see ConfigMap updates
    assert mount["mountPath"] == "/etc/fleet-webhook"
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    configmap = one(manifests, "ConfigMap")
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert set(configmap["data"]) == {config_path.name}
    assert "webhookInterval: 2h" in configmap["data"]["config.yaml"]
    assert env["FLEET_WEBHOOK_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["FLEET_WEBHOOK_PORT"]["value"] == "8080"


def pod_template(helm: Helm, *sets: str) -> dict[str, Any]:
    template: dict[str, Any] = one(helm.template(sets=list(sets)), "Deployment")["spec"]["template"]
    return template


def test_config_change_does_not_touch_the_pod_template_but_settings_do(helm: Helm) -> None:
    """Hot reload, not restart: no checksum of the config in the pods; settings (env) roll them."""
    base = pod_template(helm)
    assert pod_template(helm, "config.polling.webhookInterval=2h", "config.watch.namespaces={a,b}") == base
    assert not any("checksum" in key for key in base["metadata"].get("annotations", {}))
    changed = pod_template(helm, "settings.logLevel=debug")
    assert changed != base
    env = {e["name"]: e.get("value") for e in changed["spec"]["containers"][0]["env"]}
    assert env["FLEET_WEBHOOK_LOG_LEVEL"] == "debug"


def test_service_port_80_to_8080_and_configurable_name(helm: Helm) -> None:
    manifests = helm.template(release="fw")
    service = services(manifests)["fw-fleet-webhook"]
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert service["spec"]["selector"] == one(manifests, "Deployment")["spec"]["selector"]["matchLabels"]
    renamed = services(helm.template(sets=["service.name=webhooks"]))
    assert set(renamed) == {"webhooks", "fw-fleet-webhook-metrics"}


def test_metrics_have_their_own_service_off_the_webhook_one(helm: Helm) -> None:
    """The Service an Ingress and the git hosts reach exposes the webhook port only; /metrics (and the
    probe port behind it) is on a Service of its own, which the ServiceMonitor alone selects."""
    manifests = helm.template(release="fw", values=[FULL])
    by_name = services(manifests)
    assert len(by_name) == 2
    (webhook_name,) = [n for n in by_name if n != "fw-fleet-webhook-metrics"]  # FULL names it
    webhook, metrics = by_name[webhook_name], by_name["fw-fleet-webhook-metrics"]
    assert [p["targetPort"] for p in webhook["spec"]["ports"]] == ["http"]
    assert metrics["spec"]["type"] == "ClusterIP"
    assert metrics["spec"]["ports"] == [{"name": "metrics", "port": 8081, "targetPort": "probes", "protocol": "TCP"}]
    assert metrics["spec"]["selector"] == webhook["spec"]["selector"]
    selector = one(manifests, "ServiceMonitor")["spec"]["selector"]["matchLabels"]
    assert selector.items() <= metrics["metadata"]["labels"].items()
    assert not selector.items() <= webhook["metadata"]["labels"].items()
    for ingress in by_kind(manifests, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["backend"]["service"] == {"name": webhook_name, "port": {"name": "http"}}


def test_names_are_truncated_to_63_characters(helm: Helm) -> None:
    release = "r" * 53  # helm's longest release name
    namespace = "n" * 63
    manifests = helm.template(release=release, namespace=namespace, values=[NAMESPACED])
    names = [m["metadata"]["name"] for m in manifests]
    assert all(len(name) <= 63 for name in names), [n for n in names if len(n) > 63]
    assert all(not name.endswith("-") for name in names)
    roles = {(m["metadata"]["namespace"], m["metadata"]["name"]) for m in by_kind(manifests, "Role")}
    assert len(roles) == len(by_kind(manifests, "Role"))  # truncation never merges two Roles
    assert any(name.endswith("-secrets") for _, name in roles)
    cluster = helm.template(release=release, namespace=namespace)
    assert len(one(cluster, "ClusterRole")["metadata"]["name"]) <= 63
    for labels in (m["metadata"]["labels"] for m in manifests):
        assert all(len(v) <= 63 for v in labels.values())


def services(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in by_kind(manifests, "Service")}


# --- RBAC ---------------------------------------------------------------------------------------


def rules_of(manifests: list[dict[str, Any]], kind: str) -> dict[str, list[dict[str, Any]]]:
    """Rules by namespace ("" for a ClusterRole)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for role in by_kind(manifests, kind):
        out.setdefault(role["metadata"].get("namespace", ""), []).extend(role["rules"])
    return out


def grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(resource, verb, resourceName or '*') triples."""
    return {
        (resource, verb, name)
        for rule in rules
        for resource in rule["resources"]
        for verb in rule["verbs"]
        for name in rule.get("resourceNames", ["*"])
    }


GITREPO_GRANTS = {
    ("gitrepos", "get", "*"),
    ("gitrepos", "list", "*"),
    ("gitrepos", "watch", "*"),
    ("gitrepos/status", "patch", "*"),
    ("gitrepos", "patch", "*"),
    ("events", "create", "*"),
}
SPEC_PATCH = ("gitrepos", "patch", "*")
STATUS_ONLY = GITREPO_GRANTS - {SPEC_PATCH}  # what the chart grants on GitRepos unless a feature writes the object


def test_default_rbac_reads_secrets_by_name_only_and_writes_status_only(helm: Helm) -> None:
    """Empty config: no Secret is readable but the global one, by name; GitRepos are written through /status only."""
    manifests = helm.template(namespace="cattle-fleet-system")
    cluster = rules_of(manifests, "ClusterRole")
    assert set(cluster) == {""}  # one ClusterRole: GitRepos in every namespace
    assert grants(cluster[""]) == STATUS_ONLY
    assert not [g for g in grants(cluster[""]) if g[0] == "secrets"]
    assert grants(rules_of(manifests, "Role")["cattle-fleet-system"]) == {("secrets", "get", "gitjob-webhook")}
    binding = one(manifests, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "fw-fleet-webhook", "namespace": "cattle-fleet-system"}
    ]
    config = yaml.safe_load(one(manifests, "ConfigMap")["data"]["config.yaml"])
    assert config["polling"]["manage"] is False  # what the controller is told matches what it may do
    assert config["secrets"]["gitRepoSecrets"] is False
    env = {e["name"]: e.get("value") for e in container(manifests)["env"]}
    assert env["FLEET_WEBHOOK_SHARED_ORDER"] == "false"  # one replica: no ledger annotation


def test_namespaced_config_gives_roles_only_and_secrets_by_name(helm: Helm) -> None:
    manifests = helm.template(values=[NAMESPACED], namespace="fleet")
    assert by_kind(manifests, "ClusterRole") == []
    assert by_kind(manifests, "ClusterRoleBinding") == []
    roles = rules_of(manifests, "Role")
    assert set(roles) == {"fleet", "team-a", "team-b"}
    assert grants(roles["fleet"]) == {("secrets", "get", "gitjob-webhook")}
    assert grants(roles["team-a"]) == STATUS_ONLY | {("secrets", "get", "webhook-team-a")}
    assert grants(roles["team-b"]) == STATUS_ONLY | {("secrets", "get", "webhook-team-b")}
    for binding in by_kind(manifests, "RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "fw-fleet-webhook", "namespace": "fleet"}]


def test_features_that_write_the_gitrepo_object_add_exactly_the_patch_rule(helm: Helm) -> None:
    """polling.manage (spec.pollingInterval) and sharedOrder (the ledger annotation) are the only writers
    of the GitRepo object; each adds `patch` on gitrepos and nothing else."""
    for sets in (
        ["config.polling.manage=true"],
        ["settings.sharedOrder=true"],
        ["replicaCount=2"],  # sharedOrder empty: on with several replicas
        ["autoscaling.enabled=true"],
    ):
        manifests = helm.template(sets=sets)
        assert grants(rules_of(manifests, "ClusterRole")[""]) == GITREPO_GRANTS, sets
    off = helm.template(sets=["replicaCount=1", "settings.sharedOrder=false", "config.polling.manage=false"])
    assert grants(rules_of(off, "ClusterRole")[""]) == STATUS_ONLY
    directory = helm.template(sets=["config.secrets.source.directory=/etc/fleet-webhook-secrets"])
    assert by_kind(directory, "Role") == []  # no Secret is named: none is readable by name


def secret_reads(manifests: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    """(kind, namespace) -> Secret names readable through it ("*": any name)."""
    found: dict[tuple[str, str], set[str]] = {}
    for kind in ("ClusterRole", "Role"):
        for namespace, rules in rules_of(manifests, kind).items():
            names = {name for resource, verb, name in grants(rules) if resource == "secrets" and verb == "get"}
            if names:
                found[(kind, namespace)] = names
    return found


def test_gitrepo_secrets_are_readable_only_where_routes_serve_and_only_when_on(helm: Helm, tmp_path: Path) -> None:
    """secrets.gitRepoSecrets: get on any Secret name, in exactly the namespaces whose GitRepos a route can update."""
    named = {("Role", "fleet"): {"gitjob-webhook"}}
    assert secret_reads(helm.template(namespace="fleet")) == named  # off by default
    everywhere = helm.template(namespace="fleet", sets=["config.secrets.gitRepoSecrets=true"])
    assert secret_reads(everywhere) == named | {("ClusterRole", ""): {"*"}}  # the default route serves all
    watched = helm.template(
        namespace="fleet", sets=["config.secrets.gitRepoSecrets=true", "config.watch.namespaces={team-a,team-b}"]
    )
    assert secret_reads(watched) == named | {("Role", "team-a"): {"*"}, ("Role", "team-b"): {"*"}}
    routes = [
        {"path": "/a", "namespaces": ["team-a"]},
        {"path": "/b", "namespaces": ["team-a"], "providers": ["gitlab"]},
    ]
    config = {"secrets": {"gitRepoSecrets": True}, "watch": {"namespaces": ["team-a", "team-b"]}, "routes": routes}
    values = tmp_path / "served-values.yaml"
    values.write_text(json.dumps({"config": config}))
    served = helm.template(namespace="fleet", values=[values])
    assert secret_reads(served) == named | {("Role", "team-a"): {"*"}}  # no route serves team-b
    assert all(
        rule.get("verbs") == ["get"]
        for m in by_kind(served, "Role")
        for rule in m["rules"]
        if "secrets" in rule["resources"]
    )


def test_every_rbac_rule_has_a_comment_naming_its_code_path(helm: Helm) -> None:
    out = helm.run("template", "fw", str(CHART), "-f", str(NAMESPACED)).stdout
    rbac = "\n".join(doc for doc in out.split("\n---") if "templates/rbac.yaml" in doc)
    lines = rbac.splitlines()
    rule_starts = [i for i, line in enumerate(lines) if line.strip().startswith("- apiGroups:")]
    assert rule_starts
    for i in rule_starts:
        comment = lines[i - 1].strip()
        assert comment.startswith("#"), f"rule without a comment: {lines[i]!r} after {lines[i - 1]!r}"
    # Every code path a comment names exists (comments cannot drift from the code) ...
    source = (CHART / "templates" / "rbac.yaml").read_text().splitlines()  # every rule, whatever renders
    comments = "\n".join(line for line in source if line.strip().startswith("#"))
    named = set(re.findall(r"\b(?:[a-z]+\.)?[A-Z]\w+\.\w+\b", comments))
    assert named
    assert [path for path in sorted(named) if not resolves(path)] == []
    # ... and every Kube method that calls the API is named by the rule that permits it.
    api_calls = {
        f"Kube.{n}"
        for n, fn in vars(kube.Kube).items()
        if callable(fn) and not n.startswith("_") and n not in ("close", "call")
    }
    assert api_calls - {n.removeprefix("kube.") for n in named} == set()


def resolves(dotted: str) -> bool:
    """Whether `module.Class.attr` or `Class.attr` names something in the controller package."""
    parts = dotted.split(".")
    modules = [parts.pop(0)] if parts[0].islower() else ["kube", "secrets", "updater", "sync", "pipeline"]
    for name in modules:
        owner = getattr(importlib.import_module(f"controller.{name}"), parts[0], None)
        if owner is not None and hasattr(owner, parts[1]):
            return True
    return False


# --- Ingress, Secret, monitoring ----------------------------------------------------------------


def test_ingress_plain_form_with_tls(helm: Helm) -> None:
    ingress = one(helm.template(values=[FULL]), "Ingress")
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "fleet-webhook.example.com"
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/", "Prefix")
    assert path["backend"]["service"] == {"name": "fleet-webhook-receiver", "port": {"name": "http"}}
    assert ingress["spec"]["tls"] == [{"hosts": ["fleet-webhook.example.com"], "secretName": "fleet-webhook-tls"}]
    assert ingress["spec"]["ingressClassName"] == "nginx"


def test_ingress_nginx_rewrite_form(helm: Helm) -> None:
    ingress = one(helm.template(values=[REWRITE]), "Ingress")
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/use-regex"] == "true"
    assert annotations["nginx.ingress.kubernetes.io/rewrite-target"] == "/$2"
    (path,) = ingress["spec"]["rules"][0]["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/gitjob(/|$)(.*)", "ImplementationSpecific")
    assert ingress["spec"]["tls"][0]["secretName"] == "tls-rancher-ingress"


def test_ingress_needs_a_host(helm: Helm) -> None:
    stderr = helm.fails("template", "fw", str(CHART), "--set", "ingress.enabled=true")
    assert "ingress.host is required" in stderr


def test_webhook_secret_created_from_values_under_the_configured_name(helm: Helm) -> None:
    manifests = helm.template(values=[FULL], namespace="fleet")
    secret = one(manifests, "Secret")
    assert secret["metadata"]["name"] == "webhook-secrets"  # config.secrets.source.kubernetes.name
    assert secret["metadata"]["namespace"] == "fleet"
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == {
        "github": "not-a-real-github-secret",
        "gitlab": "not-a-real-gitlab-token",
        "github.previous": "not-a-real-old-github-secret",
    }
    assert grants(rules_of(manifests, "Role")["fleet"]) == {("secrets", "get", "webhook-secrets")}


def test_existing_secret_is_not_created_but_readable_by_name(helm: Helm) -> None:
    manifests = helm.template(values=[CHART / "ci" / "existing-secret-values.yaml"], namespace="fleet")
    assert by_kind(manifests, "Secret") == []
    assert grants(rules_of(manifests, "Role")["fleet"]) == {("secrets", "get", "fleet-webhook-credentials")}


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["webhookSecret.create=true"], "webhookSecret.data is empty"),
        (
            ["webhookSecret.create=true", "webhookSecret.data.github=x", "config.secrets.source.directory=/s"],
            "config.secrets.source is a directory",
        ),
        (["terminationGracePeriodSeconds=20"], "terminationGracePeriodSeconds (20) must be greater than"),
    ],
    ids=["no-data", "directory-source", "grace"],
)
def test_inconsistent_values_fail_with_a_reason(helm: Helm, sets: list[str], message: str) -> None:
    args = ["template", "fw", str(CHART)]
    for item in sets:
        args += ["--set", item]
    assert message in helm.fails(*args)


def receiver_policy(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    (policy,) = [p for p in by_kind(manifests, "NetworkPolicy") if not p["metadata"]["name"].endswith("-close-gitjob")]
    return policy


def test_network_policy_admits_the_webhook_and_probe_ports_only(helm: Helm) -> None:
    policy = receiver_policy(helm.template(values=[FULL]))
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    rule, probes = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": 8080, "protocol": "TCP"}]
    assert len(rule["from"]) == 2
    assert probes["ports"] == [{"port": 8081, "protocol": "TCP"}]


def test_the_metrics_port_is_open_only_to_the_monitoring_namespaces(helm: Helm, tmp_path: Path) -> None:
    """Port 8081 (/metrics, /readyz details) admits the monitoring namespaces by default, never "anyone"."""
    _, probes = receiver_policy(helm.template())["spec"]["ingress"]
    assert probes["from"] == [
        {
            "namespaceSelector": {
                "matchExpressions": [
                    {
                        "key": "kubernetes.io/metadata.name",
                        "operator": "In",
                        "values": ["cattle-monitoring-system", "monitoring"],
                    }
                ]
            }
        }
    ]
    peer = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}
    values = tmp_path / "values.yaml"
    values.write_text(json.dumps({"networkPolicy": {"metrics": {"from": [peer]}}}))
    _, custom = receiver_policy(helm.template(values=[values]))["spec"]["ingress"]
    assert custom["from"] == [peer]


def test_an_empty_metrics_from_is_refused(helm: Helm) -> None:
    """An empty `from` would admit every source: the schema refuses it rather than open /metrics."""
    args = ["template", "fw", str(CHART), "--set-json", "networkPolicy.metrics.from=[]"]
    assert "/networkPolicy/metrics/from': minItems" in helm.fails(*args)


def test_service_monitor_scrapes_metrics_and_is_off_by_default(helm: Helm) -> None:
    assert by_kind(helm.template(), "ServiceMonitor") == []
    monitor = one(helm.template(values=[FULL]), "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "5s"}
    ]
    assert monitor["metadata"]["labels"]["release"] == "rancher-monitoring"


def test_chart_metadata_and_kubernetes_floor(helm: Helm) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert (chart["apiVersion"], chart["kubeVersion"]) == ("v2", ">=1.27.0-0")
    assert chart["appVersion"] == project["version"] == controller.__version__ == "0.1.0"
    stderr = helm.fails("template", "fw", str(CHART), "--kube-version", "1.26.9")
    assert "incompatible with Kubernetes v1.26.9" in stderr
    assert one(helm.template(), "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":0.1.0")


@pytest.mark.parametrize("values", [None, FULL], ids=["default", "full"])
def test_environment_is_settings_the_receiver_accepts(
    helm: Helm, monkeypatch: pytest.MonkeyPatch, values: Path | None
) -> None:
    """Every FLEET_WEBHOOK_* variable the chart sets is a real setting with a valid value."""
    manifests = helm.template(values=[values] if values else [], namespace="cattle-fleet-system")
    env = [e for e in container(manifests)["env"] if e["name"].startswith(ENV_PREFIX)]
    for var in env:
        assert var["name"].removeprefix(ENV_PREFIX).lower() in Settings.model_fields, var["name"]
        monkeypatch.setenv(var["name"], var.get("value", "cattle-fleet-system"))  # the one valueFrom: namespace
    settings = Settings()
    assert settings.config == Path("/etc/fleet-webhook/config.yaml")
    assert settings.port == 8080
    assert settings.probe_port == 8081
    assert settings.shutdown_delay_seconds == (10 if values else 5)
    assert (
        settings.shutdown_delay_seconds + settings.shutdown_grace_seconds
        < (one(manifests, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])
    )


def _mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * factor
    return float(quantity) / (1 << 20)


def test_default_resources_follow_the_body_budget(helm: Helm) -> None:
    """The spool fits the /tmp emptyDir, and the memory limit covers the budget (docs/security.md)."""
    schema = json.loads((REPO_ROOT / "schema" / "config.schema.json").read_text())
    limits = schema["properties"]["limits"]["properties"]
    manifests = helm.template()
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    c = container(manifests)
    tmp_volume = next(v for v in pod["volumes"] if v["name"] == "tmp")
    spool = limits["spoolBytes"]["default"] / (1 << 20)
    assert _mebibytes(tmp_volume["emptyDir"]["sizeLimit"]) >= spool + 32
    assert {"name": "FLEET_WEBHOOK_SPOOL_DIR", "value": "/tmp"} in c["env"]
    # process (96Mi) + all bodies in memory + one maximal authenticated parse (~5x the body, measured)
    body_memory = limits["bodyMemoryBytes"]["default"] / (1 << 20)
    max_body = limits["maxBodyBytes"]["default"] / (1 << 20)
    assert _mebibytes(c["resources"]["limits"]["memory"]) >= 96 + body_memory + 5 * max_body
