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
      changes     the union of `commits[].added/modified/removed`; Gitea lists at most 5 commits
                  (`[ui] FEED_MAX_COMMIT_NUM`) and counts them all in `total_commits` (v1.27.3
                  services/repository/push.go), so a cut list is recognised; force pushes are
                  not marked (`refusesForcePush`, as for Gogs)
  - anything else (`create`, `delete`, `pull_request`, ...) -> Ignored: a pushed tag also arrives
    as a `push`, so its `create` is not needed. "Test delivery" sends a push.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from controller.providers import gogs


class GiteaProvider(gogs.GogsProvider):
    """Gitea and Forgejo."""

    name: ClassVar[str] = "gitea"
    title: ClassVar[str] = "Gitea and Forgejo (X-Gitea-Signature / X-Forgejo-Signature)."
    secret_keys: ClassVar[tuple[str, ...]] = ("gitea",)
    # Fleet's receiver read Gitea through its Gogs parser, so existing `gitjob-webhook` Secrets keep
    # Gitea's secret under `gogs`.
    fallback_secret_keys: ClassVar[tuple[tuple[str, ...], ...]] = (("gogs",),)
    detect_headers: ClassVar[tuple[str, ...]] = ("X-Gitea-Event", "X-Forgejo-Event")
    event_header: ClassVar[str | None] = "x-gitea-event"
    push_headers: ClassVar[Mapping[str, str]] = {"x-gitea-event": "push"}
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
    signature_header_sent: ClassVar[str] = "X-Gitea-Signature"
    tag_create_is_push: ClassVar[bool] = False
