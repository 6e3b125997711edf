"""GitHub and GitHub Enterprise Server webhooks.

Headers read:
  - `X-GitHub-Event` (detection and event name), `X-GitHub-Delivery` (delivery id, kept on redelivery).
  - `X-Hub-Signature-256: sha256=<hex>`: HMAC-SHA256 of the raw request body with the `github` secret.
    The `sha256=` prefix is required. The body is hashed as received, also for form-encoded deliveries.
  - `X-Hub-Signature: sha1=<hex>` (legacy HMAC-SHA1) only when the provider is built with
    `accept_sha1=True`; otherwise a request carrying only that header counts as unsigned (MISSING).

Content types: `application/json` (any parameters) and `application/x-www-form-urlencoded` with the
JSON in the `payload` field (GitHub Enterprise may force the latter, fleet#4463).

Events:
  - `ping` -> Ping (`repository` URLs when the hook belongs to a repository).
  - `push` -> PushEvent:
      repo_urls   `repository.html_url`, `.clone_url`, `.ssh_url`, `.git_url`
      ref         `ref` (split into branch/tag)
      commit      `after`; for a tag, `head_commit.id` when it is a commit SHA: an annotated tag's
                  `after` is the tag object, `head_commit` the commit it points at (for a
                  lightweight tag both are the commit)
      before      `before`
      deleted     `deleted` is true, or `after` is all zeros
      changes     the union of `commits[].added/modified/removed` (providers/files.py); GitHub sends
                  no commit count, so a list of 20 commits (the cap GitHub documents for timeline
                  events; webhooks are said to be exempt, with no cap named) counts as possibly cut,
                  and a `forced` or `created` push as one whose files cannot be told
  - anything else (`pull_request`, `create`, `delete`, ...) -> Ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from controller import deliveries
from controller.providers import base, files

# GitHub documents "a maximum of 20 commits" in `commits` (for timeline events, "not applied to
# webhook deliveries", whose own cap it does not name) and sends no count: 20 or more may be cut.
LISTED_COMMITS = 20


def repository_urls(document: Any, *path: str) -> tuple[str, ...]:
    """Every URL a GitHub-style `repository` object names (also used by Gogs and Gitea)."""
    return base.texts(
        base.text(document, *path, "html_url"),
        base.text(document, *path, "clone_url"),
        base.text(document, *path, "ssh_url"),
        base.text(document, *path, "git_url"),
    )


def tag_commit(document: Any, after: str) -> str:
    """The commit a pushed tag points at: `head_commit.id`, else `after`.

    For an annotated tag GitHub and Gitea send the tag *object* as `after` and the commit it points
    at as `head_commit.id`; Fleet deploys commits, so the commit is what we record. A lightweight
    tag's `after` already is the commit. `head_commit` is null for a tag deletion (and may be for a
    tag of a non-commit object): then `after` stays.
    """
    head = base.text(document, "head_commit", "id").lower()
    return head if base.is_sha(head) and not base.is_zero_sha(after) else after


def parse_push(
    provider: str,
    delivery_id: str | None,
    document: Any,
    *,
    commit_cap: int = LISTED_COMMITS,
    count_key: str = "",
    marks_forced: bool = True,
    refuses_force_push: bool = False,
) -> deliveries.PushEvent:
    """The `push` payload GitHub, Gogs and Gitea share: ref, before, after, repository URLs, files.

    `count_key` names the field with the host's count of pushed commits (Gitea `total_commits`),
    `commit_cap` the most commits the host lists when it sends no count. Gogs and Gitea send no
    `forced` flag (`marks_forced=False`): their pushes may have been forced unless the operator says
    branch protection refuses force pushes (`refuses_force_push`).
    """
    body = base.require_object(document)
    base.require_field_object(body, "repository")
    urls = base.require_urls(repository_urls(body, "repository"), "repository")
    ref = base.require_text(body, "ref")
    after = base.require_sha(body, "after")
    before = base.optional_sha(body, "before")
    kind, name = deliveries.split_ref(ref)
    deleted = base.optional_bool(body, "deleted") or base.is_zero_sha(after)
    base.optional_bool(body, "forced")  # a `forced` that is not a boolean is a bad payload
    forced = files.marked_forced(body) if marks_forced else files.unmarked_forced(refuses_force_push)
    changes = files.from_commits(
        body,
        host=provider,
        after=after,
        before=before,
        deleted=deleted,
        forced=forced,
        marks_forced=marks_forced,
        total=files.count(body, count_key) if count_key else None,
        cap=commit_cap,
    )
    return deliveries.PushEvent(
        provider=provider,
        delivery_id=delivery_id,
        repo_urls=urls,
        ref_kind=kind,
        ref_name=name,
        commit=tag_commit(body, after) if kind is deliveries.RefKind.TAG else after,
        before=before,
        deleted=deleted,
        forced=forced is True,
        changes=changes,
    )


class GitHubProvider(base.SingleEventProvider):
    """GitHub.com, GitHub Enterprise Cloud and Server."""

    name: ClassVar[str] = "github"
    title: ClassVar[str] = "GitHub and GitHub Enterprise (X-Hub-Signature-256)."
    secret_keys: ClassVar[tuple[str, ...]] = ("github",)
    detect_headers: ClassVar[tuple[str, ...]] = ("X-GitHub-Event",)
    delivery_headers: ClassVar[tuple[str, ...]] = ("X-GitHub-Delivery",)
    event_header: ClassVar[str | None] = "x-github-event"
    push_headers: ClassVar[Mapping[str, str]] = {"x-github-event": "push"}
    sample_events: ClassVar[tuple[str, ...]] = ("push", "ping", "pull_request")
    options_schema: ClassVar[Mapping[str, Any]] = {
        "acceptSha1": {
            "type": "boolean",
            "default": False,
            "description": "Also accept the legacy SHA-1 `X-Hub-Signature` when no SHA-256 signature is sent "
            "(old GitHub Enterprise).",
        }
    }

    def __init__(self, *, accept_sha1: bool = False) -> None:
        self.accept_sha1 = accept_sha1

    def configured(self, options: Mapping[str, Any]) -> GitHubProvider:
        accept_sha1 = bool(options.get("acceptSha1"))
        return self if accept_sha1 == self.accept_sha1 else GitHubProvider(accept_sha1=accept_sha1)

    def authenticate(self, request: base.WebhookRequest, credentials: Sequence[base.Credential]) -> base.Authentication:
        secrets = base.values_for(credentials, "github")
        sha256 = request.header("x-hub-signature-256")
        if sha256.strip() or not self.accept_sha1:
            return base.hex_signature_auth(sha256, secrets, prefix="sha256=")
        return base.hex_signature_auth(request.header("x-hub-signature"), secrets, prefix="sha1=", algorithm="sha1")

    def sign(self, headers: Mapping[str, str], body: bytes, credential: base.Credential) -> dict[str, str]:
        return base.with_hex_signature(headers, "X-Hub-Signature-256", credential["github"], body, prefix="sha256=")

    def parse_event(self, request: base.WebhookRequest) -> deliveries.Parsed:
        event = base.require_header(request, "X-GitHub-Event")
        delivery = self.delivery_id(request)
        document = base.json_document(request, allow_form=True)
        if event == "ping":
            base.require_object(document)
            return deliveries.Ping(self.name, delivery, repository_urls(document, "repository"))
        if event == "push":
            return parse_push(self.name, delivery, document)
        return deliveries.Ignored(
            self.name,
            delivery,
            event=event,
            reason="only push events move a GitRepo",
            repo_urls=repository_urls(document, "repository"),
        )
