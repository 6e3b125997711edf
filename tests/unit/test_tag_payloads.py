"""Tag pushes from every provider, lightweight and annotated: what gets recorded as the commit.

Fleet deploys commits. For an annotated tag, git's ref points at a tag *object* whose id is not a
commit; each host reports that differently, so each one has a lightweight and an annotated fixture:

| provider | lightweight | annotated | commit recorded for the annotated tag |
|---|---|---|---|
| github, gitea | push-tag | push-tag-annotated | `head_commit.id` (`after` is the tag object) |
| gitlab | tag-push-lightweight | tag-push | `checkout_sha` (`after` is the tag object) |
| bitbucket | repo-push-tag-lightweight | repo-push-tag | `new.target.hash` (the target is the commit) |
| gogs | create-tag | create-tag-annotated | `sha` of the `create` event: the tag object (nothing else sent) |
| bitbucket-server | repo-refs-changed-tag | repo-refs-changed-tag-annotated | `toHash`: the tag object (nothing else sent) |
| azure-devops | git-push-tag | git-push-tag-annotated | `newObjectId`: the tag object (nothing else sent) |
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from controller import providers
from controller.deliveries import Ignored, PushEvent, RefKind
from controller.providers.base import PayloadError, WebhookRequest
from tests.support import parse_one

PAYLOADS = Path(__file__).resolve().parents[1] / "fixtures" / "payloads"
ZERO = "0" * 40


def load(provider: str, fixture: str) -> tuple[dict[str, str], Any]:
    headers = json.loads((PAYLOADS / provider / f"{fixture}.headers.json").read_text())
    body = json.loads((PAYLOADS / provider / f"{fixture}.json").read_text())
    return {k.lower(): v for k, v in headers.items()}, body


def request(provider: str, fixture: str, body: Any = None) -> WebhookRequest:
    headers, document = load(provider, fixture)
    return WebhookRequest("POST", headers, json.dumps(document if body is None else body).encode())


def tag_event(provider: str, fixture: str, body: Any = None) -> PushEvent:
    parsed = providers.by_name(provider).parse(request(provider, fixture, body))
    assert len(parsed) == 1 or provider == "bitbucket", parsed
    event = parsed[0]
    assert isinstance(event, PushEvent), event
    assert event.ref_kind is RefKind.TAG
    assert not event.deleted
    return event


# The commit each payload names for the tagged commit, read from the fixture (so the fixture and
# the expectation cannot drift apart), and the tag object id where the payload carries one.
def github_style(body: Any) -> tuple[str, str]:
    return body["head_commit"]["id"], body["after"]


CASES = [
    # provider, lightweight fixture, annotated fixture, (commit, tag object) of the annotated one
    ("github", "push-tag", "push-tag-annotated", github_style),
    ("gitea", "push-tag", "push-tag-annotated", github_style),
    ("gitlab", "tag-push-lightweight", "tag-push", lambda b: (b["checkout_sha"], b["after"])),
    (
        "bitbucket",
        "repo-push-tag-lightweight",
        "repo-push-tag",
        lambda b: (b["push"]["changes"][0]["new"]["target"]["hash"], None),
    ),
]


@pytest.mark.parametrize(("provider", "lightweight", "annotated", "ids"), CASES)
def test_an_annotated_tag_records_the_commit_not_the_tag_object(
    provider: str, lightweight: str, annotated: str, ids: Any
) -> None:
    _, body = load(provider, annotated)
    commit, tag_object = ids(body)
    event = tag_event(provider, annotated)
    assert event.commit == commit
    if tag_object is not None:
        assert tag_object != commit  # the fixture really is an annotated tag
        assert event.commit != tag_object


@pytest.mark.parametrize(("provider", "lightweight", "annotated", "ids"), CASES)
def test_a_lightweight_tag_records_its_commit(provider: str, lightweight: str, annotated: str, ids: Any) -> None:
    _, body = load(provider, lightweight)
    commit, other = ids(body)
    if other is not None:
        assert other == commit  # lightweight: the ref points at the commit itself
    assert tag_event(provider, lightweight).commit == commit


@pytest.mark.parametrize(
    ("provider", "fixture", "field"),
    [
        ("gogs", "create-tag", ("sha",)),
        ("gogs", "create-tag-annotated", ("sha",)),
        ("bitbucket-server", "repo-refs-changed-tag", ("changes", 0, "toHash")),
        ("bitbucket-server", "repo-refs-changed-tag-annotated", ("changes", 0, "toHash")),
        ("azure-devops", "git-push-tag", ("resource", "refUpdates", 0, "newObjectId")),
        ("azure-devops", "git-push-tag-annotated", ("resource", "refUpdates", 0, "newObjectId")),
    ],
)
def test_hosts_that_send_only_the_ref_value_record_it_as_sent(provider: str, fixture: str, field: Any) -> None:
    """Gogs, Bitbucket Server and Azure DevOps name no peeled commit: the ref's new value is the trigger."""
    _, body = load(provider, fixture)
    value = body
    for step in field:
        value = value[step]
    event = tag_event(provider, fixture)
    assert event.commit == value
    assert event.ref_name.startswith("v")


def test_github_tag_names_and_before() -> None:
    event = tag_event("github", "push-tag-annotated")
    assert (event.ref_name, event.before) == ("v1.9.0", ZERO)


def test_github_tag_without_head_commit_falls_back_to_after() -> None:
    _, body = load("github", "push-tag-annotated")
    body["head_commit"] = None
    assert tag_event("github", "push-tag-annotated", body).commit == body["after"]


def test_github_branch_push_never_reads_head_commit() -> None:
    _, body = load("github", "push")
    body["head_commit"] = {"id": "1" * 40}
    event = parse_one(providers.by_name("github"), request("github", "push", body))
    assert isinstance(event, PushEvent)
    assert event.commit == body["after"]


def test_github_tag_deletion_keeps_the_zero_after() -> None:
    _, body = load("github", "push-tag-annotated")
    body.update(after=ZERO, deleted=True, head_commit=None)
    event = parse_one(providers.by_name("github"), request("github", "push-tag-annotated", body))
    assert isinstance(event, PushEvent)
    assert (event.deleted, event.commit) == (True, ZERO)


def test_gogs_create_names_the_tag_with_its_repository() -> None:
    event = tag_event("gogs", "create-tag")
    assert event.ref_name == "v0.7.0"
    assert "https://gogs.example.com/example-org/fleet-apps" in event.repo_urls


def test_gogs_create_of_a_branch_is_ignored() -> None:
    _, body = load("gogs", "create-tag")
    body.update(ref_type="branch", ref="feature-x")
    parsed = parse_one(providers.by_name("gogs"), request("gogs", "create-tag", body))
    assert isinstance(parsed, Ignored)
    assert parsed.event == "create"


def test_gogs_create_without_sha_says_what_to_upgrade() -> None:
    _, body = load("gogs", "create-tag")
    del body["sha"]
    parsed = parse_one(providers.by_name("gogs"), request("gogs", "create-tag", body))
    assert isinstance(parsed, Ignored)
    assert "sha" in parsed.reason


def test_gogs_create_with_a_malformed_sha_is_a_payload_error() -> None:
    _, body = load("gogs", "create-tag")
    body["sha"] = "v0.7.0"
    with pytest.raises(PayloadError, match="sha"):
        parse_one(providers.by_name("gogs"), request("gogs", "create-tag", body))


def test_gitea_create_is_still_ignored_because_gitea_also_sends_the_push() -> None:
    headers, body = load("gitea", "push-tag")
    headers = {k: ("create" if k.endswith("-event") or k.endswith("-event-type") else v) for k, v in headers.items()}
    create = {"ref": "v2.0.0", "ref_type": "tag", "sha": body["after"], "repository": body["repository"]}
    parsed = parse_one(providers.by_name("gitea"), WebhookRequest("POST", headers, json.dumps(create).encode()))
    assert isinstance(parsed, Ignored)


def test_gitlab_push_with_checkout_sha_and_no_after_is_accepted() -> None:
    _, body = load("gitlab", "tag-push-lightweight")
    del body["after"]
    assert tag_event("gitlab", "tag-push-lightweight", body).commit == body["checkout_sha"]
    _, push = load("gitlab", "tag-push")
    del push["after"]
    assert tag_event("gitlab", "tag-push", push).commit == push["checkout_sha"]


def test_gitlab_push_without_after_or_checkout_sha_is_still_a_payload_error() -> None:
    _, body = load("gitlab", "tag-push-lightweight")
    del body["after"]
    body["checkout_sha"] = None
    with pytest.raises(PayloadError, match="after"):
        parse_one(providers.by_name("gitlab"), request("gitlab", "tag-push-lightweight", body))
