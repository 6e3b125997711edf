"""What fleet-webhook is compared with: scan-every-GitRepo regex matchers and a bare aiohttp handler.

Both matchers follow the documented behaviour of the receivers they stand for (see
/work/shared/notes/fleet-receiver-facts.md §2.2 and peer-receivers-facts.md §1-2.1):

* Fleet (`pkg/webhook/webhook.go`): for each payload URL (GitHub: `repository.html_url`, plus
  `repository.ssh_url` made parsable by `sshURLToParsable`), build
  `(?i)(http://|https://|\\w+@|ssh://(\\w+@)?|git@(ssh\\.)?)HOST(:[0-9]+)?[:/](v\\d/)?PATH(\\.git)?$`
  with HOST and PATH through Go's `regexp.QuoteMeta` (the first `/_git/` of PATH made optional), then
  walk every GitRepo: skip a pinned `spec.revision`, test the regex against `spec.repo` (unanchored
  at the start, like Go's `MatchString`), then the branch (`spec.branch` empty matches any branch),
  each GitRepo at most once per request.
* Argo CD (`util/webhook/webhook.go`): for each web URL (GitHub: `html_url`), `GetWebURLRegex`
  builds `(?i)^((https?|ssh)://)?(USER@)?((alt)?ssh\\.)?HOST(:\\d+)?[:/]PATH(\\.git)?$`, then every
  Application source is checked with `sourceRevisionHasChanged` and then the regex.

They run over the same `GitRepoInfo` objects our index holds, so only the matching strategy differs.
Python's `re` caches compiled patterns, so the per-request compile Fleet and Argo CD pay is almost
free here: the baselines are, if anything, flattered.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from controller.index import GitRepoInfo

_GO_META = frozenset("\\.+*?()|[]{}^$")
FLEET_TEMPLATE = r"(?i)(http://|https://|\w+@|ssh://(\w+@)?|git@(ssh\.)?){host}(:[0-9]+)?[:/](v\d/)?{path}(\.git)?$"
ARGO_USERNAME = r"[\w\.][\w\.-]{0,30}[\w\.\$-]?"
ARGO_TEMPLATE = r"(?i)^((https?|ssh)://)?({user}@)?((alt)?ssh\.)?{host}(:\d+)?[:/]{path}(\.git)?$"


def quote_meta(text: str) -> str:
    """Go's regexp.QuoteMeta: a backslash before each of `\\.+*?()|[]{}^$`."""
    return "".join("\\" + ch if ch in _GO_META else ch for ch in text)


def ssh_url_to_parsable(url: str) -> str:
    """Fleet's sshURLToParsable: `user@host:path` -> `ssh://user@host/path` ("" when unusable)."""
    url = url.removesuffix(".git")
    if "://" in url:
        return url
    at, colon = url.find("@"), url.find(":")
    if not url or at == -1 or colon == -1 or colon < at or not url[colon + 1 :]:
        return ""
    return f"ssh://{url[:colon]}/{url[colon + 1 :]}"


def fleet_payload_urls(html_url: str, ssh_url: str) -> list[str]:
    """The URLs Fleet takes from a GitHub push: html_url, and ssh_url when it converts."""
    urls = [html_url]
    converted = ssh_url_to_parsable(ssh_url)
    if converted:
        urls.append(converted)
    return urls


def fleet_regex(url: str) -> re.Pattern[str] | None:
    """Fleet's per-payload-URL matcher; None when the URL has an empty path (skipped by Fleet)."""
    parts = urlsplit(url)
    path = parts.path
    if not path:
        return None
    quoted = quote_meta(path[1:]).replace("/_git/", "(/_git)?/", 1)
    return re.compile(FLEET_TEMPLATE.format(host=quote_meta(parts.hostname or ""), path=quoted))


@dataclass(frozen=True, slots=True)
class Match:
    """A GitRepo a baseline matcher selected, and whether it would write (commit differs)."""

    gitrepo: GitRepoInfo
    write: bool


def fleet_scan(urls: Sequence[str], branch: str, commit: str, gitrepos: Sequence[GitRepoInfo]) -> list[Match]:
    """Fleet's matching for one push: every GitRepo against every payload URL's regex."""
    seen: set[tuple[str, str]] = set()
    found: list[Match] = []
    for url in urls:
        regex = fleet_regex(url)
        if regex is None:
            continue
        search = regex.search
        for g in gitrepos:
            if g.revision:
                continue
            if search(g.repo) is None:
                continue
            if g.branch and g.branch != branch:
                continue
            ref = (g.namespace, g.name)
            if ref in seen:
                continue
            seen.add(ref)
            found.append(Match(g, g.webhook_commit != commit))
    return found


def argocd_regex(web_url: str) -> re.Pattern[str]:
    """Argo CD's GetWebURLRegex."""
    parts = urlsplit(web_url)
    path = quote_meta(parts.path[1:])
    return re.compile(ARGO_TEMPLATE.format(user=ARGO_USERNAME, host=quote_meta(parts.hostname or ""), path=path))


def argocd_parse_revision(ref: str) -> str:
    """Argo CD's ParseRevision: the last of at most three `/`-separated parts."""
    return ref.split("/", 2)[-1]


def argocd_revision_changed(target_revision: str, revision: str, touched_head: bool) -> bool:
    """Argo CD's sourceRevisionHasChanged."""
    target = argocd_parse_revision(target_revision)
    if target in ("HEAD", ""):
        return touched_head
    if target_revision.startswith(("refs/heads/", "refs/tags/")):
        return revision == target
    return target_revision == revision


def argocd_scan(
    web_urls: Sequence[str], ref: str, default_branch: str, commit: str, gitrepos: Sequence[GitRepoInfo]
) -> list[Match]:
    """Argo CD's matching for one push, with each GitRepo standing for a one-source Application
    (repoURL = spec.repo, targetRevision = spec.revision or spec.branch)."""
    revision = argocd_parse_revision(ref)
    touched_head = default_branch == revision
    seen: set[tuple[str, str]] = set()
    found: list[Match] = []
    for url in web_urls:
        match = argocd_regex(url).search
        for g in gitrepos:
            if not argocd_revision_changed(g.revision or g.branch, revision, touched_head):
                continue
            if match(g.repo) is None:
                continue
            ref_ = (g.namespace, g.name)
            if ref_ not in seen:
                seen.add(ref_)
                found.append(Match(g, g.webhook_commit != commit))
    return found


def bare_app() -> web.Application:
    """The throughput floor: read the body, answer 200. Same app size limit as make_app."""

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=200)

    app = web.Application(client_max_size=1024**3)
    app.router.add_route("*", "/{tail:.*}", handler)
    return app
