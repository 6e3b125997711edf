"""Bitbucket Server and Data Center webhooks.

Headers read:
  - `X-Event-Key` (detection, after Bitbucket Cloud has had its chance, and event name). Bitbucket
    Server always sends `X-Request-Id` alongside it.
  - `X-Request-Id` (delivery id).
  - `X-Hub-Signature: sha256=<hex>`: HMAC-SHA256 of the raw body with the `bitbucket-server` secret.
    The prefix is checked, never sliced off blindly.

Content type: `application/json` only.

Events:
  - `diagnostics:ping` ("Test connection") -> Ping.
  - `repo:refs_changed` -> one PushEvent per entry of `changes`, in order:
      repo_urls   every `repository.links.clone[].href` and `repository.links.self[].href`. Some
                  versions send a repository without `links`: the event then carries
                  `repo_path` = `scm/<project.key lower-cased>/<slug>.git` and no URL, and
                  `complete_urls` builds `<baseUrl>/scm/...` from the configured base URL (without
                  one the delivery is answered 200 with a reason naming the setting)
      ref         `changes[i].refId`, else `changes[i].ref.id`
      commit      `changes[i].toHash`. For an annotated tag that is the tag object, not the commit
                  (the payload names no peeled commit); recorded as sent, which Fleet >= v0.16
                  takes as a trigger and resolves the tag itself (docs/providers/bitbucket-server.md)
      before      `changes[i].fromHash`
      deleted     `changes[i].type` is `DELETE`, or `toHash` is all zeros
  - anything else (`pr:*`, `repo:modified`, `mirror:repo_synchronized`, ...) -> Ignored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from controller import deliveries
from controller.providers import base


def repository_urls(document: Any) -> tuple[str, ...]:
    urls: list[str] = []
    for kind in ("clone", "self"):
        links = base.dig(document, "repository", "links", kind)
        if isinstance(links, list):
            urls.extend(base.text(link, "href") for link in links)
    return base.texts(*urls)


class BitbucketServerProvider(base.Provider):
    """Bitbucket Server / Data Center."""

    name: ClassVar[str] = "bitbucket-server"
    title: ClassVar[str] = "Bitbucket Server / Data Center (X-Hub-Signature sha256)."
    secret_keys: ClassVar[tuple[str, ...]] = ("bitbucket-server",)
    detect_headers: ClassVar[tuple[str, ...]] = ("X-Event-Key",)
    delivery_headers: ClassVar[tuple[str, ...]] = ("X-Request-Id",)
    event_header: ClassVar[str | None] = "x-event-key"
    push_headers: ClassVar[Mapping[str, str]] = {"x-event-key": "repo:refs_changed"}
    sample_events: ClassVar[tuple[str, ...]] = ("repo:refs_changed", "diagnostics:ping", "pr:opened")
    options_schema: ClassVar[Mapping[str, Any]] = {
        "baseUrl": {
            "type": "string",
            "maxLength": 2048,
            "pattern": r"^(https?://[^/?#\s]+(/[^?#\s]*[^/?#\s])?)?$",
            "default": "",
            "description": "The server's base URL, e.g. `https://bitbucket.example.com` (with its context path, "
            "if any, and no trailing slash). Some Bitbucket Server versions send `repo:refs_changed` with a "
            "repository that has no `links`; the receiver then builds `<baseUrl>/scm/<project key>/<slug>` to "
            "match GitRepos. Without it such a delivery is answered 200 with a reason saying to set this. "
            "Several servers: give each its own route with `routes[].bitbucketServerBaseUrl`.",
        }
    }

    def authenticate(self, request: base.WebhookRequest, credentials: Sequence[base.Credential]) -> base.Authentication:
        secrets = base.values_for(credentials, "bitbucket-server")
        return base.hex_signature_auth(request.header("x-hub-signature"), secrets, prefix="sha256=")

    def sign(self, headers: Mapping[str, str], body: bytes, credential: base.Credential) -> dict[str, str]:
        secret = credential["bitbucket-server"]
        return base.with_hex_signature(headers, "X-Hub-Signature", secret, body, prefix="sha256=")

    def parse(self, request: base.WebhookRequest) -> tuple[deliveries.Parsed, ...]:
        event = base.require_header(request, "X-Event-Key")
        delivery = self.delivery_id(request)
        document = base.require_object(base.json_document(request, allow_form=False))
        if event == "diagnostics:ping":
            return (deliveries.Ping(self.name, delivery, repository_urls(document)),)
        if event != "repo:refs_changed":
            return (
                deliveries.Ignored(
                    self.name,
                    delivery,
                    event=event,
                    reason="only repo:refs_changed moves a GitRepo",
                    repo_urls=repository_urls(document),
                ),
            )
        base.require_field_object(document, "repository")
        urls = repository_urls(document)
        repo_path = ""
        if not urls and base.dig(document, "repository", "links") is None:
            repo_path = repository_path(document)  # no links at all: project key and slug name it
        elif not urls:
            base.require_urls(urls, "repository.links")  # links that name nothing are a bad payload
        changes = base.require_list(document, "changes")
        return tuple(self._change(delivery, urls, repo_path, document, index) for index in range(len(changes)))

    def _change(
        self, delivery: str | None, urls: tuple[str, ...], repo_path: str, document: Any, index: int
    ) -> deliveries.PushEvent:
        path: tuple[str | int, ...] = ("changes", index)
        base.require_field_object(document, *path)
        if base.dig(document, *path, "refId") is not None:
            ref = base.require_text(document, *path, "refId")
        else:
            ref = base.require_text(document, *path, "ref", "id")
        to_hash = base.require_sha(document, *path, "toHash")
        change_type = base.dig(document, *path, "type")
        if change_type is not None and not isinstance(change_type, str):
            raise base.PayloadError(f"field '{base.field_name((*path, 'type'))}' must be a string")
        kind, name = deliveries.split_ref(ref)
        return deliveries.PushEvent(
            provider=self.name,
            delivery_id=delivery,
            repo_urls=urls,
            ref_kind=kind,
            ref_name=name,
            commit=to_hash,
            before=base.optional_sha(document, *path, "fromHash"),
            deleted=change_type == "DELETE" or base.is_zero_sha(to_hash),
            repo_path=repo_path,
        )


def repository_path(document: Any) -> str:
    """`scm/<project key>/<slug>.git` from a repository without `links` (PayloadError without both)."""
    key = base.require_text(document, "repository", "project", "key")
    slug = base.require_text(document, "repository", "slug")
    if "/" in key or "/" in slug or key in {".", ".."} or slug in {".", ".."}:
        raise base.PayloadError("fields 'repository.project.key' and 'repository.slug' must be single path segments")
    return f"scm/{key.lower()}/{slug}.git"


MISSING_BASE_URL = (
    "the payload's repository has no links (as some Bitbucket Server versions send), so no URL to match: "
    "set providers.bitbucket-server.baseUrl (or this route's bitbucketServerBaseUrl) to the server's base URL, "
    "e.g. https://bitbucket.example.com, and the receiver builds <baseUrl>/{path}"
)


def complete_urls(parsed: Sequence[deliveries.Parsed], base_url: str) -> tuple[deliveries.Parsed, ...]:
    """Give events that carry only a `repo_path` the URL under `base_url`; without one, an Ignored saying so."""
    out: list[deliveries.Parsed] = []
    for item in parsed:
        if not isinstance(item, deliveries.PushEvent) or item.repo_urls or not item.repo_path:
            out.append(item)
        elif base_url:
            out.append(dataclasses.replace(item, repo_urls=(f"{base_url.rstrip('/')}/{item.repo_path}",)))
        else:
            out.append(
                deliveries.Ignored(
                    item.provider,
                    item.delivery_id,
                    event="repo:refs_changed",
                    reason=MISSING_BASE_URL.format(path=item.repo_path),
                )
            )
    return tuple(out)
