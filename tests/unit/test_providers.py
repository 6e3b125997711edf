"""Every provider against recorded-style deliveries: verification verdicts and parsed events.

Fixtures live in tests/fixtures/payloads/<provider>/<event>.json with the request headers beside them
(`.headers.json`, no signature); tests sign each delivery at run time with SECRET.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller import deliveries, providers
from controller.deliveries import ChangedFiles, Ignored, Ping, PushEvent, RefKind
from controller.providers.base import (
    Credential,
    PayloadError,
    Provider,
    UnsupportedMediaType,
    Verdict,
    WebhookRequest,
)
from tests.support import json_values, parse_one, replace_one_node

PAYLOADS = Path(__file__).resolve().parents[1] / "fixtures" / "payloads"
SECRET = b"s3cr3t-for-tests"
OLD_SECRET = b"the-previous-secret"
WRONG = b"not-the-secret"
AZURE_USER = b"fleet-hook"
ZERO = "0" * 40
NOW = 1_789_550_000.0

FIXTURES = sorted(
    (path.parent.name, path.name.removesuffix(".json"))
    for path in PAYLOADS.glob("*/*.json")
    if not path.name.endswith(".headers.json")
)


# ------------------------------------------------------------ helpers


def document(provider: str, event: str) -> Any:
    return json.loads((PAYLOADS / provider / f"{event}.json").read_bytes())


def headers_of(provider: str, event: str) -> dict[str, str]:
    raw = json.loads((PAYLOADS / provider / f"{event}.headers.json").read_text())
    return {name.lower(): value for name, value in raw.items()}


def fixture_request(provider: str, event: str, **overrides: str) -> WebhookRequest:
    headers = headers_of(provider, event)
    headers.update({k.replace("_", "-"): v for k, v in overrides.items()})
    return WebhookRequest("POST", headers, (PAYLOADS / provider / f"{event}.json").read_bytes())


def credentials(provider: str, secret: bytes) -> dict[str, bytes]:
    if provider == "azure-devops":
        return {"azure-username": AZURE_USER, "azure-password": secret}
    return {provider: secret}


def signed(req: WebhookRequest, provider: str, secret: bytes) -> WebhookRequest:
    """The request with the authentication header the provider would add for `secret`."""
    body = req.body
    json_part = body
    if req.media_type == "application/x-www-form-urlencoded":
        json_part = urllib.parse.parse_qs(body.decode())["payload"][0].encode()
    digest = hmac.new(secret, body, hashlib.sha256).hexdigest()
    extra = {
        "github": {"x-hub-signature-256": f"sha256={digest}"},
        "gitlab": {"x-gitlab-token": secret.decode()},
        "bitbucket": {"x-hub-signature": f"sha256={digest}"},
        "bitbucket-server": {"x-hub-signature": f"sha256={digest}"},
        "gogs": {"x-gogs-signature": hmac.new(secret, json_part, hashlib.sha256).hexdigest()},
        "gitea": {"x-gitea-signature": hmac.new(secret, json_part, hashlib.sha256).hexdigest()},
        "azure-devops": {
            "authorization": "Basic " + base64.b64encode(AZURE_USER + b":" + secret).decode(),
        },
        "generic": {"x-fleet-webhook-signature": f"sha256={digest}"},
    }[provider]
    return WebhookRequest(req.method, {**req.headers, **extra}, body, req.query)


def with_headers(req: WebhookRequest, **headers: str) -> WebhookRequest:
    merged = {**req.headers, **{k.replace("_", "-"): v for k, v in headers.items()}}
    return WebhookRequest(req.method, merged, req.body, req.query)


def with_body(req: WebhookRequest, body: bytes | dict[str, Any], content_type: str | None = None) -> WebhookRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = dict(req.headers)
    if content_type is not None:
        headers["content-type"] = content_type
    return WebhookRequest(req.method, headers, raw, req.query)


def form_encoded(req: WebhookRequest) -> WebhookRequest:
    body = urllib.parse.urlencode({"payload": req.body.decode()}).encode()
    return with_body(req, body, "application/x-www-form-urlencoded")


def only(parsed: deliveries.Parsed) -> PushEvent:
    assert isinstance(parsed, PushEvent), parsed
    return parsed


# ------------------------------------------------------------ all fixtures


def test_fixture_set_covers_every_provider() -> None:
    assert {provider for provider, _ in FIXTURES} == {p.name for p in providers.PROVIDERS}
    assert len(FIXTURES) >= 22


@pytest.mark.parametrize(("provider", "event"), FIXTURES)
def test_every_fixture_is_detected_as_its_provider(provider: str, event: str) -> None:
    found = providers.detect(fixture_request(provider, event))
    assert found is not None
    assert found.name == provider


@pytest.mark.parametrize(("provider", "event"), FIXTURES)
def test_every_fixture_verifies_with_current_and_rotated_secrets(provider: str, event: str) -> None:
    p = providers.by_name(provider)
    req = fixture_request(provider, event)
    current: list[Credential] = [credentials(provider, SECRET)]
    rotating: list[Credential] = [credentials(provider, OLD_SECRET), credentials(provider, SECRET)]

    assert p.verify(signed(req, provider, SECRET), current) is Verdict.OK
    assert p.verify(signed(req, provider, SECRET), rotating) is Verdict.OK
    assert p.verify(signed(req, provider, OLD_SECRET), rotating) is Verdict.OK
    assert p.verify(signed(req, provider, WRONG), rotating) is Verdict.MISMATCH
    assert p.verify(req, current) is Verdict.MISSING
    # No usable secret at all: a signed request is still not authentic.
    assert p.verify(signed(req, provider, SECRET), []) is Verdict.MISMATCH
    assert p.verify(signed(req, provider, SECRET), [credentials(provider, b"")]) is Verdict.MISMATCH


@pytest.mark.parametrize(("provider", "event"), FIXTURES)
def test_every_fixture_parses_with_its_delivery_id(provider: str, event: str) -> None:
    p = providers.by_name(provider)
    req = fixture_request(provider, event)
    parsed = p.parse(req)
    assert parsed
    assert p.parse(req) == parsed  # deterministic
    delivery = p.delivery_id(req)
    assert delivery
    for item in parsed:
        assert item.provider == provider
        assert item.delivery_id == delivery


# GitLab tokens and Azure DevOps basic auth do not cover the body; every other scheme does.
BODY_SIGNED = [(p, e) for p, e in FIXTURES if p not in {"gitlab", "azure-devops"}]


@pytest.mark.parametrize(("provider", "event"), BODY_SIGNED)
def test_a_body_tampered_after_signing_is_a_mismatch(provider: str, event: str) -> None:
    p = providers.by_name(provider)
    req = signed(fixture_request(provider, event), provider, SECRET)
    tampered = with_body(req, req.body + b" ")
    assert p.verify(tampered, [credentials(provider, SECRET)]) is Verdict.MISMATCH


# ------------------------------------------------------------ parsed fields

GH_URLS = (
    "https://github.com/example-org/fleet-apps",
    "https://github.com/example-org/fleet-apps.git",
    "git@github.com:example-org/fleet-apps.git",
    "git://github.com/example-org/fleet-apps.git",
)
GL_URLS = (
    "https://gitlab.example.com/platform/fleet-apps",
    "https://gitlab.example.com/platform/fleet-apps.git",
    "git@gitlab.example.com:platform/fleet-apps.git",
)
BB_URLS = ("https://bitbucket.org/example-org/fleet-apps",)
BS_URLS = (
    "ssh://git@bitbucket.example.com:7999/plat/fleet-apps.git",
    "https://bitbucket.example.com/scm/plat/fleet-apps.git",
    "https://bitbucket.example.com/projects/PLAT/repos/fleet-apps/browse",
)


def test_github_push_to_a_branch() -> None:
    doc = document("github", "push")
    assert parse_one(providers.by_name("github"), fixture_request("github", "push")) == PushEvent(
        provider="github",
        delivery_id="5d8e1c70-93b1-11f0-8a4f-2c7e3b1f9d44",
        repo_urls=GH_URLS,
        ref_kind=RefKind.BRANCH,
        ref_name="main",
        commit=doc["after"],
        before=doc["before"],
        deleted=False,
        changes=ChangedFiles.of(
            frozenset(
                {
                    "infra/ingress-nginx/fleet.yaml",
                    "infra/ingress-nginx/values.yaml",
                    "infra/ingress-nginx/overlays/staging/values.yaml",
                }
            )
        ),
    )


def test_github_push_of_a_tag() -> None:
    event = only(parse_one(providers.by_name("github"), fixture_request("github", "push-tag")))
    assert (event.ref_kind, event.ref_name) == (RefKind.TAG, "v1.8.0")
    assert event.commit == document("github", "push-tag")["after"]
    assert event.before == ZERO
    assert not event.deleted


def test_github_branch_delete_is_a_deleted_push() -> None:
    event = only(parse_one(providers.by_name("github"), fixture_request("github", "push-branch-delete")))
    assert (event.ref_kind, event.ref_name, event.deleted) == (RefKind.BRANCH, "ingress-bump", True)
    assert event.commit == ZERO


def test_github_after_all_zero_counts_as_deleted_even_without_the_flag() -> None:
    doc = document("github", "push-branch-delete")
    del doc["deleted"]
    event = only(parse_one(providers.by_name("github"), with_body(fixture_request("github", "push"), doc)))
    assert event.deleted


def test_github_ping_is_a_ping_naming_the_repository() -> None:
    assert parse_one(providers.by_name("github"), fixture_request("github", "ping")) == Ping(
        "github",
        "0b6f93a0-93b1-11f0-8aa2-1b9e0d77c3e8",
        GH_URLS,
    )


def test_github_pull_request_is_ignored() -> None:
    parsed = parse_one(providers.by_name("github"), fixture_request("github", "pull-request"))
    assert isinstance(parsed, Ignored)
    assert parsed.event == "pull_request"
    assert parsed.repo_urls == GH_URLS


def test_gitlab_push_hook() -> None:
    doc = document("gitlab", "push")
    gitlab = providers.by_name("gitlab").configured({"refusesForcePush": True})  # else no file lists
    assert parse_one(gitlab, fixture_request("gitlab", "push")) == PushEvent(
        provider="gitlab",
        delivery_id="2b7d9e41-6a0c-4c1f-8e35-90d4a7b3f621",  # Idempotency-Key: the same on every retry
        repo_urls=GL_URLS,
        ref_kind=RefKind.BRANCH,
        ref_name="main",
        commit=doc["checkout_sha"],
        before=doc["before"],
        changes=ChangedFiles.of(frozenset({"monitoring/prometheus/values.yaml"})),
    )


def test_gitlab_tag_push_records_the_commit_the_tag_points_at() -> None:
    doc = document("gitlab", "tag-push")
    event = only(parse_one(providers.by_name("gitlab"), fixture_request("gitlab", "tag-push")))
    assert (event.ref_kind, event.ref_name) == (RefKind.TAG, "v2.4.0")
    assert event.commit == doc["checkout_sha"] != doc["after"]


def test_gitlab_system_hook_push_is_a_push() -> None:
    event = only(parse_one(providers.by_name("gitlab"), fixture_request("gitlab", "system-hook-push")))
    assert (event.ref_kind, event.ref_name) == (RefKind.BRANCH, "release-2.4")
    assert event.repo_urls == GL_URLS


def test_gitlab_other_system_hooks_and_merge_requests_are_ignored() -> None:
    gitlab = providers.by_name("gitlab")
    mr = parse_one(gitlab, fixture_request("gitlab", "merge-request"))
    assert isinstance(mr, Ignored)
    assert mr.event == "Merge Request Hook"
    project_created = with_body(
        fixture_request("gitlab", "system-hook-push"), {"event_name": "project_create", "name": "fleet-apps"}
    )
    parsed = parse_one(gitlab, project_created)
    assert isinstance(parsed, Ignored)
    assert parsed.event == "System Hook (project_create)"


def test_gitlab_branch_delete_has_null_checkout_sha() -> None:
    doc = document("gitlab", "push")
    doc.update(after=ZERO, checkout_sha=None, commits=[], total_commits_count=0)
    event = only(parse_one(providers.by_name("gitlab"), with_body(fixture_request("gitlab", "push"), doc)))
    assert event.deleted
    assert event.commit == ZERO


def test_gitlab_delivery_id_falls_back_to_the_webhook_uuid() -> None:
    req = fixture_request("gitlab", "push")
    headers = {k: v for k, v in req.headers.items() if k != "idempotency-key"}
    assert providers.by_name("gitlab").delivery_id(WebhookRequest("POST", headers, req.body)) == (
        "f1a2c3d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
    )


def test_bitbucket_cloud_push_of_a_branch() -> None:
    doc = document("bitbucket", "repo-push")
    change = doc["push"]["changes"][0]
    assert providers.by_name("bitbucket").parse(fixture_request("bitbucket", "repo-push")) == (
        PushEvent(
            provider="bitbucket",
            delivery_id="1f6a0c3e-4b2d-4e97-8a15-c0d9e8f7a6b5",
            repo_urls=BB_URLS,
            ref_kind=RefKind.BRANCH,
            ref_name="main",
            commit=change["new"]["target"]["hash"],
            before=change["old"]["target"]["hash"],
        ),
    )


def test_bitbucket_cloud_push_with_a_tag_and_a_deleted_branch_yields_both() -> None:
    provider = providers.by_name("bitbucket")
    req = fixture_request("bitbucket", "repo-push-tag")
    tag, deleted = (only(e) for e in provider.parse(req))
    assert (tag.ref_kind, tag.ref_name, tag.deleted, tag.before) == (RefKind.TAG, "v3.1.0", False, None)
    assert (deleted.ref_kind, deleted.ref_name, deleted.deleted, deleted.commit) == (
        RefKind.BRANCH,
        "hotfix-ingress",
        True,
        ZERO,
    )


def test_bitbucket_cloud_changes_keep_the_order_they_were_sent_in() -> None:
    doc = document("bitbucket", "repo-push-tag")
    doc["push"]["changes"].reverse()
    parsed = providers.by_name("bitbucket").parse(with_body(fixture_request("bitbucket", "repo-push-tag"), doc))
    assert [(only(e).ref_name, only(e).deleted) for e in parsed] == [("hotfix-ingress", True), ("v3.1.0", False)]


def test_bitbucket_cloud_pull_request_is_ignored() -> None:
    parsed = parse_one(providers.by_name("bitbucket"), fixture_request("bitbucket", "pullrequest-created"))
    assert isinstance(parsed, Ignored)
    assert parsed.event == "pullrequest:created"
    assert parsed.repo_urls == BB_URLS


def test_bitbucket_cloud_hook_uuid_is_not_a_credential() -> None:
    req = fixture_request("bitbucket", "repo-push")
    uuid = req.header("x-hook-uuid").encode()
    assert providers.by_name("bitbucket").verify(req, [{"bitbucket": uuid}]) is Verdict.MISSING


def test_bitbucket_server_refs_changed_yields_every_change() -> None:
    doc = document("bitbucket-server", "repo-refs-changed")
    branch, tag = providers.by_name("bitbucket-server").parse(fixture_request("bitbucket-server", "repo-refs-changed"))
    assert branch == PushEvent(
        provider="bitbucket-server",
        delivery_id="e4c2a1b0-9f8e-4d7c-b6a5-3f2e1d0c9b8a",
        repo_urls=BS_URLS,
        ref_kind=RefKind.BRANCH,
        ref_name="main",
        commit=doc["changes"][0]["toHash"],
        before=doc["changes"][0]["fromHash"],
    )
    assert (only(tag).ref_kind, only(tag).ref_name, only(tag).before) == (RefKind.TAG, "v0.9.2", ZERO)


def test_bitbucket_server_delete_change_is_deleted() -> None:
    doc = document("bitbucket-server", "repo-refs-changed")
    doc["changes"] = [{**doc["changes"][0], "toHash": ZERO, "type": "DELETE"}]
    event = only(
        parse_one(
            providers.by_name("bitbucket-server"),
            with_body(fixture_request("bitbucket-server", "repo-refs-changed"), doc),
        )
    )
    assert event.deleted


def test_bitbucket_server_test_connection_is_a_ping() -> None:
    parsed = parse_one(providers.by_name("bitbucket-server"), fixture_request("bitbucket-server", "diagnostics-ping"))
    assert parsed == Ping("bitbucket-server", "0d1c2b3a-4f5e-4687-9a8b-c7d6e5f4a3b2")


def test_gogs_push() -> None:
    doc = document("gogs", "push")
    gogs = providers.by_name("gogs").configured({"refusesForcePush": True})  # else no file lists
    assert parse_one(gogs, fixture_request("gogs", "push")) == PushEvent(
        provider="gogs",
        delivery_id="0e5f4d3c-2b1a-4908-8f7e-6d5c4b3a2910",
        repo_urls=(
            "https://gogs.example.com/example-org/fleet-apps",
            "https://gogs.example.com/example-org/fleet-apps.git",
            "git@gogs.example.com:example-org/fleet-apps.git",
        ),
        ref_kind=RefKind.BRANCH,
        ref_name="main",
        commit=doc["after"],
        before=doc["before"],
        changes=ChangedFiles.of(frozenset({"apps/gateway/fleet.yaml"})),
    )


@pytest.mark.parametrize(
    ("event", "delivery", "host"),
    [
        ("push", "3b9e2f71-c4d8-4a60-8e15-7f2a9c0d6b48", "gitea.example.com"),
        ("push-forgejo", "a6c4e2f0-1b3d-4f57-9e8c-2d4b6f8a0c1e", "codeberg.org"),
    ],
)
def test_gitea_and_forgejo_push(event: str, delivery: str, host: str) -> None:
    parsed = only(parse_one(providers.by_name("gitea"), fixture_request("gitea", event)))
    assert parsed.delivery_id == delivery
    assert parsed.repo_urls[0] == f"https://{host}/example-org/fleet-apps"
    assert parsed.commit == document("gitea", event)["after"]


def test_azure_devops_push() -> None:
    doc = document("azure-devops", "git-push")
    update = doc["resource"]["refUpdates"][0]
    assert parse_one(providers.by_name("azure-devops"), fixture_request("azure-devops", "git-push")) == PushEvent(
        provider="azure-devops",
        delivery_id="8e0f2a4c-6b8d-4f1a-9c3e-5b7d9f1a3c5e",
        repo_urls=("https://dev.azure.com/example-org/Platform/_git/fleet-apps",),
        ref_kind=RefKind.BRANCH,
        ref_name="main",
        commit=update["newObjectId"],
        before=update["oldObjectId"],
    )


def test_azure_devops_legacy_visualstudio_url_is_passed_on_as_sent() -> None:
    event = only(parse_one(providers.by_name("azure-devops"), fixture_request("azure-devops", "git-push-legacy-url")))
    assert event.repo_urls == ("https://example-org.visualstudio.com/Platform%20Team/_git/fleet-apps",)


def test_azure_devops_push_with_several_ref_updates() -> None:
    doc = document("azure-devops", "git-push")
    doc["resource"]["repository"]["sshUrl"] = "git@ssh.dev.azure.com:v3/example-org/Platform/fleet-apps"
    doc["resource"]["refUpdates"] = [
        {"name": "refs/heads/old-feature", "oldObjectId": "a" * 40, "newObjectId": ZERO},
        {"name": "refs/tags/v5.0.0", "oldObjectId": ZERO, "newObjectId": "b" * 40},
    ]
    provider = providers.by_name("azure-devops")
    req = with_body(fixture_request("azure-devops", "git-push"), doc)
    deleted, tag = (only(e) for e in provider.parse(req))
    assert deleted.deleted
    assert (tag.ref_kind, tag.ref_name, tag.commit, tag.deleted) == (RefKind.TAG, "v5.0.0", "b" * 40, False)
    assert tag.repo_urls[1] == "git@ssh.dev.azure.com:v3/example-org/Platform/fleet-apps"


def test_azure_devops_pull_request_is_ignored() -> None:
    parsed = parse_one(providers.by_name("azure-devops"), fixture_request("azure-devops", "git-pullrequest-created"))
    assert isinstance(parsed, Ignored)
    assert parsed.event == "git.pullrequest.created"


def test_generic_push_and_ping() -> None:
    generic = providers.by_name("generic")
    doc = document("generic", "push")
    assert parse_one(generic, fixture_request("generic", "push")) == PushEvent(
        provider="generic",
        delivery_id="post-receive-5c0e7a21-1789548900",
        repo_urls=(
            "https://git.example.com/platform/fleet-apps.git",
            "ssh://git@git.example.com:2222/platform/fleet-apps.git",
        ),
        ref_kind=RefKind.BRANCH,
        ref_name="main",
        commit=doc["commit"],
        before=doc["before"],
    )
    assert parse_one(generic, fixture_request("generic", "ping")) == Ping("generic", "ping-2b9d4f60")


def test_generic_event_header_defaults_to_push() -> None:
    req = fixture_request("generic", "push")
    headers = {k: v for k, v in req.headers.items() if k != "x-fleet-webhook-event"}
    assert isinstance(parse_one(providers.by_name("generic"), WebhookRequest("POST", headers, req.body)), PushEvent)


# ------------------------------------------------------------ content types


@pytest.mark.parametrize(("provider", "event"), [("github", "push"), ("gitea", "push"), ("gogs", "push")])
def test_form_encoded_deliveries_parse_like_json(provider: str, event: str) -> None:
    p = providers.by_name(provider)
    req = fixture_request(provider, event)
    assert parse_one(p, form_encoded(req)) == parse_one(p, req)


def test_github_form_delivery_is_signed_over_the_raw_body() -> None:
    github = providers.by_name("github")
    form = form_encoded(fixture_request("github", "push"))
    assert github.verify(signed(form, "github", SECRET), [{"github": SECRET}]) is Verdict.OK
    json_signature = hmac.new(SECRET, fixture_request("github", "push").body, hashlib.sha256).hexdigest()
    forged = with_headers(form, x_hub_signature_256=f"sha256={json_signature}")
    assert github.verify(forged, [{"github": SECRET}]) is Verdict.MISMATCH


@pytest.mark.parametrize(("provider", "header"), [("gitea", "x-gitea-signature"), ("gogs", "x-gogs-signature")])
def test_gitea_and_gogs_form_deliveries_are_signed_over_the_json(provider: str, header: str) -> None:
    p = providers.by_name(provider)
    form = form_encoded(fixture_request(provider, "push"))
    assert p.verify(signed(form, provider, SECRET), [{provider: SECRET}]) is Verdict.OK
    raw_body_signature = hmac.new(SECRET, form.body, hashlib.sha256).hexdigest()
    assert p.verify(with_headers(form, **{header: raw_body_signature}), [{provider: SECRET}]) is Verdict.MISMATCH


@pytest.mark.parametrize("header", ["x-forgejo-signature", "x-gitea-signature", "x-gogs-signature"])
def test_gitea_accepts_any_of_its_signature_headers(header: str) -> None:
    req = fixture_request("gitea", "push-forgejo")
    signature = hmac.new(SECRET, req.body, hashlib.sha256).hexdigest()
    assert providers.by_name("gitea").verify(with_headers(req, **{header: signature}), [{"gitea": SECRET}]) is (
        Verdict.OK
    )


def test_a_garbled_form_body_is_a_mismatch_not_a_crash() -> None:
    req = with_body(fixture_request("gitea", "push"), b"payload=%ff%fe&\xff", "application/x-www-form-urlencoded")
    assert providers.by_name("gitea").verify(with_headers(req, x_gitea_signature="ab" * 32), [{"gitea": SECRET}]) is (
        Verdict.MISMATCH
    )
    with pytest.raises(PayloadError):
        parse_one(providers.by_name("gitea"), req)


@pytest.mark.parametrize(("provider", "event"), FIXTURES)
@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "Application/JSON ; charset=UTF-8"])
def test_json_with_content_type_parameters_parses(provider: str, event: str, content_type: str) -> None:
    p = providers.by_name(provider)
    req = fixture_request(provider, event)
    assert p.parse(with_headers(req, content_type=content_type)) == p.parse(req)


@pytest.mark.parametrize(("provider", "event"), FIXTURES)
def test_unsupported_content_types_are_415(provider: str, event: str) -> None:
    req = with_headers(fixture_request(provider, event), content_type="text/plain")
    with pytest.raises(UnsupportedMediaType, match="text/plain"):
        providers.by_name(provider).parse(req)


@pytest.mark.parametrize(
    ("provider", "event"),
    [
        ("gitlab", "push"),
        ("bitbucket", "repo-push"),
        ("bitbucket-server", "repo-refs-changed"),
        ("generic", "push"),
    ],
)
def test_form_encoding_is_415_where_the_host_never_sends_it(provider: str, event: str) -> None:
    with pytest.raises(UnsupportedMediaType):
        parse_one(providers.by_name(provider), form_encoded(fixture_request(provider, event)))


# ------------------------------------------------------------ verification


@pytest.mark.parametrize(
    "value",
    [
        "sha256=",
        "sha256",
        "s",
        "sha1=abc",
        "sha256=zz",
        "sha256=ÿÿÿ",
        "sha256=" + "0" * 64,
        "=" * 300,
        "sha256=\x00\x01",
        "🙂",
    ],
)
@pytest.mark.parametrize(
    ("provider", "header"),
    [
        ("github", "x-hub-signature-256"),
        ("bitbucket", "x-hub-signature"),
        ("bitbucket-server", "x-hub-signature"),
        ("generic", "x-fleet-webhook-signature"),
        ("gogs", "x-gogs-signature"),
        ("gitea", "x-gitea-signature"),
        ("gitlab", "x-gitlab-token"),
        ("gitlab", "webhook-signature"),
        ("azure-devops", "authorization"),
    ],
)
def test_odd_signature_values_are_mismatches(provider: str, header: str, value: str) -> None:
    event = {"bitbucket": "repo-push", "bitbucket-server": "repo-refs-changed", "azure-devops": "git-push"}
    req = with_headers(fixture_request(provider, event.get(provider, "push")), **{header: value})
    assert providers.by_name(provider).verify(req, [credentials(provider, SECRET)]) is Verdict.MISMATCH


@pytest.mark.parametrize(
    ("provider", "event", "header"),
    [
        ("github", "push", "x-hub-signature-256"),
        ("bitbucket", "repo-push", "x-hub-signature"),
        ("bitbucket-server", "repo-refs-changed", "x-hub-signature"),
        ("generic", "push", "x-fleet-webhook-signature"),
    ],
)
def test_the_sha256_prefix_is_required(provider: str, event: str, header: str) -> None:
    req = fixture_request(provider, event)
    bare = hmac.new(SECRET, req.body, hashlib.sha256).hexdigest()
    p = providers.by_name(provider)
    assert p.verify(with_headers(req, **{header: bare}), [{provider: SECRET}]) is Verdict.MISMATCH
    assert p.verify(with_headers(req, **{header: "SHA256=" + bare.upper()}), [{provider: SECRET}]) is Verdict.OK


def test_github_sha1_signature_only_counts_when_enabled() -> None:
    req = fixture_request("github", "push")
    sha1 = with_headers(req, x_hub_signature="sha1=" + hmac.new(SECRET, req.body, hashlib.sha1).hexdigest())
    creds: list[Credential] = [{"github": SECRET}]
    assert providers.GitHubProvider().verify(sha1, creds) is Verdict.MISSING
    assert providers.GitHubProvider(accept_sha1=True).verify(sha1, creds) is Verdict.OK
    assert providers.GitHubProvider(accept_sha1=True).verify(sha1, [{"github": WRONG}]) is Verdict.MISMATCH
    # With both headers, the SHA-256 one decides.
    both = with_headers(signed(req, "github", WRONG), x_hub_signature=sha1.header("x-hub-signature"))
    assert providers.GitHubProvider(accept_sha1=True).verify(both, creds) is Verdict.MISMATCH


def standard_webhook(
    req: WebhookRequest, key: bytes, *, msg_id: str = "msg_2Xk9", ts: int = int(NOW)
) -> WebhookRequest:
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + req.body, hashlib.sha256).digest()
    return with_headers(
        req,
        webhook_id=msg_id,
        webhook_timestamp=str(ts),
        webhook_signature="v1," + base64.b64encode(mac).decode(),
    )


def test_gitlab_standard_webhooks_signature() -> None:
    gitlab = providers.GitLabProvider(now=lambda: NOW)
    req = fixture_request("gitlab", "push")
    key = b"\x8f\x10signing-key-bytes\x00\xff"
    whsec = b"whsec_" + base64.b64encode(key)

    assert gitlab.verify(standard_webhook(req, key), [{"gitlab": whsec}]) is Verdict.OK
    assert gitlab.verify(standard_webhook(req, b"raw-key"), [{"gitlab": b"raw-key"}]) is Verdict.OK
    assert gitlab.verify(standard_webhook(req, b"other"), [{"gitlab": whsec}]) is Verdict.MISMATCH
    assert gitlab.verify(standard_webhook(req, key, ts=int(NOW) - 301), [{"gitlab": whsec}]) is Verdict.MISMATCH
    assert gitlab.verify(standard_webhook(req, key, ts=int(NOW) + 301), [{"gitlab": whsec}]) is Verdict.MISMATCH
    assert gitlab.verify(standard_webhook(req, key, ts=int(NOW) - 299), [{"gitlab": whsec}]) is Verdict.OK
    # Signed over a different id than the one sent.
    wrong_id = with_headers(standard_webhook(req, key), webhook_id="msg_other")
    assert gitlab.verify(wrong_id, [{"gitlab": whsec}]) is Verdict.MISMATCH
    # Several space-separated signatures (key rotation on GitLab's side): one valid is enough.
    good = standard_webhook(req, key)
    several = with_headers(good, webhook_signature="v1,AAAA v2,zzz " + good.header("webhook-signature"))
    assert gitlab.verify(several, [{"gitlab": whsec}]) is Verdict.OK
    # A malformed whsec_ secret never verifies (and never raises).
    assert gitlab.verify(good, [{"gitlab": b"whsec_***not base64***"}]) is Verdict.MISMATCH


@pytest.mark.parametrize("stamp", ["", "soon", "-5", "1e9", "١٢٣", "9" * 40])
def test_gitlab_malformed_signature_timestamps_are_mismatches(stamp: str) -> None:
    gitlab = providers.GitLabProvider(now=lambda: NOW)
    req = with_headers(standard_webhook(fixture_request("gitlab", "push"), SECRET), webhook_timestamp=stamp)
    assert gitlab.verify(req, [{"gitlab": SECRET}]) is Verdict.MISMATCH


def test_gitlab_token_and_signature_together() -> None:
    gitlab = providers.GitLabProvider(now=lambda: NOW)
    req = standard_webhook(signed(fixture_request("gitlab", "push"), "gitlab", SECRET), SECRET)
    assert gitlab.verify(req, [{"gitlab": SECRET}]) is Verdict.OK
    assert gitlab.verify(req, [{"gitlab": WRONG}]) is Verdict.MISMATCH


def test_azure_basic_auth_user_and_password_must_match_in_the_same_set() -> None:
    azure = providers.by_name("azure-devops")
    req = signed(fixture_request("azure-devops", "git-push"), "azure-devops", SECRET)
    split: list[Credential] = [
        {"azure-username": AZURE_USER, "azure-password": WRONG},
        {"azure-username": b"someone-else", "azure-password": SECRET},
    ]
    assert azure.verify(req, split) is Verdict.MISMATCH
    assert azure.verify(req, [{"azure-password": SECRET}]) is Verdict.MISMATCH
    assert azure.verify(req, [*split, {"azure-username": AZURE_USER, "azure-password": SECRET}]) is Verdict.OK


@pytest.mark.parametrize(
    "value",
    [
        "Bearer abc",
        "Basic",
        "Basic !!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(AZURE_USER + b":" + SECRET).decode()[:-2],
    ],
)
def test_azure_malformed_authorization_is_a_mismatch(value: str) -> None:
    req = with_headers(fixture_request("azure-devops", "git-push"), authorization=value)
    assert providers.by_name("azure-devops").verify(req, [credentials("azure-devops", SECRET)]) is Verdict.MISMATCH


def test_azure_password_may_contain_colons() -> None:
    req = signed(fixture_request("azure-devops", "git-push"), "azure-devops", b"pa:ss:word")
    assert providers.by_name("azure-devops").verify(req, [credentials("azure-devops", b"pa:ss:word")]) is Verdict.OK


# ------------------------------------------------------------ payload errors


def mutated(provider: str, event: str, change: Mapping[str, Any]) -> WebhookRequest:
    doc = document(provider, event)
    for dotted, value in change.items():
        *parents, last = dotted.split(".")
        node = doc
        for step in parents:
            node = node[int(step)] if isinstance(node, list) else node[step]
        if isinstance(node, list):
            node[int(last)] = value
        elif value is ...:
            del node[last]
        else:
            node[last] = value
    return with_body(fixture_request(provider, event), doc)


@pytest.mark.parametrize(
    ("provider", "event", "change", "message"),
    [
        ("github", "push", {"after": 42}, "field 'after' must be a string, got number"),
        ("github", "push", {"after": ...}, "field 'after' is missing"),
        ("github", "push", {"after": "HEAD"}, "field 'after' must be a 40- or 64-digit hex commit SHA"),
        ("github", "push", {"ref": ["main"]}, "field 'ref' must be a string, got array"),
        ("github", "push", {"repository": None}, "field 'repository' is missing"),
        ("github", "push", {"repository": "fleet-apps"}, "field 'repository' must be a JSON object"),
        (
            "github",
            "push",
            {"repository": {"name": "fleet-apps"}},
            "field 'repository' names no repository URL",
        ),
        ("github", "push", {"deleted": "yes"}, "field 'deleted' must be a boolean"),
        ("github", "push", {"before": 0}, "field 'before' must be a string"),
        ("gitlab", "push", {"checkout_sha": 7}, "field 'checkout_sha' must be a string"),
        ("gitlab", "push", {"project": None, "repository": None}, "field 'project' names no repository URL"),
        ("bitbucket", "repo-push", {"push.changes": []}, "field 'push.changes' must not be empty"),
        ("bitbucket", "repo-push", {"push": None}, "field 'push.changes' is missing"),
        (
            "bitbucket",
            "repo-push",
            {"push.changes.0.new.target.hash": None},
            "'push.changes[0].new.target.hash'",
        ),
        (
            "bitbucket",
            "repo-push",
            {"push.changes.0.new": None, "push.changes.0.old": None},
            "neither 'new' nor 'old'",
        ),
        ("bitbucket", "repo-push", {"repository": None}, "field 'repository' is missing"),
        ("bitbucket-server", "repo-refs-changed", {"changes": {}}, "field 'changes' must be an array"),
        (
            "bitbucket-server",
            "repo-refs-changed",
            {"changes.0.toHash": ...},
            "field 'changes[0].toHash' is missing",
        ),
        (
            "bitbucket-server",
            "repo-refs-changed",
            {"changes.1": "refs/tags/x"},
            "field 'changes[1]' must be a JSON",
        ),
        (
            "bitbucket-server",
            "repo-refs-changed",
            {"repository.links": {}},
            "'repository.links' names no repository",
        ),
        ("gogs", "push", {"repository": None}, "field 'repository' is missing"),
        ("gitea", "push", {"after": None}, "field 'after' is missing"),
        ("azure-devops", "git-push", {"eventType": ...}, "field 'eventType' is missing"),
        (
            "azure-devops",
            "git-push",
            {"resource.refUpdates": []},
            "field 'resource.refUpdates' must not be empty",
        ),
        ("azure-devops", "git-push", {"resource.repository": None}, "field 'resource.repository' is missing"),
        (
            "azure-devops",
            "git-push",
            {"resource.refUpdates.0.name": True},
            "'resource.refUpdates[0].name' must be",
        ),
        (
            "generic",
            "push",
            {"repository": ..., "repositories": ...},
            "field 'repository' (or 'repositories')",
        ),
        ("generic", "push", {"repositories": [1]}, "field 'repositories[0]' must be a string"),
        ("generic", "push", {"commit": "0123"}, "field 'commit' must be a 40- or 64-digit hex commit SHA"),
    ],
)
def test_malformed_payloads_name_the_field(provider: str, event: str, change: dict[str, Any], message: str) -> None:
    with pytest.raises(PayloadError) as caught:
        providers.by_name(provider).parse(mutated(provider, event, change))
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("provider", "event", "header"),
    [
        ("github", "push", "X-GitHub-Event"),
        ("gitlab", "push", "X-Gitlab-Event"),
        ("bitbucket", "repo-push", "X-Event-Key"),
        ("bitbucket-server", "repo-refs-changed", "X-Event-Key"),
        ("gogs", "push", "X-Gogs-Event"),
        ("gitea", "push", "X-Forgejo-Event"),
    ],
)
def test_missing_event_header_is_a_payload_error_naming_it(provider: str, event: str, header: str) -> None:
    req = fixture_request(provider, event)
    names = {header.lower(), "x-gitea-event"}
    stripped = WebhookRequest("POST", {k: v for k, v in req.headers.items() if k not in names}, req.body)
    with pytest.raises(PayloadError, match=f"header {header} is missing"):
        parse_one(providers.by_name(provider), stripped)


@pytest.mark.parametrize(
    "body", [b"", b"[]", b"null", b"{", b'{"a": NaN}', b"\xff\xfe", b'"push"', b"[" * 5000 + b"]" * 5000]
)
@pytest.mark.parametrize("provider", providers.PROVIDERS, ids=lambda p: p.name)
def test_broken_json_is_a_payload_error(provider: Provider, body: bytes) -> None:
    event = {"bitbucket": "repo-push", "bitbucket-server": "repo-refs-changed", "azure-devops": "git-push"}
    req = with_body(fixture_request(provider.name, event.get(provider.name, "push")), body)
    with pytest.raises(PayloadError):
        provider.parse(req)


# ------------------------------------------------------------ totality

JSON = json_values(max_text=50, max_leaves=25)


@st.composite
def mutated_fixture(draw: st.DrawFn) -> tuple[str, WebhookRequest]:
    """A fixture with one node somewhere in its JSON replaced by arbitrary JSON."""
    provider, event = draw(st.sampled_from(FIXTURES))
    doc: Any = document(provider, event)
    replace_one_node(draw, doc, lambda _old: JSON)
    return provider, with_body(fixture_request(provider, event), doc)


def parse_totally(provider: Provider, req: WebhookRequest) -> None:
    try:
        parsed = provider.parse(req)
    except (PayloadError, UnsupportedMediaType):
        return
    assert parsed
    for item in parsed:
        assert isinstance(item, (PushEvent, Ping, Ignored))
        if isinstance(item, PushEvent):
            assert item.repo_urls or item.repo_path  # a path only when the payload names no URL
            assert len(item.commit) in (40, 64)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_fixture())
def test_parse_of_a_mutated_fixture_never_crashes(case: tuple[str, WebhookRequest]) -> None:
    provider, req = case
    parse_totally(providers.by_name(provider), req)


@settings(max_examples=200)
@given(
    provider=st.sampled_from(providers.PROVIDERS),
    event=st.sampled_from(FIXTURES),
    body=JSON | st.builds(lambda b: b, st.binary(max_size=200)),
    content_type=st.sampled_from(["application/json", "application/x-www-form-urlencoded", "", "text/plain"]),
)
def test_parse_of_arbitrary_bodies_never_crashes(
    provider: Provider, event: tuple[str, str], body: Any, content_type: str
) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    if content_type == "application/x-www-form-urlencoded" and not isinstance(body, bytes):
        raw = urllib.parse.urlencode({"payload": raw.decode()}).encode()
    req = with_body(fixture_request(*event), raw, content_type)
    parse_totally(provider, req)


@settings(max_examples=200)
@given(
    provider=st.sampled_from(providers.PROVIDERS),
    event=st.sampled_from(FIXTURES),
    headers=st.dictionaries(
        st.sampled_from(
            [
                "x-hub-signature-256",
                "x-hub-signature",
                "x-gitlab-token",
                "webhook-id",
                "webhook-timestamp",
                "webhook-signature",
                "x-gogs-signature",
                "x-gitea-signature",
                "x-forgejo-signature",
                "authorization",
                "x-fleet-webhook-signature",
                "content-type",
            ]
        ),
        st.text(max_size=80),
    ),
    secrets=st.lists(st.binary(max_size=40), max_size=3),
)
def test_verify_never_raises(
    provider: Provider, event: tuple[str, str], headers: dict[str, str], secrets: list[bytes]
) -> None:
    req = with_headers(fixture_request(*event), **headers)
    creds: list[Credential] = [{key: secret for key in provider.secret_keys} for secret in secrets]
    assert provider.verify(req, creds) in set(Verdict)
