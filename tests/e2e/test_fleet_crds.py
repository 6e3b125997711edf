"""tools/fleet.py gives tests Fleet's real CRDs file (charts/fleet-crd/templates/crds.yaml of v0.16.1)."""

from __future__ import annotations

from tools.controlplane import load_crds
from tools.fleet import FLEET_CRDS, fleet_crds_file


def test_fleet_crds_file_holds_fleets_14_crds_with_the_gitrepo_status_fields() -> None:
    path = fleet_crds_file()
    assert path.parts[-4:] == ("charts", "fleet-crd", "templates", "crds.yaml")
    docs = {d["metadata"]["name"]: d for d in load_crds([path])}
    assert sorted(docs) == sorted(FLEET_CRDS)
    gitrepo = docs["gitrepos.fleet.cattle.io"]["spec"]["versions"][0]
    assert gitrepo["subresources"] == {"status": {}}
    status = gitrepo["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert {"webhookCommit", "lastWebhookTime", "commit", "pollingCommit"} <= set(status)
