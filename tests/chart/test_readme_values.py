"""The values file the README shows installs what it says: docs that cannot rot silently."""

from __future__ import annotations

import re
from pathlib import Path

from tests.chart.support import CHART, Helm

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_values_lint_and_render_the_promised_objects(helm: Helm, tmp_path: Path) -> None:
    section = README.read_text().split("## Install in a cluster", 1)[1]
    match = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert match, "README's install section shows a values file"
    values = tmp_path / "my-values.yaml"
    values.write_text(match.group(1))
    helm.run("lint", "--strict", str(CHART), "-f", str(values))
    manifests = helm.template(values=[values])
    kinds = {m["kind"] for m in manifests}
    assert {"Deployment", "Service", "Ingress", "Secret", "ConfigMap"} <= kinds
    (ingress,) = [m for m in manifests if m["kind"] == "Ingress"]
    assert ingress["spec"]["rules"][0]["host"] == "webhooks.example.com"
    (configmap,) = [m for m in manifests if m["kind"] == "ConfigMap"]
    assert "fallbackAfter: 24h" in configmap["data"]["config.yaml"]
