"""The files each provider says a push changed, and every case where its payload cannot tell."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from controller.decisions import collapse
from controller.deliveries import ChangedFiles, PushEvent
from controller.providers import by_name
from controller.providers.base import PayloadError, WebhookRequest
from tests.support import ZERO, fixture, parse_one, sha

# provider -> (fixture, the files its commits list)
LISTED = {
    "github": (
        "push",
        {
            "infra/ingress-nginx/fleet.yaml",
            "infra/ingress-nginx/values.yaml",
            "infra/ingress-nginx/overlays/staging/values.yaml",
        },
    ),
    "gitlab": ("push", {"monitoring/prometheus/values.yaml"}),
    "gitea": ("push", {"apps/gateway/fleet.yaml"}),
    "gogs": ("push", {"apps/gateway/fleet.yaml"}),
}


# Hosts that do not mark force pushes list files only with `refusesForcePush` (tests below).
UNMARKED = frozenset({"gitlab", "gitea", "gogs"})


def parse(provider: str, event: str, edit: Any = None, *, refuses_force_push: bool | None = None) -> PushEvent:
    """`provider`'s fixture, edited; hosts in UNMARKED as configured with `refusesForcePush` unless told."""
    if refuses_force_push is None:
        refuses_force_push = provider in UNMARKED
    headers, body = fixture(provider, event)
    doc = copy.deepcopy(body)
    if edit is not None:
        edit(doc)
    request = WebhookRequest("POST", {k.lower(): v for k, v in headers.items()}, json.dumps(doc).encode())
    options = {"refusesForcePush": True} if refuses_force_push else {}
    parsed = parse_one(by_name(provider).configured(options), request)
    assert isinstance(parsed, PushEvent)
    return parsed


def commits(n: int, files: list[str] | None = None) -> list[dict[str, Any]]:
    return [
        {"id": sha(f"c{i}"), "added": [], "modified": files or [f"apps/a{i}/x.yaml"], "removed": []} for i in range(n)
    ]


@pytest.mark.parametrize("provider", sorted(LISTED))
def test_each_provider_lists_the_union_of_its_commits_files(provider: str) -> None:
    event, files = LISTED[provider]
    assert parse(provider, event).changes == ChangedFiles.of(frozenset(files))


def test_added_modified_and_removed_all_count_and_a_rename_names_both_sides() -> None:
    def edit(doc: dict[str, Any]) -> None:
        doc["commits"][-1].update(added=["apps/new/x.yaml"], modified=[], removed=["apps/old/x.yaml"])

    changes = parse("gitea", "push", edit).changes
    assert changes.paths == frozenset({"apps/new/x.yaml", "apps/old/x.yaml"})


@pytest.mark.parametrize("provider", ["bitbucket", "bitbucket-server", "azure-devops", "generic"])
def test_hosts_without_file_lists_cannot_tell(provider: str) -> None:
    event = {"bitbucket": "repo-push", "bitbucket-server": "repo-refs-changed", "azure-devops": "git-push"}
    headers, body = fixture(provider, event.get(provider, "push"))
    request = WebhookRequest("POST", {k.lower(): v for k, v in headers.items()}, json.dumps(body).encode())
    for parsed in by_name(provider).parse(request):
        assert isinstance(parsed, PushEvent)
        assert parsed.changes.paths is None
        assert parsed.changes.unknown == "the payload lists no changed files"


def with_commits(n: int, **fields: Any) -> Any:
    def edit(doc: dict[str, Any]) -> None:
        doc["commits"] = commits(n)
        doc["after"] = doc["commits"][-1]["id"]
        if "checkout_sha" in doc:
            doc["checkout_sha"] = doc["after"]
        if isinstance(doc.get("head_commit"), dict):
            doc["head_commit"]["id"] = doc["after"]
        doc.update(fields)

    return edit


@pytest.mark.parametrize(
    ("provider", "edit", "unknown"),
    [
        ("gitea", with_commits(5, total_commits=12), "the payload lists 5 of the push's 12 commits"),
        ("gitlab", with_commits(20, total_commits_count=31), "the payload lists 20 of the push's 31 commits"),
        ("github", with_commits(20), "the payload lists 20 commits, the most github lists, so some may be missing"),
        ("gogs", with_commits(5), "the payload lists 5 commits, the most gogs lists, so some may be missing"),
    ],
    ids=["gitea-total", "gitlab-total", "github-20", "gogs-5"],
)
def test_a_cut_commit_list_cannot_tell(provider: str, edit: Any, unknown: str) -> None:
    assert parse(provider, "push", edit).changes == ChangedFiles.cannot_tell(unknown)


@pytest.mark.parametrize(
    ("provider", "edit"),
    [
        ("gitea", with_commits(5, total_commits=5)),
        ("gitlab", with_commits(20, total_commits_count=20)),
        ("github", with_commits(19)),
        ("gogs", with_commits(4)),
    ],
    ids=["gitea-5-of-5", "gitlab-20-of-20", "github-19", "gogs-4"],
)
def test_a_complete_list_just_under_the_cap_is_read(provider: str, edit: Any) -> None:
    changes = parse(provider, "push", edit).changes
    assert changes.paths is not None
    assert "apps/a0/x.yaml" in changes.paths


def test_gitea_without_a_count_falls_back_to_the_cap() -> None:
    def edit(doc: dict[str, Any]) -> None:
        with_commits(5)(doc)
        del doc["total_commits"]

    assert parse("gitea", "push", edit).changes.paths is None


@pytest.mark.parametrize(
    ("provider", "fields", "unknown"),
    [
        ("github", {"forced": True}, "forced push: the file lists do not say what the replaced commits had changed"),
        ("github", {"before": ZERO, "created": True}, "the push created the ref"),
        ("gitlab", {"before": ZERO}, "the push created the ref"),
        ("gitea", {"before": ZERO}, "the push created the ref"),
        ("gitea", {"commits": [], "total_commits": 0}, "the payload lists no commits for this push"),
        ("gitlab", {"commits": [], "total_commits_count": 0}, "the payload lists no commits for this push"),
    ],
)
def test_created_forced_and_commitless_pushes_cannot_tell(provider: str, fields: dict[str, Any], unknown: str) -> None:
    changes = parse(provider, "push", lambda doc: doc.update(fields)).changes
    assert changes.paths is None
    assert changes.unknown.startswith(unknown)


def test_a_deleted_branch_cannot_tell() -> None:
    assert parse("github", "push-branch-delete").changes.unknown == "the push deleted the ref"


def test_tag_pushes_cannot_tell() -> None:
    for provider, event in [("github", "push-tag"), ("gitea", "push-tag"), ("gitlab", "tag-push")]:
        assert parse(provider, event).changes.paths is None, (provider, event)


def test_the_pushed_commit_must_be_among_the_listed_ones() -> None:
    def edit(doc: dict[str, Any]) -> None:
        doc["after"] = sha("elsewhere")
        doc["head_commit"]["id"] = doc["after"]

    changes = parse("github", "push", edit).changes
    assert changes.unknown == f"the pushed commit {sha('elsewhere')[:12]} is not among the listed commits"


@pytest.mark.parametrize(
    ("value", "unknown"),
    [
        (None, "commits[1].modified is not a list of file paths"),
        ("apps/a/x.yaml", "commits[1].modified is not a list of file paths"),
        ([1, 2], "commits[1].modified is not a list of file paths"),
        ([f"apps/{i}.yaml" for i in range(1000)], "commits[1].modified lists 1000 files, so the host may have cut it"),
    ],
    ids=["null", "string", "numbers", "too-long"],
)
def test_malformed_or_huge_file_lists_cannot_tell_and_never_fail_the_delivery(value: Any, unknown: str) -> None:
    changes = parse("github", "push", lambda doc: doc["commits"][1].update(modified=value)).changes
    assert changes == ChangedFiles.cannot_tell(unknown)


def test_generic_changed_files() -> None:
    def edit(doc: dict[str, Any]) -> None:
        doc.update(before=sha("b"), changedFiles=["apps/a/x.yaml", "apps/b/y.yaml"])

    assert parse("generic", "push", edit).changes.paths == frozenset({"apps/a/x.yaml", "apps/b/y.yaml"})
    without_before = parse("generic", "push", lambda doc: doc.update(changedFiles=["a/x"], before=None))
    assert without_before.changes.unknown.startswith("changedFiles without a 'before' commit")


@pytest.mark.parametrize("value", ["apps/a", [1], {"a": 1}])
def test_generic_changed_files_of_the_wrong_type_is_a_bad_payload(value: Any) -> None:
    with pytest.raises(PayloadError, match="field 'changedFiles' must be an array of strings"):
        parse("generic", "push", lambda doc: doc.update(changedFiles=value))


def test_several_changes_to_one_ref_in_one_delivery_cannot_tell() -> None:
    url = ("https://github.com/example-org/fleet-apps",)
    first = PushEvent("generic", "d", url, parse("gitea", "push").ref_kind, "main", sha("b"), sha("a"))
    second = PushEvent(
        "generic", "d", url, first.ref_kind, "main", sha("c"), sha("b"), changes=ChangedFiles.of(frozenset({"x/y"}))
    )
    [kept] = collapse([first, second])
    assert kept.commit == sha("c")
    assert kept.changes.paths is None
    assert kept.changes.unknown == "the delivery moved the ref several times"


# --- unknown means trigger: lists a host leaves empty, force pushes a host does not mark ---------


def test_a_commit_whose_lists_are_all_empty_cannot_tell() -> None:
    """GitHub leaves `added`/`modified`/`removed` empty for very large commits: not "changed nothing"."""

    def edit(doc: dict[str, Any]) -> None:
        doc["commits"][0].update(added=[], modified=[], removed=[])

    changes = parse("github", "push", edit).changes
    assert changes.paths is None
    assert changes.unknown == "commits[0] lists no files (GitHub leaves the lists empty for very large commits)"


def test_a_github_push_without_the_forced_flag_cannot_tell() -> None:
    changes = parse("github", "push", lambda doc: doc.pop("forced")).changes
    assert changes.paths is None
    assert changes.unknown.startswith("the payload does not say whether the push was forced")


@pytest.mark.parametrize("provider", ["gitlab", "gitea", "gogs"])
def test_hosts_that_do_not_mark_force_pushes_cannot_tell_by_default(provider: str) -> None:
    """A force push on these hosts lists only the new commits: what the dropped ones changed is lost."""
    changes = parse(provider, "push", refuses_force_push=False).changes
    assert changes.paths is None
    assert changes.unknown == (
        f"{provider} does not mark force pushes, so the file lists may miss what replaced commits had "
        f"changed (set providers.{provider}.refusesForcePush when branch protection refuses them)"
    )


@pytest.mark.parametrize("provider", ["gitlab", "gitea", "gogs"])
def test_refuses_force_push_reads_the_file_lists(provider: str) -> None:
    event, files = LISTED[provider]
    assert parse(provider, event, refuses_force_push=True).changes == ChangedFiles.of(frozenset(files))
