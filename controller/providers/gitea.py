"""Gitea and Forgejo webhooks (the Gogs dialect under their own header names).

Headers read:
  - Detection and event name: `X-Forgejo-Event`, else `X-Gitea-Event`. Both hosts also send
    `X-Gogs-*` and `X-GitHub-*` copies, which is why this provider is detected before Gogs and GitHub.
  - Delivery id: `X-Forgejo-Delivery`, else `X-Gitea-Delivery`, else `X-Gogs-Delivery`.
  - Signature: `X-Forgejo-Signature`, else `X-Gitea-Signature`, else `X-Gogs-Signature` (the same
    value): bare hex HMAC-SHA256 with the `gitea` secret over the JSON payload (`PayloadContent`). For
    a form-encoded delivery that is the decoded `payload` field, not the raw body.

Content types: `application/json` and `application/x-www-form-urlencoded` (`payload=<json>`).
Deliveries with the GET method (`?payload=`) are not supported.

Events:
  - `push` -> PushEvent:
      repo_urls   `repository.html_url`, `.clone_url`, `.ssh_url`
      ref         `ref`
      commit      `after`; for a tag `head_commit.id` (an annotated tag's `after` is the tag object,
                  observed on a live Gitea 1.27.3; see github.tag_commit)
      before      `before`
      deleted     `after` is all zeros
  - anything else (`create`, `delete`, `pull_request`, ...) -> Ignored: a pushed tag also arrives
    as a `push`, so its `create` is not needed. "Test delivery" sends a push.
"""

from __future__ import annotations

from typing import ClassVar

from controller.providers import gogs


class GiteaProvider(gogs.GogsProvider):
    """Gitea and Forgejo."""

    name: ClassVar[str] = "gitea"
    secret_keys: ClassVar[tuple[str, ...]] = ("gitea",)
    event_headers: ClassVar[tuple[str, ...]] = ("X-Forgejo-Event", "X-Gitea-Event")
    delivery_headers: ClassVar[tuple[str, ...]] = (
        "X-Forgejo-Delivery",
        "X-Gitea-Delivery",
        "X-Gogs-Delivery",
    )
    signature_headers: ClassVar[tuple[str, ...]] = (
        "X-Forgejo-Signature",
        "X-Gitea-Signature",
        "X-Gogs-Signature",
    )
    tag_create_is_push: ClassVar[bool] = False
