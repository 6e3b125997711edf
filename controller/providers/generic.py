"""A small signed format for anything else: CI jobs, git `post-receive` hooks, self-written bridges.

Headers read:
  - Detection: `X-Fleet-Webhook-Signature` or `X-Fleet-Webhook-Event`.
  - `X-Fleet-Webhook-Event`: `push` (the default when absent) or `ping`; other values are Ignored.
  - `X-Fleet-Webhook-Delivery` (delivery id, optional; send the same value on a retry).
  - `X-Fleet-Webhook-Signature: sha256=<hex>`: HMAC-SHA256 of the raw body with the `generic` secret.
    The prefix is required.

Content type: `application/json` only. Body of a push:

    {"repository": "https://git.example.com/team/apps.git",     (or "repositories": ["...", "..."])
     "ref": "refs/heads/main",                                 (a bare name counts as a branch)
     "commit": "<40- or 64-digit hex SHA>",
     "before": "<SHA>",                                        (optional)
     "deleted": false,                                         (optional)
     "changedFiles": ["apps/a/fleet.yaml"]}                    (optional: every file changed
                                                                between `before` and `commit`)

Mapping: repo_urls = `repository` plus every `repositories[]` entry; ref = `ref`; commit = `commit`;
before = `before`; deleted = `deleted` is true or `commit` is all zeros; changes = `changedFiles`
(e.g. `git diff --name-only --no-renames $before $commit`: with renames, both names count), which
the monorepo paths rule reads only with a `before`, and without it cannot tell. A ping body may be `{}`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from controller import deliveries
from controller.providers import base, files


def repository_urls(document: dict[str, Any]) -> tuple[str, ...]:
    """`repository` and `repositories[]`, type-checked (this format is ours, so be strict)."""
    urls: list[str] = []
    if document.get("repository") is not None:
        urls.append(base.require_text(document, "repository"))
    listed = document.get("repositories")
    if listed is not None:
        if not isinstance(listed, list):
            raise base.PayloadError("field 'repositories' must be an array of strings")
        urls.extend(base.require_text(document, "repositories", i) for i in range(len(listed)))
    return base.texts(*urls)


def changed_files(document: dict[str, Any], before: str | None, deleted: bool) -> deliveries.ChangedFiles:
    """`changedFiles`, type-checked (a malformed list is a 400: this format is ours)."""
    listed = document.get("changedFiles")
    if listed is None:
        return deliveries.NO_FILE_LISTS
    if not isinstance(listed, list) or not all(isinstance(f, str) for f in listed):
        raise base.PayloadError("field 'changedFiles' must be an array of strings")
    if deleted:
        return deliveries.ChangedFiles.cannot_tell("the push deleted the ref")
    if before is None or base.is_zero_sha(before):
        return deliveries.ChangedFiles.cannot_tell(
            "changedFiles without a 'before' commit says nothing about this push"
        )
    if len(listed) > files.MAX_GENERIC_FILES:
        raise base.PayloadError(f"field 'changedFiles' lists more than {files.MAX_GENERIC_FILES} files")
    return deliveries.ChangedFiles.of(frozenset(listed))


class GenericProvider(base.SingleEventProvider):
    """The fleet-webhook generic format."""

    name: ClassVar[str] = "generic"
    title: ClassVar[str] = (
        "A small JSON body `{repository, ref, commit, before?}` signed with HMAC-SHA256 in "
        "`X-Fleet-Webhook-Signature: sha256=<hex>`, for CI systems and anything else."
    )
    secret_keys: ClassVar[tuple[str, ...]] = ("generic",)
    detect_headers: ClassVar[tuple[str, ...]] = ("X-Fleet-Webhook-Event", "X-Fleet-Webhook-Signature")
    delivery_headers: ClassVar[tuple[str, ...]] = ("X-Fleet-Webhook-Delivery",)
    event_header: ClassVar[str | None] = "x-fleet-webhook-event"
    push_headers: ClassVar[Mapping[str, str]] = {"x-fleet-webhook-event": "push"}
    sample_events: ClassVar[tuple[str, ...]] = ("push", "ping", "other")

    def sign(self, headers: Mapping[str, str], body: bytes, credential: base.Credential) -> dict[str, str]:
        return base.with_hex_signature(
            headers, "X-Fleet-Webhook-Signature", credential["generic"], body, prefix="sha256="
        )

    def authenticate(self, request: base.WebhookRequest, credentials: Sequence[base.Credential]) -> base.Authentication:
        secrets = base.values_for(credentials, "generic")
        return base.hex_signature_auth(request.header("x-fleet-webhook-signature"), secrets, prefix="sha256=")

    def parse_event(self, request: base.WebhookRequest) -> deliveries.Parsed:
        event = base.first_header(request, "x-fleet-webhook-event") or "push"
        delivery = self.delivery_id(request)
        document = base.require_object(base.json_document(request, allow_form=False))
        if event == "ping":
            return deliveries.Ping(self.name, delivery)
        if event != "push":
            return deliveries.Ignored(self.name, delivery, event=event, reason="only push moves a GitRepo")
        urls = repository_urls(document)
        if not urls:
            raise base.PayloadError("field 'repository' (or 'repositories') is missing")
        kind, name = deliveries.split_ref(base.require_text(document, "ref"))
        commit = base.require_sha(document, "commit")
        before = base.optional_sha(document, "before")
        deleted = base.optional_bool(document, "deleted") or base.is_zero_sha(commit)
        return deliveries.PushEvent(
            provider=self.name,
            delivery_id=delivery,
            repo_urls=urls,
            ref_kind=kind,
            ref_name=name,
            commit=commit,
            before=before,
            deleted=deleted,
            changes=changed_files(document, before, deleted),
        )
