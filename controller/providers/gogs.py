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
  - anything else (`create`, `delete`, `pull_request`, ...) -> Ignored. Gogs has no ping event.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from controller import events
from controller.providers import base, github


def signed_payload(request: base.WebhookRequest) -> bytes | None:
    """The bytes Gogs and Gitea sign: the JSON, unwrapped from a form body; None if unreadable."""
    if request.media_type != base.FORM_MEDIA_TYPE:
        return request.body
    try:
        return base.form_payload(request.body).encode("utf-8")
    except base.PayloadError:
        return None


class GogsProvider(base.Provider):
    """Gogs; the header names are class attributes so Gitea/Forgejo can reuse the rest."""

    name: ClassVar[str] = "gogs"
    secret_keys: ClassVar[tuple[str, ...]] = ("gogs",)
    event_headers: ClassVar[tuple[str, ...]] = ("X-Gogs-Event",)
    delivery_headers: ClassVar[tuple[str, ...]] = ("X-Gogs-Delivery",)
    signature_headers: ClassVar[tuple[str, ...]] = ("X-Gogs-Signature",)

    def detect(self, request: base.WebhookRequest) -> bool:
        return base.first_header(request, *self.event_headers) is not None

    def delivery_id(self, request: base.WebhookRequest) -> str | None:
        return base.first_header(request, *self.delivery_headers)

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

    def verify_whole_body(self, request: base.WebhookRequest, credentials: Sequence[base.Credential]) -> base.Verdict:
        message = signed_payload(request)
        if message is None:
            return base.Verdict.MISMATCH
        stream = base.MacStream(self.authenticate(request, credentials).macs)
        stream.update(message)
        return stream.verdict()

    def parse(self, request: base.WebhookRequest) -> events.Parsed:
        event = base.first_header(request, *self.event_headers)
        if event is None:
            raise base.PayloadError(f"header {self.event_headers[0]} is missing")
        delivery = self.delivery_id(request)
        document = base.json_document(request, allow_form=True)
        if event == "push":
            return github.parse_push(self.name, delivery, document)
        return events.Ignored(
            self.name,
            delivery,
            event=event,
            reason="only push events move a GitRepo",
            repo_urls=github.repository_urls(document, "repository"),
        )
