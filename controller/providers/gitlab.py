"""GitLab (gitlab.com and self-managed) project, group and system hooks.

Headers read:
  - `X-Gitlab-Event` (detection and event name).
  - Delivery id: `Idempotency-Key` (GitLab 17.4+, the same on every retry of one event), else
    `X-Gitlab-Webhook-UUID`, else `X-Gitlab-Event-UUID`.
  - `X-Gitlab-Token`: the hook's secret token, sent in clear and compared (constant time, through
    SHA-256 digests) with the `gitlab` secret.
  - Standard Webhooks signing (GitLab's "signing token"): `webhook-id`, `webhook-timestamp` and
    `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{raw body}">` (several
    space-separated entries allowed). The `gitlab` secret may be given as `whsec_<base64>` (decoded)
    or as raw bytes. Timestamps more than 5 minutes away from now are rejected. When both schemes are
    present, either one matching is enough (dropping the signature headers would leave the token
    anyway).

Content type: `application/json` only.

Events:
  - `Push Hook`, `Tag Push Hook`, and `System Hook` whose `object_kind`/`event_name` is `push` or
    `tag_push` -> PushEvent:
      repo_urls   `project.web_url`, `.git_http_url`, `.git_ssh_url`, then `repository.homepage`,
                  `.url`, `.git_http_url`, `.git_ssh_url`
      ref         `ref`
      commit      `checkout_sha` (the commit an annotated tag points at; for a lightweight tag and a
                  branch it equals `after`), else `after`; a push with `checkout_sha` and no `after`
                  is accepted
      before      `before`
      deleted     `after` is all zeros, or `checkout_sha` is null
      changes     the union of `commits[].added/modified/removed` (providers/files.py). GitLab
                  lists the newest 20 commits and counts all in `total_commits_count`, so a cut list
                  is recognised. It does not mark forced pushes, so the lists count only with the
                  `refusesForcePush` option (see docs/matching.md); without it they cannot tell
  - anything else (`Merge Request Hook`, other system hooks, ...) -> Ignored.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from controller import deliveries
from controller.providers import base, files

PUSH_EVENTS = frozenset({"Push Hook", "Tag Push Hook"})
SYSTEM_PUSH_KINDS = frozenset({"push", "tag_push"})
SIGNATURE_TOLERANCE_SECONDS = 300
WHSEC_PREFIX = "whsec_"
# GitLab lists the newest 20 commits of a push ("for performance reasons"); it sends the full count.
LISTED_COMMITS = 20


def _signing_key(secret: bytes) -> bytes | None:
    """The HMAC key of a Standard Webhooks secret: `whsec_<base64>` decoded, anything else as is."""
    if not secret.startswith(WHSEC_PREFIX.encode()):
        return secret
    try:
        return base64.b64decode(secret[len(WHSEC_PREFIX) :], validate=True) or None
    except (binascii.Error, ValueError):
        return None


def repository_urls(document: Any) -> tuple[str, ...]:
    return base.texts(
        base.text(document, "project", "web_url"),
        base.text(document, "project", "git_http_url"),
        base.text(document, "project", "git_ssh_url"),
        base.text(document, "repository", "homepage"),
        base.text(document, "repository", "url"),
        base.text(document, "repository", "git_http_url"),
        base.text(document, "repository", "git_ssh_url"),
    )


class GitLabProvider(base.SingleEventProvider):
    """GitLab webhooks, token or Standard Webhooks signature."""

    name: ClassVar[str] = "gitlab"
    title: ClassVar[str] = "GitLab (X-Gitlab-Token, or Standard Webhooks signing)."
    secret_keys: ClassVar[tuple[str, ...]] = ("gitlab",)
    detect_headers: ClassVar[tuple[str, ...]] = ("X-Gitlab-Event",)
    delivery_headers: ClassVar[tuple[str, ...]] = ("Idempotency-Key", "X-Gitlab-Webhook-UUID", "X-Gitlab-Event-UUID")
    event_header: ClassVar[str | None] = "x-gitlab-event"
    push_headers: ClassVar[Mapping[str, str]] = {"x-gitlab-event": "Push Hook"}
    sample_events: ClassVar[tuple[str, ...]] = ("Push Hook", "Tag Push Hook", "System Hook", "Merge Request Hook")

    options_schema: ClassVar[Mapping[str, Any]] = files.REFUSES_FORCE_PUSH_SCHEMA

    def __init__(self, *, now: Callable[[], float] = time.time, refuses_force_push: bool = False) -> None:
        self.now = now
        self.refuses_force_push = refuses_force_push

    def configured(self, options: Mapping[str, Any]) -> GitLabProvider:
        refuses = bool(options.get(files.REFUSES_FORCE_PUSH_OPTION))
        if refuses == self.refuses_force_push:
            return self
        return GitLabProvider(now=self.now, refuses_force_push=refuses)

    def authenticate(self, request: base.WebhookRequest, credentials: Sequence[base.Credential]) -> base.Authentication:
        secrets = base.values_for(credentials, "gitlab")
        token = request.header("x-gitlab-token")
        has_signature = bool(request.header("webhook-signature").strip())
        if not token and not has_signature:
            return base.Authentication(base.Verdict.MISSING)
        if token and secrets and base.token_matches(token, secrets):
            return base.Authentication(base.Verdict.OK)  # either scheme matching is enough
        mac = self._signature_mac(request, secrets) if has_signature else None
        if mac is None:
            return base.Authentication(base.Verdict.MISMATCH)
        return base.Authentication(None, (mac,))

    def _signature_mac(self, request: base.WebhookRequest, secrets: Sequence[bytes]) -> base.BodyMac | None:
        """Standard Webhooks: `v1,<base64>` entries over `{id}.{timestamp}.{body}`, fresh timestamp."""
        msg_id = request.header("webhook-id").strip()
        stamp = request.header("webhook-timestamp").strip()
        if not msg_id or not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
            return None
        if abs(self.now() - int(stamp)) > SIGNATURE_TOLERANCE_SECONDS:
            return None
        claimed: list[bytes] = []
        for entry in request.header("webhook-signature").split():
            if entry.startswith("v1,"):
                try:
                    claimed.append(base64.b64decode(entry[3:], validate=True))
                except (binascii.Error, ValueError):
                    continue
        keys = tuple(k for k in map(_signing_key, secrets) if k is not None)
        if not claimed or not keys:
            return None
        return base.BodyMac("sha256", keys, tuple(claimed), f"{msg_id}.{stamp}.".encode("utf-8", "replace"))

    def sign(self, headers: Mapping[str, str], body: bytes, credential: base.Credential) -> dict[str, str]:
        return {**headers, "X-Gitlab-Token": credential["gitlab"].decode()}  # GitLab sends the token itself

    def parse_event(self, request: base.WebhookRequest) -> deliveries.Parsed:
        event = base.require_header(request, "X-Gitlab-Event")
        delivery = self.delivery_id(request)
        document = base.require_object(base.json_document(request, allow_form=False))
        if event == "System Hook":
            kind = base.text(document, "event_name") or base.text(document, "object_kind")
            if kind not in SYSTEM_PUSH_KINDS:
                return deliveries.Ignored(
                    self.name,
                    delivery,
                    event=f"System Hook ({kind or 'unknown'})",
                    reason="only push and tag_push system hooks move a GitRepo",
                    repo_urls=repository_urls(document),
                )
        elif event not in PUSH_EVENTS:
            return deliveries.Ignored(
                self.name,
                delivery,
                event=event,
                reason="only Push Hook and Tag Push Hook move a GitRepo",
                repo_urls=repository_urls(document),
            )
        return self._push(delivery, document)

    def _push(self, delivery: str | None, document: dict[str, Any]) -> deliveries.PushEvent:
        urls = base.require_urls(repository_urls(document), "project")
        kind, name = deliveries.split_ref(base.require_text(document, "ref"))
        checkout = base.optional_sha(document, "checkout_sha")
        # Some GitLab versions and system hooks leave `after` out when `checkout_sha` names the commit.
        after = base.require_sha(document, "after") if checkout is None or "after" in document else checkout
        checkout_null = "checkout_sha" in document and document["checkout_sha"] is None
        deleted = base.is_zero_sha(after) or checkout_null
        before = base.optional_sha(document, "before")
        changes = files.from_commits(
            document,
            host=self.name,
            after=checkout or after,
            before=before,
            deleted=deleted,
            forced=files.unmarked_forced(self.refuses_force_push),
            marks_forced=False,
            total=files.count(document, "total_commits_count"),
            cap=LISTED_COMMITS,
        )
        return deliveries.PushEvent(
            provider=self.name,
            delivery_id=delivery,
            repo_urls=urls,
            ref_kind=kind,
            ref_name=name,
            commit=checkout or after,
            before=before,
            deleted=deleted,
            changes=changes,
        )
