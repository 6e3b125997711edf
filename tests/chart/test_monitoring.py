"""The optional Grafana dashboard and PrometheusRule: they render, lint, and every query is real PromQL over real metrics.

"Real PromQL" means Prometheus's own parser and rule-file loader (tools/promql-parse, built by
`make tools` from the Go module proxy): a query Grafana or Prometheus would refuse fails here. "Real
metrics" means the names the receiver's own registry (controller.metrics.Metrics) exports, with the
suffixes prometheus-client adds, so renaming a metric without fixing the dashboard or an alert fails too.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubernetes import client

from controller.metrics import Metrics
from tests.chart.support import CHART, REPO_ROOT, Helm, by_kind, find_tool, one, present, unique
from tools.controlplane import ControlPlane

DASHBOARD_FILE = CHART / "dashboards" / "fleet-webhook.json"
MONITORING = CHART / "ci" / "monitoring-values.yaml"
BOTH = ["grafanaDashboard.enabled=true", "prometheusRule.enabled=true"]
ALERTS = {
    "verificationFailures": "FleetWebhookVerificationFailures",
    "writeFailures": "FleetWebhookGitRepoWritesFailing",
    "gitRepoNoWebhooks": "FleetWebhookGitRepoNoWebhooks",
    "configRejected": "FleetWebhookConfigRejected",
}
# What Grafana puts in place of its variables before a query reaches Prometheus (values as it would).
GRAFANA_VARIABLES = {
    "__rate_interval": "2m",
    "__interval": "30s",
    "__range": "6h",
    "namespace": "cattle-fleet-system",
    "job": "fw-fleet-webhook",
}
# Sample names prometheus-client derives from a family's type (docs/metrics.md: `_total`, `_created`).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "gauge": ("",),
    "info": ("_info",),
}


class PromQL:
    """tools/promql-parse: Prometheus's parser (`exprs`) and rule-file loader (`rules`)."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary

    def exprs(self, exprs: Mapping[str, str]) -> dict[str, dict[str, Any]]:
        """Parse each expression: {id: {"error", "type", "metrics", "unnamed"}}."""
        proc = subprocess.run(
            [str(self.binary), "exprs"], input=json.dumps(dict(exprs)), capture_output=True, text=True, check=False
        )
        assert proc.returncode in (0, 1), proc.stderr
        result: dict[str, dict[str, Any]] = json.loads(proc.stdout)
        return result

    def rules(self, path: Path) -> dict[str, Any]:
        """Load a rule file as Prometheus (and `promtool check rules`) would: {"rules": n, "errors": [...]}."""
        proc = subprocess.run([str(self.binary), "rules", str(path)], capture_output=True, text=True, check=False)
        assert proc.returncode in (0, 1), proc.stderr
        result: dict[str, Any] = json.loads(proc.stdout)
        return result


@pytest.fixture(scope="module")
def promql() -> PromQL:
    try:
        binary = find_tool("promql-parse")
    except FileNotFoundError as exc:
        missing = str(exc)
    else:
        missing = ""
    if missing:  # fail (never skip), outside the except block so the report is just the message
        pytest.fail(f"the dashboard and alert tests need Prometheus's parser: {missing}", pytrace=False)
    return PromQL(binary)


def exported_metric_names() -> dict[str, set[str]]:
    """Sample names the receiver exports, by metric family, from a fresh registry."""
    names: dict[str, set[str]] = {}
    for family in Metrics().registry.collect():
        names[family.name] = {family.name + suffix for suffix in SUFFIXES[family.type]}
    return names


def exported() -> set[str]:
    return set().union(*exported_metric_names().values())


def grafana_expand(expr: str, known: set[str]) -> str:
    """The query with Grafana's variables replaced; a variable the dashboard does not define fails."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in known, f"{expr!r} uses ${name}, which neither Grafana nor the dashboard defines"
        return GRAFANA_VARIABLES[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
    return loaded


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included, rows themselves left out."""
    found: list[dict[str, Any]] = []
    for panel in board["panels"]:
        found += [p for p in panel.get("panels", [])] if panel["type"] == "row" else [panel]
    return found


def dashboard_queries(board: dict[str, Any]) -> dict[str, str]:
    """Every PromQL the dashboard sends, by where it is: panel targets and the variables' label_values()."""
    known = {v["name"] for v in board["templating"]["list"]} | {n for n in GRAFANA_VARIABLES if n.startswith("__")}
    queries = {}
    for panel in panels(board):
        for target in panel["targets"]:
            queries[f"panel {panel['id']} {panel['title']!r} {target['refId']}"] = grafana_expand(target["expr"], known)
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["query"]["query"])
            assert match, f"variable {variable['name']}: expected label_values(<selector>, <label>)"
            queries[f"variable {variable['name']}"] = grafana_expand(match.group(1), known)
    return queries


def rules(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    (group,) = one(manifests, "PrometheusRule")["spec"]["groups"]
    found: list[dict[str, Any]] = group["rules"]
    return found


# The registry and the parser the checks below rely on ----------------------------------------------


def test_exported_names_come_from_the_registry_with_the_clients_suffixes() -> None:
    """The suffix rule matches what /metrics really writes, and the families are the documented ones."""
    metrics = Metrics()
    metrics.index_size.set(3)
    metrics.api_write_seconds.observe(0.1)
    metrics.config_reloads.labels("success").inc()
    text = metrics.render().decode()
    written = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    assert written <= exported()
    assert {"fleet_webhook_api_write_seconds_bucket", "fleet_webhook_config_reloads_total"} <= written
    documented = set(re.findall(r"^\| `(fleet_webhook_\w+)` \|", (REPO_ROOT / "docs" / "metrics.md").read_text(), re.M))
    sample_names = {
        name for names in exported_metric_names().values() for name in names if not name.endswith("_created")
    }
    documented_samples = {n for n in sample_names if any(n == d or n.startswith(d + "_") for d in documented)}
    assert documented_samples == sample_names, "every exported metric has a row in docs/metrics.md"


def test_the_parser_refuses_what_prometheus_refuses(promql: PromQL, tmp_path: Path) -> None:
    """So a clean result below means something: bad PromQL, a bad rule field and a bad template all fail."""
    result = promql.exprs({"ok": "sum by (le) (rate(x_bucket[5m]))", "bad": "sum(rate(x[5m])", "dur": "rate(x[$h])"})
    assert result["ok"] == {"error": "", "type": "vector", "metrics": ["x_bucket"], "unnamed": 0}
    assert "unclosed left parenthesis" in result["bad"]["error"]
    assert result["dur"]["error"]
    bad_rules = tmp_path / "bad.yaml"
    bad_rules.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "g",
                        "rules": [
                            {"alert": "A", "expr": "up == 0", "annotations": {"summary": "{{ $labels.job "}},
                            {"alert": "B", "expr": "up ==", "forr": "1m"},
                        ],
                    }
                ]
            }
        )
    )
    errors = " ".join(promql.rules(bad_rules)["errors"])
    assert "forr" in errors  # unknown field: Prometheus's strict YAML
    bad_rules.write_text(bad_rules.read_text().replace("forr", "for"))
    errors = " ".join(promql.rules(bad_rules)["errors"])
    assert "unclosed action" in errors
    assert "could not parse expression" in errors


# Rendering and lint -----------------------------------------------------------------------------------


def test_both_are_off_by_default(helm: Helm) -> None:
    manifests = helm.template()
    assert by_kind(manifests, "PrometheusRule") == []
    assert [m for m in by_kind(manifests, "ConfigMap") if "fleet-webhook.json" in m["data"]] == []


def test_lint_strict_with_dashboard_and_alerts_enabled(helm: Helm) -> None:
    for args in (["--set", ",".join(BOTH)], ["-f", str(MONITORING)]):
        out = helm.run("lint", "--strict", str(CHART), *args).stdout
        assert "1 chart(s) linted, 0 chart(s) failed" in out
        assert "[WARNING]" not in out


def test_dashboard_configmap_for_the_sidecar(helm: Helm) -> None:
    manifests = helm.template(sets=BOTH)
    (configmap,) = [m for m in by_kind(manifests, "ConfigMap") if "fleet-webhook.json" in m["data"]]
    assert configmap["metadata"]["namespace"] == "cattle-fleet-system"
    assert configmap["metadata"]["name"] == "cattle-fleet-system-fw-fleet-webhook-dashboard"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert "annotations" not in configmap["metadata"]  # no folder asked for
    assert json.loads(configmap["data"]["fleet-webhook.json"]) == dashboard()  # the file, verbatim


def test_dashboard_sidecar_label_folder_and_namespace_are_configurable(helm: Helm) -> None:
    manifests = helm.template(
        sets=[
            "grafanaDashboard.enabled=true",
            "grafanaDashboard.namespace=cattle-dashboards",
            "grafanaDashboard.sidecarLabel=example.com/dashboard",
            "grafanaDashboard.sidecarLabelValue=fleet",
            "grafanaDashboard.folderAnnotation=k8s-sidecar-target-directory",
            "grafanaDashboard.folder=/tmp/dashboards/Fleet",
            "grafanaDashboard.annotations.example\\.com/owner=platform",
        ]
    )
    (configmap,) = [m for m in by_kind(manifests, "ConfigMap") if "fleet-webhook.json" in m["data"]]
    meta = configmap["metadata"]
    assert meta["namespace"] == "cattle-dashboards"
    assert meta["labels"]["example.com/dashboard"] == "fleet"
    assert "grafana_dashboard" not in meta["labels"]
    assert meta["annotations"] == {
        "k8s-sidecar-target-directory": "/tmp/dashboards/Fleet",
        "example.com/owner": "platform",
    }
    (config,) = [m for m in by_kind(manifests, "ConfigMap") if "config.yaml" in m["data"]]
    assert config["metadata"]["namespace"] == "cattle-fleet-system"  # only the dashboard moved


# The dashboard -------------------------------------------------------------------------------------------


def test_dashboard_uses_a_datasource_variable_everywhere() -> None:
    """Importable anywhere: no data source uid of one Grafana is baked in."""
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert board["uid"] == "fleet-webhook"
    for panel in panels(board):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
    for name in ("namespace", "job"):
        assert variables[name]["datasource"]["uid"] == "${datasource}"
    assert "__inputs" not in board


def test_dashboard_panels_have_unique_ids_and_do_not_overlap() -> None:
    board = dashboard()
    ids = [p["id"] for p in board["panels"]] + [p["id"] for row in board["panels"] for p in row.get("panels", [])]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_every_dashboard_query_parses_and_names_only_exported_metrics(promql: PromQL) -> None:
    queries = dashboard_queries(dashboard())
    assert len(queries) >= 20
    names = exported()
    for where, result in promql.exprs(queries).items():
        assert result["error"] == "", f"{where}: {queries[where]}: {result['error']}"
        assert result["type"] == "vector", f"{where}: a panel or variable query gives a vector"
        assert result["unnamed"] == 0, f"{where}: every selector names its metric"
        assert result["metrics"], f"{where}: selects no metric"
        unknown = set(result["metrics"]) - names
        assert not unknown, f"{where}: {sorted(unknown)} is not exported by controller/metrics.py"


def test_dashboard_shows_every_metric_family(promql: PromQL) -> None:
    """Look, don't read: each metric the receiver exports has a panel (a new one needs one too)."""
    used = {m for r in promql.exprs(dashboard_queries(dashboard())).values() for m in r["metrics"]}
    missing = [family for family, samples in exported_metric_names().items() if not samples & used]
    assert missing == [], f"no panel shows {missing}"


def test_dashboard_panels_for_what_the_issue_lists() -> None:
    titles = " | ".join(p["title"] for p in panels(dashboard())).lower()
    for wanted in (
        "deliveries by provider and outcome",
        "verification failures",
        "write latency",
        "gitrepos updated",
        "gitrepos in the index",
        "config reloads",
    ):
        assert wanted in titles


# The alerts ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [None, MONITORING], ids=["defaults", "monitoring-values"])
def test_rules_load_in_prometheus_and_name_only_exported_metrics(
    helm: Helm, promql: PromQL, tmp_path: Path, values: Path | None
) -> None:
    """The PrometheusRule's spec is a Prometheus rule file: loaded with Prometheus's own loader."""
    manifests = helm.template(values=[values] if values else [], sets=["prometheusRule.enabled=true"])
    spec = one(manifests, "PrometheusRule")["spec"]
    rule_file = tmp_path / "rules.yaml"
    rule_file.write_text(yaml.safe_dump(spec))
    loaded = promql.rules(rule_file)
    assert loaded == {"rules": 4, "errors": []}
    exprs = {r["alert"]: r["expr"] for r in spec["groups"][0]["rules"]}
    assert set(exprs) == set(ALERTS.values())
    names = exported()
    for alert, result in promql.exprs(exprs).items():
        assert result["error"] == ""
        assert result["unnamed"] == 0
        assert result["metrics"], alert
        assert set(result["metrics"]) <= names, f"{alert}: {result['metrics']}"
        # Every selector is limited to this release's series (the chart's ServiceMonitor labels them so).
        selectors = re.findall(r"fleet_webhook_\w+\{([^}]*)\}", exprs[alert])
        assert selectors, alert
        assert all('job="fw-fleet-webhook",namespace="cattle-fleet-system"' in s for s in selectors), alert


def test_installed_rule_as_the_api_server_stores_it_still_loads(
    helm: Helm,
    promql: PromQL,
    control_plane: ControlPlane,
    kube_api: client.ApiClient,
    release_namespace: str,
    tmp_path: Path,
) -> None:
    """What the Prometheus Operator would read back (after the CRD's schema and pruning) is a valid rule file."""
    release = unique("mon")
    helm.run(
        "install",
        release,
        str(CHART),
        "--namespace",
        release_namespace,
        "-f",
        str(MONITORING),
        kubeconfig=control_plane.kubeconfig,
    )
    # The client declares custom objects as `object`; they are the decoded JSON mapping.
    stored = cast(
        dict[str, Any],
        client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
            "monitoring.coreos.com", "v1", release_namespace, "prometheusrules", f"{release}-fleet-webhook"
        ),
    )
    rule_file = tmp_path / "stored.yaml"
    rule_file.write_text(yaml.safe_dump(stored["spec"]))
    assert promql.rules(rule_file) == {"rules": 4, "errors": []}
    dashboards = (
        client.CoreV1Api(kube_api)
        .list_namespaced_config_map(
            release_namespace, label_selector=f"app.kubernetes.io/instance={release},grafana_dashboard=1"
        )
        .items
    )
    assert [json.loads(present(c.data)["fleet-webhook.json"])["uid"] for c in dashboards] == ["fleet-webhook"]


def test_every_alert_has_a_runbook_and_docs(helm: Helm) -> None:
    docs = (REPO_ROOT / "docs" / "metrics.md").read_text()
    for rule in rules(helm.template(sets=["prometheusRule.enabled=true"])):
        assert rule["labels"]["severity"]
        annotations = rule["annotations"]
        assert annotations["summary"]
        assert len(annotations["description"]) > 300, rule["alert"]  # what it means and what to do
        assert f"### {rule['alert']}" in docs, f"docs/metrics.md has no section for {rule['alert']}"


def test_alerts_follow_their_values(helm: Helm) -> None:
    manifests = helm.template(values=[MONITORING], sets=["prometheusRule.alerts.configRejected.enabled=false"])
    by_name = {r["alert"]: r for r in rules(manifests)}
    assert set(by_name) == set(ALERTS.values()) - {"FleetWebhookConfigRejected"}
    verification = by_name["FleetWebhookVerificationFailures"]
    assert "[30m]" in verification["expr"]
    assert verification["expr"].rstrip().endswith("> 20")
    assert verification["for"] == "5m"
    assert by_name["FleetWebhookGitRepoWritesFailing"]["labels"] == {"severity": "critical", "team": "platform"}
    silent = by_name["FleetWebhookGitRepoNoWebhooks"]["expr"]
    assert silent.rstrip().endswith(f"> {2 * 86400} < {14 * 86400}")
    assert 'gitrepo_namespace!="sandbox"' in silent
    rule = one(manifests, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "rancher-monitoring"


def test_alert_selector_can_be_replaced(helm: Helm) -> None:
    for rule in rules(
        helm.template(sets=["prometheusRule.enabled=true", 'prometheusRule.selector=job="fleet-webhook"'])
    ):
        assert 'job="fleet-webhook"' in rule["expr"]
        assert "namespace=" not in rule["expr"].split("{", 1)[1].split("}")[0]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ["prometheusRule.alerts.gitRepoNoWebhooks.forgetAfter=1d"],
            "prometheusRule.alerts.gitRepoNoWebhooks.forgetAfter (1d) must be longer than silentFor (3d)",
        ),
        (
            ["prometheusRule.alerts.gitRepoNoWebhooks.silentFor=3 days"],
            "at '/prometheusRule/alerts/gitRepoNoWebhooks/silentFor': '3 days' does not match pattern",
        ),
        (["prometheusRule.alerts.writeFailures.for=soon"], "at '/prometheusRule/alerts/writeFailures/for'"),
        (["prometheusRule.alerts.writeFailures.threshold=-1"], "at '/prometheusRule/alerts/writeFailures/threshold'"),
        (['prometheusRule.selector=job="x"}'], "at '/prometheusRule/selector'"),
        (["prometheusRule.alerts.unknownAlert.enabled=true"], "additional properties 'unknownAlert' not allowed"),
        (["grafanaDashboard.namespace=Cattle_Dashboards"], "at '/grafanaDashboard/namespace'"),
    ],
    ids=["forget-before-silent", "duration-form", "for", "threshold", "selector-brace", "unknown-alert", "namespace"],
)
def test_bad_monitoring_values_fail_naming_the_field(helm: Helm, sets: list[str], message: str) -> None:
    args = ["template", "fw", str(CHART), "--set", "prometheusRule.enabled=true"]
    for item in sets:
        args += ["--set", item]
    assert message in helm.fails(*args)
