"""Azure DevOps (dev.azure.com and legacy *.visualstudio.com) service hooks ("Web Hooks" consumer).

Headers read:
  - Detection: `X-Vss-ActivityId` or `X-Vss-SubscriptionId`.
  - `X-Vss-ActivityId` (delivery id).
  - `Authorization: Basic base64(user:password)`: the service hook's basic-auth credentials, compared
    in constant time with `azure-username` and `azure-password`; both must match within the same
    credential set, and a set missing either value never verifies.

Content type: `application/json` only. The event name is the body's `eventType`.

Events:
  - `git.push` -> one PushEvent per entry of `resource.refUpdates`, in order:
      repo_urls   `resource.repository.remoteUrl`, `.sshUrl`, `.webUrl` as sent (legacy
                  `https://<org>.visualstudio.com/...` URLs are left to URL normalization)
      ref         `resource.refUpdates[i].name`
      commit      `resource.refUpdates[i].newObjectId`. For an annotated tag that is the tag object
                  (Azure DevOps sends no peeled commit); recorded as sent, a trigger for Fleet >= v0.16
                  (docs/providers/azure-devops.md)
      before      `resource.refUpdates[i].oldObjectId`
      deleted     `newObjectId` is all zeros
  - anything else (`git.pullrequest.*`, `build.complete`, ...) -> Ignored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from controller import deliveries
from controller.providers import base


def repository_urls(document: Any) -> tuple[str, ...]:
    return base.texts(
        base.text(document, "resource", "repository", "remoteUrl"),
        base.text(document, "resource", "repository", "sshUrl"),
        base.text(document, "resource", "repository", "webUrl"),
    )


def _basic_credentials(header: str) -> tuple[bytes, bytes] | None:
    """(user, password) from `Basic <base64>`, or None when the header is not valid basic auth."""
    encoded = base.strip_prefix(header.strip(), "Basic ")
    if encoded is None:
        return None
    try:
        decoded = base64.b64decode(encoded.strip().encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None
    user, colon, password = decoded.partition(b":")
    return (user, password) if colon else None


def _same(a: bytes, b: bytes) -> bool:
    """Constant-time equality that does not leak lengths either."""
    return hmac.compare_digest(hashlib.sha256(a).digest(), hashlib.sha256(b).digest())


class AzureDevOpsProvider(base.Provider):
    """Azure DevOps Services and Server."""

    name: ClassVar[str] = "azure-devops"
    title: ClassVar[str] = "Azure DevOps service hooks (Basic authentication)."
    secret_keys: ClassVar[tuple[str, ...]] = ("azure-username", "azure-password")
    detect_headers: ClassVar[tuple[str, ...]] = ("X-Vss-ActivityId", "X-Vss-SubscriptionId")
    delivery_headers: ClassVar[tuple[str, ...]] = ("X-Vss-ActivityId",)
    push_headers: ClassVar[Mapping[str, str]] = {"x-vss-activityid": "explain"}

    def sign(self, headers: Mapping[str, str], body: bytes, credential: base.Credential) -> dict[str, str]:
        pair = credential["azure-username"] + b":" + credential["azure-password"]
        return {**headers, "Authorization": "Basic " + base64.b64encode(pair).decode()}

    def authenticate(self, request: base.WebhookRequest, credentials: Sequence[base.Credential]) -> base.Authentication:
        return base.Authentication(self._basic_verdict(request, credentials))

    def _basic_verdict(self, request: base.WebhookRequest, credentials: Sequence[base.Credential]) -> base.Verdict:
        header = request.header("authorization")
        if not header.strip():
            return base.Verdict.MISSING
        given = _basic_credentials(header)
        if given is None:
            return base.Verdict.MISMATCH
        user, password = given
        matched = False
        for credential in credentials:
            want_user, want_password = credential.get("azure-username"), credential.get("azure-password")
            if not want_user or not want_password:
                continue
            # `&` not `and`: both comparisons always run.
            matched |= _same(user, want_user) & _same(password, want_password)
        return base.Verdict.OK if matched else base.Verdict.MISMATCH

    def parse(self, request: base.WebhookRequest) -> tuple[deliveries.Parsed, ...]:
        delivery = self.delivery_id(request)
        document = base.require_object(base.json_document(request, allow_form=False))
        event = base.require_text(document, "eventType")
        if event != "git.push":
            return (
                deliveries.Ignored(
                    self.name,
                    delivery,
                    event=event,
                    reason="only git.push moves a GitRepo",
                    repo_urls=repository_urls(document),
                ),
            )
        base.require_field_object(document, "resource", "repository")
        urls = base.require_urls(repository_urls(document), "resource.repository")
        updates = base.require_list(document, "resource", "refUpdates")
        return tuple(self._update(delivery, urls, document, index) for index in range(len(updates)))

    def _update(self, delivery: str | None, urls: tuple[str, ...], document: Any, index: int) -> deliveries.PushEvent:
        path: tuple[str | int, ...] = ("resource", "refUpdates", index)
        base.require_field_object(document, *path)
        kind, name = deliveries.split_ref(base.require_text(document, *path, "name"))
        new = base.require_sha(document, *path, "newObjectId")
        return deliveries.PushEvent(
            provider=self.name,
            delivery_id=delivery,
            repo_urls=urls,
            ref_kind=kind,
            ref_name=name,
            commit=new,
            before=base.optional_sha(document, *path, "oldObjectId"),
            deleted=base.is_zero_sha(new),
        )
