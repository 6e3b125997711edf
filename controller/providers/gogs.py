"""Gogs webhooks (Gitea and Forgejo reuse this dialect; see gitea.py).

Headers read:
  - `X-Gogs-Event` (detection and event name), `X-Gogs-Delivery` (delivery id).
  - `X-Gogs-Signature: <hex>`: bare hex HMAC-SHA256 with the `gogs` secret, computed over the JSON
    payload. For a JSON delivery that is the raw body; for a form-encoded delivery it is the decoded
    `payload` field, not the raw body (Gogs signs the JSON it then form-encodes).

Content types: `application/json` and `application/x-www-form-urlencoded` (`payload=<json>`).

Events:
  - `push` -> PushEvent:
      repo_urls   `repository.html_url`, `.clone_url`, `.ssh_url`
      ref         `ref`
      commit      `after`
      before      `before`
      deleted     `after` is all zeros
      changes     the union of `commits[].added/modified/removed` (providers/files.py). Gogs and
                  Gitea list at most `[ui] FEED_MAX_COMMIT_NUM` commits (default 5); Gitea also
                  sends the real count, `total_commits`, which Gogs does not, so on Gogs a list of
                  5 commits counts as possibly cut. Neither marks a force push, so the lists
                  count only with the `refusesForcePush` option; without it they cannot tell
    Gogs sends `push` for branches only.
  - `create` with `ref_type: tag` -> PushEvent (Gogs announces a pushed tag with this event alone):
      ref         `refs/tags/` + `ref` (a short name)
      commit      `sha`: the new value of the tag ref, which for an annotated tag is the tag object
                  (the payload names no commit); Fleet >= v0.16 treats `webhookCommit` as a trigger
                  and resolves the tag itself, so the trigger still works
      before      none
  - anything else (`create` of a branch, `delete`, `pull_request`, ...) -> Ignored. Gogs has no
    ping event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from controller import deliveries
from controller.providers import base, files, github

# Gogs and Gitea cut `commits` to `[ui] FEED_MAX_COMMIT_NUM` (default 5) commits.
LISTED_COMMITS = 5


def signed_payload(request: base.WebhookRequest) -> bytes | None:
    """The bytes Gogs and Gitea sign: the JSON, unwrapped from a form body; None if unreadable."""
    if request.media_type != base.FORM_MEDIA_TYPE:
        return request.body
    try:
        return base.form_payload(request.body).encode("utf-8")
    except base.PayloadError:
        return None


class GogsProvider(base.SingleEventProvider):
    """Gogs; the header names are class attributes so Gitea/Forgejo can reuse the rest."""

    name: ClassVar[str] = "gogs"
    title: ClassVar[str] = "Gogs (X-Gogs-Signature)."
    secret_keys: ClassVar[tuple[str, ...]] = ("gogs",)
    detect_headers: ClassVar[tuple[str, ...]] = ("X-Gogs-Event",)
    event_header: ClassVar[str | None] = "x-gogs-event"
    push_headers: ClassVar[Mapping[str, str]] = {"x-gogs-event": "push"}
    sample_events: ClassVar[tuple[str, ...]] = ("push", "create")
    event_headers: ClassVar[tuple[str, ...]] = ("X-Gogs-Event",)
    delivery_headers: ClassVar[tuple[str, ...]] = ("X-Gogs-Delivery",)
    signature_headers: ClassVar[tuple[str, ...]] = ("X-Gogs-Signature",)
    signature_header_sent: ClassVar[str] = "X-Gogs-Signature"  # the one the host itself fills in
    # Gogs announces a pushed tag only with `create`; Gitea and Forgejo also send a `push` for it.
    tag_create_is_push: ClassVar[bool] = True
    options_schema: ClassVar[Mapping[str, Any]] = files.REFUSES_FORCE_PUSH_SCHEMA

    def __init__(self, *, refuses_force_push: bool = False) -> None:
        self.refuses_force_push = refuses_force_push

    def configured(self, options: Mapping[str, Any]) -> GogsProvider:
        refuses = bool(options.get(files.REFUSES_FORCE_PUSH_OPTION))
        return self if refuses == self.refuses_force_push else type(self)(refuses_force_push=refuses)

    def authenticate(self, request: base.WebhookRequest, credentials: Sequence[base.Credential]) -> base.Authentication:
        secrets = base.values_for(credentials, self.secret_keys[0])
        signature = base.first_header(request, *self.signature_headers)
        if signature is None:
            return base.Authentication(base.Verdict.MISSING)
        auth = base.hex_signature_auth(signature, secrets)
        if auth.verdict is None and request.media_type == base.FORM_MEDIA_TYPE:
            # The JSON inside the form is signed, not the raw body: it can only be checked whole.
            return base.Authentication(None, auth.macs, needs_whole_body=True)
        return auth

    def sign(self, headers: Mapping[str, str], body: bytes, credential: base.Credential) -> dict[str, str]:
        """Bare hex over the JSON (unwrapped from a form body), in the host's own signature header."""
        signed = signed_payload(base.WebhookRequest("POST", base.lower_keys(headers), body))
        secret = credential[self.secret_keys[0]]
        return base.with_hex_signature(headers, self.signature_header_sent, secret, signed or b"")

    def verify_whole_body(self, request: base.WebhookRequest, credentials: Sequence[base.Credential]) -> base.Verdict:
        message = signed_payload(request)
        if message is None:
            return base.Verdict.MISMATCH
        stream = base.MacStream(self.authenticate(request, credentials).macs)
        stream.update(message)
        return stream.verdict()

    def parse_event(self, request: base.WebhookRequest) -> deliveries.Parsed:
        event = base.first_header(request, *self.event_headers)
        if event is None:
            raise base.PayloadError(f"header {self.event_headers[0]} is missing")
        delivery = self.delivery_id(request)
        document = base.json_document(request, allow_form=True)
        if event == "push":
            return github.parse_push(
                self.name,
                delivery,
                document,
                commit_cap=LISTED_COMMITS,
                count_key="total_commits",
                marks_forced=False,
                refuses_force_push=self.refuses_force_push,
            )
        if event == "create" and self.tag_create_is_push and base.text(document, "ref_type") == "tag":
            return self._tag_created(delivery, document)
        return deliveries.Ignored(
            self.name,
            delivery,
            event=event,
            reason="only push events move a GitRepo",
            repo_urls=github.repository_urls(document, "repository"),
        )

    def _tag_created(self, delivery: str | None, document: object) -> deliveries.Parsed:
        """A Gogs `create` of a tag, as the push of that tag (see the module docstring)."""
        body = base.require_object(document)
        base.require_field_object(body, "repository")
        urls = base.require_urls(github.repository_urls(body, "repository"), "repository")
        name = base.require_text(body, "ref").removeprefix("refs/tags/")
        if base.dig(body, "sha") is None:
            return deliveries.Ignored(
                self.name,
                delivery,
                event="create",
                reason="this Gogs version sends no 'sha' for a created tag; upgrade Gogs (0.12+) to trigger on tags",
                repo_urls=urls,
            )
        return deliveries.PushEvent(
            provider=self.name,
            delivery_id=delivery,
            repo_urls=urls,
            ref_kind=deliveries.RefKind.TAG,
            ref_name=name,
            commit=base.require_sha(body, "sha"),
        )
