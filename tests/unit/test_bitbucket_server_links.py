"""Bitbucket Server `repo:refs_changed` without `repository.links`: the configured base URL names the repository.

Some Bitbucket Server versions (captures from 5.x exist) send the repository as project key and slug
only. Fleet's receiver and this one used to answer 400, so the server marked the hook failing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from controller import config as cfg
from controller import providers
from controller.deliveries import Ignored, Parsed, PushEvent, RefKind
from controller.normalize import repo_key
from controller.providers.base import PayloadError, WebhookRequest

PAYLOADS = Path(__file__).resolve().parents[1] / "fixtures" / "payloads" / "bitbucket-server"
BASE = "https://bitbucket.example.com"
# How the same server names the repository when it does send links (repo-refs-changed fixture).
CLONE_HTTPS = "https://bitbucket.example.com/scm/plat/fleet-apps.git"
CLONE_SSH = "ssh://git@bitbucket.example.com:7999/plat/fleet-apps.git"


def request(body: object | None = None) -> WebhookRequest:
    headers = json.loads((PAYLOADS / "repo-refs-changed-no-links.headers.json").read_text())
    raw = (PAYLOADS / "repo-refs-changed-no-links.json").read_bytes() if body is None else json.dumps(body).encode()
    return WebhookRequest("POST", {k.lower(): v for k, v in headers.items()}, raw)


def document() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((PAYLOADS / "repo-refs-changed-no-links.json").read_text())
    return doc


def parse() -> tuple[Parsed, ...]:
    return providers.by_name("bitbucket-server").parse(request())


def test_the_fixture_really_has_no_links() -> None:
    repository = document()["repository"]
    assert isinstance(repository, dict)
    assert "links" not in repository


def test_a_payload_without_links_parses_to_a_push_naming_the_repository_path() -> None:
    (event,) = parse()
    assert isinstance(event, PushEvent)
    assert (event.ref_kind, event.ref_name) == (RefKind.BRANCH, "main")
    assert event.repo_urls == ()
    assert event.repo_path == "scm/plat/fleet-apps.git"


def test_the_base_url_completes_a_url_that_matches_the_servers_clone_urls() -> None:
    (event,) = providers.complete_urls(parse(), BASE)
    assert isinstance(event, PushEvent)
    assert event.repo_urls == (CLONE_HTTPS,)
    assert repo_key(event.repo_urls[0]) == repo_key(CLONE_HTTPS) == repo_key(CLONE_SSH)


def test_a_base_url_with_a_context_path_keeps_it() -> None:
    (event,) = providers.complete_urls(parse(), "https://git.example.com/bitbucket")
    assert isinstance(event, PushEvent)
    assert event.repo_urls == ("https://git.example.com/bitbucket/scm/plat/fleet-apps.git",)


def test_without_a_base_url_the_answer_says_what_to_configure() -> None:
    (ignored,) = providers.complete_urls(parse(), "")
    assert isinstance(ignored, Ignored)
    assert ignored.event == "repo:refs_changed"
    assert "providers.bitbucket-server.baseUrl" in ignored.reason
    assert "bitbucketServerBaseUrl" in ignored.reason
    assert "<baseUrl>/scm/plat/fleet-apps.git" in ignored.reason


def test_payloads_with_links_are_left_alone() -> None:
    raw = (PAYLOADS / "repo-refs-changed.json").read_bytes()
    headers = json.loads((PAYLOADS / "repo-refs-changed.headers.json").read_text())
    parsed = providers.by_name("bitbucket-server").parse(
        WebhookRequest("POST", {k.lower(): v for k, v in headers.items()}, raw)
    )
    assert providers.complete_urls(parsed, BASE) == parsed == providers.complete_urls(parsed, "")


def test_personal_projects_keep_their_tilde() -> None:
    doc = document()
    doc["repository"]["project"]["key"] = "~JSILVA"
    (event,) = providers.complete_urls(providers.by_name("bitbucket-server").parse(request(doc)), BASE)
    assert isinstance(event, PushEvent)
    assert event.repo_urls == ("https://bitbucket.example.com/scm/~jsilva/fleet-apps.git",)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("slug", None, "repository.slug"),
        ("slug", "a/b", "single path segments"),
        ("project", None, "repository.project.key"),
    ],
)
def test_without_links_key_and_slug_are_required(field: str, value: object, message: str) -> None:
    doc = document()
    doc["repository"][field] = value
    with pytest.raises(PayloadError, match=message):
        providers.by_name("bitbucket-server").parse(request(doc))


def test_config_names_the_base_url_globally_and_per_route() -> None:
    c = cfg.load_text(
        "providers:\n  bitbucket-server:\n    baseUrl: https://bitbucket.example.com\n"
        "routes:\n  - path: /\n  - path: /dc\n    bitbucketServerBaseUrl: https://dc.example.com/bitbucket\n",
        "c.yaml",
    )
    assert c.bitbucket_server_base_url(c.route_for("/")) == "https://bitbucket.example.com"
    assert c.bitbucket_server_base_url(c.route_for("/dc")) == "https://dc.example.com/bitbucket"
    assert cfg.default_config().bitbucket_server_base_url(None) == ""


@pytest.mark.parametrize(
    "value", ["bitbucket.example.com", "https://bitbucket.example.com/", "ftp://x", "https://h/a?b", "https://"]
)
def test_config_rejects_a_base_url_that_cannot_prefix_scm(value: str) -> None:
    with pytest.raises(cfg.ConfigError) as caught:
        cfg.load_text(f"providers:\n  bitbucket-server:\n    baseUrl: '{value}'\n", "bad.yaml")
    assert "bad.yaml:3: $.providers.bitbucket-server.baseUrl" in str(caught.value)
