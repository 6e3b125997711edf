"""The fallback's pure decisions (controller/polling.py): whose interval it is, and the webhook's age."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from controller import kube, polling
from controller.index import GitRepoInfo, gitrepo_info

NOW = 1_789_600_000.0


def info(**changes: Any) -> GitRepoInfo:
    base = gitrepo_info(
        {
            "metadata": {
                "namespace": "ns",
                "name": "g",
                "annotations": {"fleet-webhook.cattle.io/polling-interval-set": "1h"},
                "managedFields": [
                    {
                        "manager": "fleet-webhook",
                        "operation": "Update",
                        "fieldsV1": {"f:spec": {"f:pollingInterval": {}}},
                    },
                    {
                        "manager": "fleet-webhook",
                        "operation": "Update",
                        "subresource": "status",
                        "fieldsV1": {"f:status": {"f:webhookCommit": {}}},
                    },
                ],
            },
            "spec": {"repo": "https://github.com/o/r", "pollingInterval": "1h"},
            "status": {"lastWebhookTime": "2026-09-18T20:26:40Z"},
        }
    )
    assert base is not None
    return dataclasses.replace(base, **changes)


def test_the_field_manager_is_the_one_kube_writes_with() -> None:
    assert kube.FIELD_MANAGER == polling.FIELD_MANAGER


def test_an_interval_only_fleet_webhook_manages_is_ours() -> None:
    assert info().interval_owners == ("fleet-webhook",)
    assert polling.interval_is_ours(info()) == (True, "")


def test_the_legacy_client_default_manager_counts_as_ours() -> None:
    assert polling.interval_is_ours(info(interval_owners=("OpenAPI-Generator",)))[0]


def test_a_second_manager_or_a_last_applied_manifest_makes_it_theirs() -> None:
    ok, why = polling.interval_is_ours(info(interval_owners=("argocd-controller", "fleet-webhook")))
    assert (ok, why) == (False, "spec.pollingInterval is also managed by argocd-controller")
    assert not polling.interval_is_ours(info(interval_owners=("fleet-webhook", "last-applied")))[0]


def test_last_applied_configuration_is_read_only_for_spec_polling_interval() -> None:
    def owners(applied: object) -> tuple[str, ...]:
        parsed = gitrepo_info(
            {
                "metadata": {
                    "namespace": "ns",
                    "name": "g",
                    "annotations": {"kubectl.kubernetes.io/last-applied-configuration": json.dumps(applied)},
                },
                "spec": {"pollingInterval": "1h"},
            }
        )
        assert parsed is not None
        return parsed.interval_owners

    assert owners({"spec": {"repo": "x", "pollingInterval": "1h"}}) == ("last-applied",)
    assert owners({"spec": {"repo": "x"}, "metadata": {"labels": {"pollingInterval": "no"}}}) == ()
    assert owners("not json {") == ()


def test_a_changed_value_or_no_annotation_is_never_reverted() -> None:
    assert not polling.interval_is_ours(info(polling_interval="2h"))[0]
    assert not polling.interval_is_ours(info(managed_interval=None))[0]


def test_age_comes_from_last_webhook_time_when_the_crd_has_it() -> None:
    stamp = polling.parse_time("2026-09-18T20:26:40Z")
    assert stamp is not None
    assert polling.webhook_age(info(), stamp + 30, seen_at=None, started_at=0) == 30


def test_without_last_webhook_time_the_age_counts_from_what_this_process_saw() -> None:
    old = info(last_webhook_time="")
    assert polling.webhook_age(old, NOW, seen_at=NOW - 10, started_at=NOW - 100) == 10
    # Never seen: counted from the process start, never "infinitely old".
    assert polling.webhook_age(old, NOW, seen_at=None, started_at=NOW - 100) == 100
    assert not polling.fallback_due(old, 3600, NOW, seen_at=None, started_at=NOW - 61)
    assert polling.fallback_due(old, 60, NOW, seen_at=NOW - 61, started_at=NOW - 1000)


def test_fallback_off_or_not_ours_is_never_due() -> None:
    assert not polling.fallback_due(info(), 0, NOW, None, 0)
    assert not polling.fallback_due(info(polling_interval="2h"), 1, NOW, None, 0)
