"""Installing CustomResourceDefinitions and waiting until the API serves them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tools.controlplane.cluster import ControlPlaneError
from tools.controlplane.processes import new_api_client

if TYPE_CHECKING:
    pass

# --------------------------------------------------------------------------------------------------
# CRDs


def _crd_files(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix in (".yaml", ".yml", ".json") and f.is_file())
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"CRD path {p} does not exist")
    return files


def load_crds(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Read CustomResourceDefinition documents from files and folders (*.yaml, *.yml, *.json)."""
    import yaml

    docs: list[dict[str, Any]] = []
    for path in _crd_files(paths):
        with path.open(encoding="utf-8") as f:
            for index, doc in enumerate(yaml.safe_load_all(f)):
                if doc is None:
                    continue
                if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
                    kind = doc.get("kind") if isinstance(doc, dict) else type(doc).__name__
                    raise ValueError(f"{path}: document {index} is {kind!r}, expected kind CustomResourceDefinition")
                docs.append(doc)
    return docs


def install_crds(kubeconfig: str | Path, paths: Iterable[str | Path], *, timeout: float = 30.0) -> list[str]:
    """Create (or replace) the CRDs found in `paths` with ApiextensionsV1Api and wait until each is
    Established. Returns the CRD names."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    docs = load_crds(paths)
    names: list[str] = []
    with new_api_client(kubeconfig) as api:
        ext = client.ApiextensionsV1Api(api)
        raw = client.CustomObjectsApi(api)
        crd_api = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        for doc in docs:
            name = doc["metadata"]["name"]
            names.append(name)
            # The typed model is used when it round-trips the document exactly; otherwise the raw JSON
            # goes through the generic endpoint so no schema field can be lost.
            model = client.V1CustomResourceDefinition.from_dict(doc)
            if model is not None and api.sanitize_for_serialization(model) != doc:
                model = None
            try:
                if model is not None:
                    ext.create_custom_resource_definition(model)
                else:
                    raw.create_cluster_custom_object(*crd_api, doc)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                current = ext.read_custom_resource_definition(name)
                assert current.metadata is not None
                body = json.loads(json.dumps(doc))
                body["metadata"]["resourceVersion"] = current.metadata.resource_version
                replacement = client.V1CustomResourceDefinition.from_dict(body) if model else None
                if replacement is not None:
                    ext.replace_custom_resource_definition(name, replacement)
                else:
                    raw.replace_cluster_custom_object(*crd_api, name, body)

        deadline = time.monotonic() + timeout
        pending = list(names)
        while pending:
            name = pending[0]
            status = ext.read_custom_resource_definition_status(name).status
            conditions = {c.type: c for c in (status.conditions or [])} if status else {}
            accepted = conditions.get("NamesAccepted")
            if accepted is not None and accepted.status == "False":
                raise ControlPlaneError(f"CRD {name}: names not accepted: {accepted.message}")
            established = conditions.get("Established")
            if established is not None and established.status == "True":
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"CRD {name} not Established after {timeout:.0f}s: "
                    + "; ".join(f"{t}={c.status} ({c.message})" for t, c in conditions.items())
                )
            time.sleep(0.05)
    return names
