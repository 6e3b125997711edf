"""Generate chart/values.schema.json from schema/config.schema.json plus the chart's own settings.

    python tools/gen_values_schema.py           write chart/values.schema.json
    python tools/gen_values_schema.py --check   exit 1 when the committed file is stale (CI, tests)
    make chart-schema                           the same as the first form

What goes in:

* `config` is the controller config schema, embedded whole: `helm install` then rejects a config the
  controller would reject at start-up, naming the field (`at '/config/polling/webhookInterval': ...`).
  Its `$schema` and `$id` are dropped inside the embedding (a nested `$id` would re-base references
  on a URL helm's loader could try to fetch; the embedded copy is not the canonical document).
* The chart's own settings are declared below (CHART_PROPERTIES). Their descriptions are not written
  twice: each one is the comment right above the key in chart/values.yaml, which is where users read
  them. A declared setting without a documented default in values.yaml, or a key in values.yaml the
  schema does not declare, stops the generator: values.yaml stays documented in place.

helm v3.22 validates with santhosh-tekuri/jsonschema v6, which honours the `$schema` keyword, so the
output declares draft-07 (the dialect of the config schema) explicitly: without it the validator would
assume draft 2020-12. `additionalProperties: false` is set on every object the chart owns, so a typo
fails the install instead of being ignored; `global` is accepted for use as a subchart.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run as a script: `python tools/gen_values_schema.py`

from controller.providers import SECRET_KEYS  # noqa: E402 - needs the path above

CONFIG_SCHEMA = REPO_ROOT / "schema" / "config.schema.json"
VALUES_YAML = REPO_ROOT / "chart" / "values.yaml"
OUTPUT = REPO_ROOT / "chart" / "values.schema.json"
DRAFT_07 = "http://json-schema.org/draft-07/schema#"

Schema = dict[str, Any]

# Building blocks ---------------------------------------------------------------------------------

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_1035_LABEL_OR_EMPTY = r"^([a-z]([-a-z0-9]*[a-z0-9])?)?$"
DNS_SUBDOMAIN_OR_EMPTY = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)?$"
HOSTNAME_OR_EMPTY = DNS_SUBDOMAIN_OR_EMPTY
PERCENT = r"^[0-9]+%$"
PROMETHEUS_DURATION = r"^([0-9]+(ms|s|m|h|d|w|y))+$"
# One number and one unit: the chart turns it into seconds for PromQL arithmetic (fleet-webhook.seconds).
SIMPLE_DURATION = r"^[0-9]+(s|m|h|d|w)$"
DNS_LABEL_OR_EMPTY = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$"
# A label key (optional DNS-subdomain prefix and `/`) and a label value, as Kubernetes accepts them.
LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
# PromQL label matchers without braces, e.g. `job="fleet-webhook",namespace!="sandbox"` (or nothing).
MATCHERS = r"^[^{}]*$"
QUANTITY = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"
# A provider key, optionally followed by a rotation suffix (config.secrets.previousSuffix, e.g. `.previous`).
# Secret keys are lower-case words joined by `-`, so they need no escaping inside the pattern.
assert all(re.fullmatch(r"[a-z]+(-[a-z]+)*", key) for key in SECRET_KEYS), SECRET_KEYS
SECRET_KEY = "^(" + "|".join(SECRET_KEYS) + r")([-._][-._a-zA-Z0-9]{0,31})?$"


def strict(properties: dict[str, Schema], **extra: Any) -> Schema:
    """An object the chart owns: only the listed keys."""
    return {"type": "object", "additionalProperties": False, "properties": properties, **extra}


def string_map() -> Schema:
    """Labels/annotations/nodeSelector: string values only (a bare `true` or `1` would be rejected by the API)."""
    return {"type": "object", "additionalProperties": {"type": "string"}}


def k8s_object(what: str) -> Schema:
    """A Kubernetes structure passed through as is (checked by the API server, not here)."""
    return {"type": "object", "description": what}


def k8s_list(what: str, required: list[str] | None = None) -> Schema:
    """A list of Kubernetes structures passed through as is."""
    item: Schema = {"type": "object"}
    if required:
        item["required"] = required
    return {"type": "array", "items": item, "description": what}


def int_or_percent() -> Schema:
    return {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": PERCENT}]}


def alert(**extra: Schema) -> Schema:
    """One alert of the PrometheusRule: on/off, severity, `for`, and its own knobs."""
    return strict(
        {
            "enabled": {"type": "boolean"},
            "severity": {"type": "string", "minLength": 1, "maxLength": 63, "pattern": LABEL_VALUE},
            "for": {"type": "string", "pattern": PROMETHEUS_DURATION},
            **extra,
        }
    )


def probe() -> Schema:
    return strict(
        {
            "initialDelaySeconds": {"type": "integer", "minimum": 0},
            "periodSeconds": {"type": "integer", "minimum": 1},
            "timeoutSeconds": {"type": "integer", "minimum": 1},
            "failureThreshold": {"type": "integer", "minimum": 1},
        }
    )


# The chart's own settings (everything in values.yaml except `config`) ------------------------------

CHART_PROPERTIES: dict[str, Schema] = {
    "replicaCount": {"type": "integer", "minimum": 0},
    "updateStrategy": strict({"maxSurge": int_or_percent(), "maxUnavailable": int_or_percent()}),
    "autoscaling": strict(
        {
            "enabled": {"type": "boolean"},
            "minReplicas": {"type": "integer", "minimum": 1},
            "maxReplicas": {"type": "integer", "minimum": 1},
            "targetCPUUtilizationPercentage": {"type": "integer", "minimum": 1, "maximum": 1000},
        }
    ),
    "image": strict(
        {
            "repository": {"type": "string", "minLength": 1},
            "tag": {"type": "string"},
            "digest": {"type": "string", "pattern": r"^(sha256:[a-f0-9]{64})?$"},
            "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
        }
    ),
    "imagePullSecrets": {
        "type": "array",
        "items": strict({"name": {"type": "string", "minLength": 1}}, required=["name"]),
    },
    "nameOverride": {"type": "string", "maxLength": 63, "pattern": DNS_1035_LABEL_OR_EMPTY},
    "fullnameOverride": {"type": "string", "maxLength": 63, "pattern": DNS_1035_LABEL_OR_EMPTY},
    "settings": strict(
        {
            "logLevel": {"enum": ["debug", "info", "warning", "error"]},
            "logFormat": {"enum": ["json", "text"]},
            "shutdownDelaySeconds": {"type": "integer", "minimum": 0, "maximum": 300},
            "shutdownGraceSeconds": {"type": "integer", "minimum": 0, "maximum": 600},
            "sharedOrder": {"type": ["boolean", "null"]},
        }
    ),
    "relay": strict(
        {
            "role": {"enum": ["", "publish", "consume"]},
            "url": {"type": "string", "pattern": r"^((nats|tls)://[^,\s]+(,\s*(nats|tls)://[^,\s]+)*)?$"},
            "existingSecret": {"type": "string", "pattern": DNS_SUBDOMAIN_OR_EMPTY, "maxLength": 253},
            "secretKeys": {
                "type": "array",
                "items": {"enum": ["nats.creds", "ca.crt", "tls.crt", "tls.key"]},
                "uniqueItems": True,
            },
            "maxAgeSeconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 31536000},
        }
    ),
    "extraEnv": k8s_list("EnvVar objects.", required=["name"]),
    "webhookSecret": strict(
        {
            "create": {"type": "boolean"},
            # patternProperties rather than propertyNames: helm then reports `additional properties
            # 'githb' not allowed` at /webhookSecret/data (its propertyNames errors point elsewhere).
            "data": {
                "type": "object",
                "patternProperties": {SECRET_KEY: {"type": "string", "minLength": 1}},
                "additionalProperties": False,
            },
            "annotations": string_map(),
        }
    ),
    "serviceAccount": strict(
        {
            "create": {"type": "boolean"},
            "name": {"type": "string", "maxLength": 253, "pattern": DNS_SUBDOMAIN_OR_EMPTY},
            "annotations": string_map(),
        }
    ),
    "rbac": strict({"create": {"type": "boolean"}}),
    "service": strict(
        {
            "name": {"type": "string", "maxLength": 63, "pattern": DNS_1035_LABEL_OR_EMPTY},
            "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "annotations": string_map(),
        }
    ),
    "ingress": strict(
        {
            "enabled": {"type": "boolean"},
            "form": {"enum": ["plain", "nginx-rewrite"]},
            "className": {"type": "string"},
            "host": {"type": "string", "maxLength": 253, "pattern": HOSTNAME_OR_EMPTY},
            "annotations": string_map(),
            "tls": strict(
                {
                    "enabled": {"type": "boolean"},
                    "secretName": {"type": "string", "maxLength": 253, "pattern": DNS_SUBDOMAIN_OR_EMPTY},
                }
            ),
        }
    ),
    "resources": strict(
        {
            "requests": {"type": "object", "additionalProperties": {"type": ["string", "number"]}},
            "limits": {"type": "object", "additionalProperties": {"type": ["string", "number"]}},
            "claims": {"type": "array", "items": {"type": "object"}},
        }
    ),
    "livenessProbe": probe(),
    "readinessProbe": probe(),
    "terminationGracePeriodSeconds": {"type": "integer", "minimum": 1},
    "podSecurityContext": k8s_object("PodSecurityContext."),
    "securityContext": k8s_object("SecurityContext of the container."),
    "tmpSizeLimit": {"type": "string", "pattern": QUANTITY},
    "extraVolumes": k8s_list("Volume objects.", required=["name"]),
    "extraVolumeMounts": k8s_list("VolumeMount objects.", required=["name", "mountPath"]),
    "podAnnotations": string_map(),
    "podLabels": string_map(),
    "priorityClassName": {"type": "string"},
    "nodeSelector": string_map(),
    "tolerations": k8s_list("Toleration objects."),
    "affinity": k8s_object("Affinity."),
    "topologySpreadConstraints": k8s_list("TopologySpreadConstraint objects.", required=["maxSkew", "topologyKey"]),
    "defaultTopologySpread": {"type": "boolean"},
    "podDisruptionBudget": strict(
        {
            "enabled": {"type": "boolean"},
            "maxUnavailable": int_or_percent(),
            "minAvailable": {
                "oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": r"^([0-9]+%)?$"}]
            },
        }
    ),
    "networkPolicy": strict(
        {
            "enabled": {"type": "boolean"},
            "from": k8s_list("NetworkPolicyPeer objects."),
            # At least one peer: an empty `from` would open /metrics and /readyz to every source.
            "metrics": strict({"from": {**k8s_list("NetworkPolicyPeer objects."), "minItems": 1}}),
        }
    ),
    "fleetReceiverNetworkPolicy": strict(
        {
            "enabled": {"type": "boolean"},
            "podSelector": {**string_map(), "minProperties": 1},
            "openPorts": {
                "type": "array",
                "items": strict(
                    {
                        # 8080 is Fleet's receiver, the port this policy exists to close.
                        "port": {"type": "integer", "minimum": 1, "maximum": 65535, "not": {"const": 8080}},
                        "protocol": {"enum": ["TCP", "UDP", "SCTP"]},
                    },
                    required=["port"],
                ),
            },
        }
    ),
    "serviceMonitor": strict(
        {
            "enabled": {"type": "boolean"},
            "interval": {"type": "string", "pattern": PROMETHEUS_DURATION},
            "scrapeTimeout": {"type": "string", "pattern": PROMETHEUS_DURATION},
            "labels": string_map(),
        }
    ),
    "grafanaDashboard": strict(
        {
            "enabled": {"type": "boolean"},
            "namespace": {"type": "string", "maxLength": 63, "pattern": DNS_LABEL_OR_EMPTY},
            "sidecarLabel": {"type": "string", "minLength": 1, "pattern": LABEL_KEY},
            "sidecarLabelValue": {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE},
            "folderAnnotation": {"type": "string", "minLength": 1, "pattern": LABEL_KEY},
            "folder": {"type": "string"},
            "labels": string_map(),
            "annotations": string_map(),
        }
    ),
    "prometheusRule": strict(
        {
            "enabled": {"type": "boolean"},
            "labels": string_map(),
            # Matchers only: the braces are the template's. promql-parse checks what they render to.
            "selector": {"type": "string", "pattern": MATCHERS},
            "alertLabels": string_map(),
            "alerts": strict(
                {
                    "verificationFailures": alert(
                        window={"type": "string", "pattern": PROMETHEUS_DURATION},
                        threshold={"type": "number", "minimum": 0},
                    ),
                    "writeFailures": alert(
                        window={"type": "string", "pattern": PROMETHEUS_DURATION},
                        threshold={"type": "number", "minimum": 0},
                    ),
                    "gitRepoNoWebhooks": alert(
                        silentFor={"type": "string", "pattern": SIMPLE_DURATION},
                        forgetAfter={"type": "string", "pattern": SIMPLE_DURATION},
                        matchers={"type": "string", "pattern": MATCHERS},
                    ),
                    "configRejected": alert(),
                }
            ),
        }
    ),
    "commonLabels": string_map(),
}

# Documented as a whole in values.yaml: their sub-keys need no comment of their own (and may be absent).
DOCUMENTED_AS_A_WHOLE = {("resources",)}


# values.yaml comments ----------------------------------------------------------------------------

KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(\s|$)")


class GenerateError(Exception):
    """values.yaml and the declared settings disagree."""


def values_comments(text: str) -> dict[tuple[str, ...], str]:
    """Comment text right above each key of values.yaml, by key path ("" when there is none).

    Only block-style mappings are followed (what values.yaml uses); list items end the tracking of
    deeper keys. A comment block starts after a blank line, so file headers don't leak into keys.
    """
    found: dict[tuple[str, ...], str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped:
            pending = []
            continue
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        match = KEY_LINE.match(raw)
        if match is None:  # a list item or a continuation: not a documented key
            pending = []
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        text_lines = [line.removeprefix("--").strip() for line in pending]
        found[tuple(key for _, key in stack)] = " ".join(line for line in text_lines if line)
        pending = []
    return found


def _describe(node: Schema, path: tuple[str, ...], comments: dict[tuple[str, ...], str], problems: list[str]) -> Schema:
    """A copy of `node` with descriptions from values.yaml, recursing into objects the chart owns."""
    out = copy.deepcopy(node)
    name = ".".join(path)
    if path not in comments:
        problems.append(f"{name}: declared in the schema but not set in chart/values.yaml")
    elif not comments[path]:
        problems.append(f"{name}: no comment above it in chart/values.yaml")
    else:
        out["description"] = comments[path]
    if path in DOCUMENTED_AS_A_WHOLE:
        return out
    for key, sub in node.get("properties", {}).items():
        out["properties"][key] = _describe(sub, (*path, key), comments, problems)
    return out


def _undeclared(comments: dict[tuple[str, ...], str], properties: dict[str, Schema]) -> list[str]:
    """values.yaml keys the schema does not declare (under objects whose keys the chart owns)."""
    problems = []
    for path in comments:
        if path[0] == "config":
            continue
        node: Schema | None = {"properties": properties}
        for depth, key in enumerate(path):
            if node is None or "properties" not in node:
                break  # free-form below this point (resources.requests, podSecurityContext, ...)
            if key not in node["properties"]:
                problems.append(f"{'.'.join(path[: depth + 1])}: set in chart/values.yaml but not declared")
                break
            node = node["properties"][key]
    return problems


# Assembly ----------------------------------------------------------------------------------------


def config_property(config_schema: Schema) -> Schema:
    """The controller config schema as the `config` property."""
    embedded = {k: v for k, v in config_schema.items() if k not in ("$schema", "$id")}
    embedded["description"] = (
        "Controller config (schema/config.schema.json), rendered into the ConfigMap and hot-reloaded. "
        + config_schema.get("description", "")
    ).strip()
    return embedded


def build(config_schema: Schema, values_text: str) -> Schema:
    """The full values schema. Raises GenerateError when values.yaml and the declarations disagree."""
    comments = values_comments(values_text)
    problems: list[str] = []
    properties: dict[str, Schema] = {}
    if ("config",) not in comments:
        problems.append("config: not set in chart/values.yaml")
    properties["config"] = config_property(config_schema)
    for key, node in CHART_PROPERTIES.items():
        properties[key] = _describe(node, (key,), comments, problems)
    problems += _undeclared(comments, CHART_PROPERTIES)
    if problems:
        raise GenerateError("\n".join(problems))
    properties["global"] = {"type": "object", "description": "Values shared with a parent chart (unused here)."}
    return {
        "$schema": DRAFT_07,
        "title": "fleet-webhook Helm chart values",
        "description": "Generated by tools/gen_values_schema.py from schema/config.schema.json and chart/values.yaml;"
        " do not edit (run `make chart-schema`).",
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
    }


def render(config_path: Path = CONFIG_SCHEMA, values_path: Path = VALUES_YAML) -> str:
    """The file content of chart/values.schema.json."""
    config_schema = json.loads(config_path.read_text(encoding="utf-8"))
    schema = build(config_schema, values_path.read_text(encoding="utf-8"))
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/gen_values_schema.py", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the committed file differs")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"default: {OUTPUT.relative_to(REPO_ROOT)}")
    args = parser.parse_args(argv)
    try:
        text = render()
    except GenerateError as exc:
        print(f"chart/values.yaml and tools/gen_values_schema.py disagree:\n{exc}", file=sys.stderr)
        return 2
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run `make chart-schema`", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
