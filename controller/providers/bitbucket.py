"""Bitbucket Cloud (bitbucket.org) webhooks.

Headers read:
  - Detection: `X-Hook-UUID`, or `X-Event-Key` together with `X-Request-UUID` or a
    `User-Agent: Bitbucket-Webhooks/...`.
  - `X-Event-Key` (event name), `X-Request-UUID` (delivery id).
  - `X-Hub-Signature: sha256=<hex>`: HMAC-SHA256 of the raw body with the `bitbucket` secret (the
    webhook "Secret" Bitbucket Cloud offers since 2023). The `sha256=` prefix is required.
    `X-Hook-UUID` identifies the webhook and is sent in clear: it is never accepted as authentication.

Content type: `application/json` only.

Events:
  - `repo:push` -> one PushEvent per entry of `push.changes`, in order:
      repo_urls   `repository.links.html.href`, and `https://bitbucket.org/<repository.full_name>`
      ref         `changes[i].new.type` (`branch` / `tag` / `annotated_tag`) and `.new.name`
                  (from `.old` when the ref was deleted)
      commit      `changes[i].new.target.hash` (all zeros for a deletion); for an `annotated_tag`
                  too, `target` is the commit the tag points at (the tag object has no hash here)
      before      `changes[i].old.target.hash`
      deleted     `changes[i].new` is null
  - anything else (`pullrequest:*`, `repo:updated`, ...) -> Ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from controller import deliveries
from controller.providers import base

WEB_BASE = "https://bitbucket.org/"
REF_KINDS = {
    "branch": deliveries.RefKind.BRANCH,
    "tag": deliveries.RefKind.TAG,
    "annotated_tag": deliveries.RefKind.TAG,
}


def repository_urls(document: Any) -> tuple[str, ...]:
    full_name = base.text(document, "repository", "full_name")
    return base.texts(
        base.text(document, "repository", "links", "html", "href"),
        WEB_BASE + full_name if full_name else "",
    )


class BitbucketCloudProvider(base.Provider):
    """Bitbucket Cloud."""

    name: ClassVar[str] = "bitbucket"
    title: ClassVar[str] = "Bitbucket Cloud (X-Hub-Signature sha256)."
    secret_keys: ClassVar[tuple[str, ...]] = ("bitbucket",)
    detect_headers: ClassVar[tuple[str, ...]] = ("X-Hook-UUID", "X-Event-Key")
    delivery_headers: ClassVar[tuple[str, ...]] = ("X-Request-UUID",)
    event_header: ClassVar[str | None] = "x-event-key"
    push_headers: ClassVar[Mapping[str, str]] = {"x-event-key": "repo:push", "x-hook-uuid": "explain"}
    sample_events: ClassVar[tuple[str, ...]] = ("repo:push", "pullrequest:created")

    def detect(self, request: base.WebhookRequest) -> bool:
        if request.header("x-hook-uuid").strip():
            return True
        if not request.header("x-event-key").strip():
            return False
        agent = request.header("user-agent").strip().lower()
        return bool(request.header("x-request-uuid").strip()) or agent.startswith("bitbucket-webhooks")

    def authenticate(self, request: base.WebhookRequest, credentials: Sequence[base.Credential]) -> base.Authentication:
        secrets = base.values_for(credentials, "bitbucket")
        return base.hex_signature_auth(request.header("x-hub-signature"), secrets, prefix="sha256=")

    def sign(self, headers: Mapping[str, str], body: bytes, credential: base.Credential) -> dict[str, str]:
        return base.with_hex_signature(headers, "X-Hub-Signature", credential["bitbucket"], body, prefix="sha256=")

    def parse(self, request: base.WebhookRequest) -> tuple[deliveries.Parsed, ...]:
        event = base.require_header(request, "X-Event-Key")
        delivery = self.delivery_id(request)
        document = base.require_object(base.json_document(request, allow_form=False))
        if event != "repo:push":
            return (
                deliveries.Ignored(
                    self.name,
                    delivery,
                    event=event,
                    reason="only repo:push moves a GitRepo",
                    repo_urls=repository_urls(document),
                ),
            )
        base.require_field_object(document, "repository")
        urls = base.require_urls(repository_urls(document), "repository")
        changes = base.require_list(document, "push", "changes")
        return tuple(self._change(delivery, urls, document, index) for index in range(len(changes)))

    def _change(self, delivery: str | None, urls: tuple[str, ...], document: Any, index: int) -> deliveries.PushEvent:
        path: tuple[str | int, ...] = ("push", "changes", index)
        base.require_field_object(document, *path)
        new, old = base.dig(document, *path, "new"), base.dig(document, *path, "old")
        if new is None and old is None:
            raise base.PayloadError(f"field '{base.field_name(path)}' has neither 'new' nor 'old'")
        side = "new" if new is not None else "old"
        base.require_field_object(document, *path, side)
        ref_type = base.require_text(document, *path, side, "type")
        name = base.require_text(document, *path, side, "name")
        before = base.optional_sha(document, *path, "old", "target", "hash") if old is not None else None
        commit = base.require_sha(document, *path, "new", "target", "hash") if new is not None else deliveries.ZERO_SHA
        return deliveries.PushEvent(
            provider=self.name,
            delivery_id=delivery,
            repo_urls=urls,
            ref_kind=REF_KINDS.get(ref_type, deliveries.RefKind.OTHER),
            ref_name=name,
            commit=commit,
            before=before,
            deleted=new is None,
        )
