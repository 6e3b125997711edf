"""`fleet-webhook explain`: which GitRepos a payload would update, and why the others would not.

It answers Fleet's most common webhook complaint, "it returns 200 but nothing happens", with the
receiver's own decision code (`decisions.plan`), against the live cluster or a file of GitRepos.
Near misses are GitRepos the push did not reach, listed when they look related: same host, or
same repository name. For each one the reason is given (URL differs after normalization, with both
normalized forms; branch differs; route's namespace limit; revision pinned; excluded by mapping).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML

from controller.config import Config
from controller.decisions import Action, CommitHistory, plan
from controller.deliveries import Ignored, Parsed, Ping, PushEvent
from controller.index import GitRepoIndex, GitRepoInfo, gitrepo_info
from controller.normalize import RepoKey, explain_difference, redact_url
from controller.providers import by_name, complete_urls
from controller.providers.base import WebhookRequest
from controller.sync import keyer_for


@dataclass
class Explanation:
    """The outcome for one push event of the payload."""

    event: PushEvent
    payload_keys: list[str]
    would_update: list[dict[str, str]] = field(default_factory=list)
    unchanged: list[dict[str, str]] = field(default_factory=list)
    near_misses: list[dict[str, str]] = field(default_factory=list)


def _event_headers(provider: str, payload: Mapping[str, Any]) -> dict[str, str]:
    """The event header the host would have sent, inferred from a saved payload's shape.

    A bare payload file has no headers, and parsing a ping or a merge request as a push would fail
    on some missing field and say nothing useful; naming its real event lets the provider classify
    it (Ping / Ignored, with the reason the receiver would answer).
    """
    if provider == "github":
        if "zen" in payload and "hook" in payload:
            return {"x-github-event": "ping"}
        if "pull_request" in payload:
            return {"x-github-event": "pull_request"}
    elif provider in ("gitea", "gogs"):
        event = "pull_request" if "pull_request" in payload else "create" if "ref_type" in payload else ""
        if event:
            return {f"x-{provider}-event": event}
    elif provider == "gitlab":
        kinds = {"tag_push": "Tag Push Hook", "merge_request": "Merge Request Hook", "note": "Note Hook"}
        kind = payload.get("object_kind")
        if isinstance(kind, str) and kind != "push":
            return {"x-gitlab-event": kinds.get(kind, f"{kind.replace('_', ' ').title()} Hook")}
    elif provider == "bitbucket":
        if "pullrequest" in payload:
            return {"x-event-key": "pullrequest:created"}
    elif provider == "bitbucket-server":
        if payload.get("test") is True and "changes" not in payload:
            return {"x-event-key": "diagnostics:ping"}
        if "pullRequest" in payload:
            key = payload.get("eventKey")
            return {"x-event-key": key if isinstance(key, str) and key else "pr:opened"}
    elif provider == "generic" and not payload:
        return {"x-fleet-webhook-event": "ping"}
    return {}


def headers_for(provider: str, payload: Mapping[str, Any] | None, extra: Iterable[str] = ()) -> dict[str, str]:
    """Push headers for `provider`, adjusted to the event the payload shows, plus any `Name: value` overrides."""
    headers = {"content-type": "application/json", **by_name(provider).push_headers}
    if isinstance(payload, dict):
        headers.update(_event_headers(provider, payload))
    for item in extra:
        name, _, value = item.partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers


def parse_delivery(
    provider: str, raw: bytes, extra_headers: Iterable[str] = (), bitbucket_server_base_url: str = ""
) -> tuple[Parsed, ...]:
    """Everything a payload file holds, as the receiver would parse it (PayloadError/UnsupportedMediaType)."""
    try:
        document = json.loads(raw)
    except ValueError:
        document = None
    request = WebhookRequest("POST", headers_for(provider, document, extra_headers), raw)
    return complete_urls(by_name(provider).parse(request), bitbucket_server_base_url)


def parse_payload(provider: str, raw: bytes, extra_headers: Iterable[str] = ()) -> list[PushEvent]:
    """The push events of a payload file (PayloadError/UnsupportedMediaType on bad input)."""
    return [p for p in parse_delivery(provider, raw, extra_headers) if isinstance(p, PushEvent)]


def why_not_a_push(parsed: Sequence[Parsed]) -> str:
    """What `explain` prints for a payload without a push: the event and the receiver's reason."""
    lines = []
    for item in parsed:
        if isinstance(item, Ping):
            lines.append(
                f"this is a {item.provider} ping (the hook's set-up check): the receiver answers 200 "
                "and updates nothing; only pushes move a GitRepo"
            )
        elif isinstance(item, Ignored):
            lines.append(
                f"event {item.event!r} is ignored: {item.reason} (the receiver answers 200 "
                f'{{"ignored": "{item.event}"}} and updates nothing)'
            )
    return "\n".join(dict.fromkeys(lines)) or "the payload holds no push"


def load_gitrepos(text: str) -> list[GitRepoInfo]:
    """GitRepos from YAML: one or more documents, each a GitRepo or a List of them (`kubectl get -o yaml`)."""
    yaml = YAML(typ="safe", pure=True)
    infos: list[GitRepoInfo] = []
    for document in yaml.load_all(text):
        items = document.get("items", []) if isinstance(document, dict) and "items" in document else [document]
        for item in items:
            if isinstance(item, dict):
                meta = item.setdefault("metadata", {})
                if isinstance(meta, dict):
                    meta.setdefault("namespace", "default")
                info = gitrepo_info(item)
                if info is not None:
                    infos.append(info)
    return infos


def _related(gitrepo_key: RepoKey | None, payload_keys: Sequence[RepoKey]) -> bool:
    if gitrepo_key is None:
        return False
    name = gitrepo_key.path.rsplit("/", 1)[-1]
    return any(k.host == gitrepo_key.host or k.path.rsplit("/", 1)[-1] == name for k in payload_keys)


def explain(
    events: Sequence[PushEvent], gitrepos: Sequence[GitRepoInfo], config: Config, route_path: str
) -> list[Explanation]:
    """Run the receiver's decisions for each event over these GitRepos, without writing anything."""
    index = GitRepoIndex(keyer_for(config.watch))
    index.replace_all(gitrepos)
    route = config.route_for(route_path)
    results: list[Explanation] = []
    for event in events:
        keys = [k for k in (index.key(u) for u in event.repo_urls) if k is not None]
        result = Explanation(event, [str(k) for k in dict.fromkeys(keys)])
        decided: set[tuple[str, str]] = set()
        for decision in plan(event, index, config, route, CommitHistory()):
            info = decision.gitrepo
            decided.add(info.ref)
            entry = {"gitrepo": str(info), "repo": redact_url(info.repo), "via": decision.via}
            if decision.paths_verdict:
                entry["paths"] = decision.paths_verdict
            if decision.action is Action.UPDATE:
                result.would_update.append(entry)
            elif decision.action is Action.UNCHANGED:
                result.unchanged.append(entry)
            else:
                result.near_misses.append({**entry, "reason": decision.reason})
        for info in gitrepos:
            if info.ref in decided or not _related(index.key(info.repo), keys):
                continue
            url = event.repo_urls[0] if event.repo_urls else ""
            reason = explain_difference(
                url,
                info.repo,
                case_sensitive_path=config.watch.case_sensitive_paths,
                ssh_host_aliases=dict(config.watch.ssh_host_aliases) or None,
            )
            result.near_misses.append(
                {"gitrepo": str(info), "repo": redact_url(info.repo), "reason": f"URL differs: {reason}"}
            )
        results.append(result)
    return results


def render_text(results: Sequence[Explanation], route_path: str) -> str:
    """Human-readable report."""
    lines: list[str] = []
    for r in results:
        e = r.event
        lines.append(
            f"push: {e.provider} {e.ref_kind} {e.ref_name!r} -> {e.commit or '(none)'}"
            + (" [deleted]" if e.deleted else "")
        )
        lines.append(
            f"  repository keys: {', '.join(r.payload_keys) or '(no usable repository URL)'}  route: {route_path}"
        )
        files = e.changes.paths
        lines.append(
            f"  changed files: {len(files)} ({', '.join(sorted(files)[:5])}{', ...' if len(files) > 5 else ''})"
            if files is not None
            else f"  changed files: cannot tell ({e.changes.unknown})"
        )
        if r.would_update:
            lines.append("  would update:")
            lines.extend(f"    {u['gitrepo']}  ({u['repo']}, via {u['via']}){_paths(u)}" for u in r.would_update)
        if r.unchanged:
            lines.append("  already at this commit:")
            lines.extend(f"    {u['gitrepo']}{_paths(u)}" for u in r.unchanged)
        if not r.would_update and not r.unchanged:
            lines.append("  would update: nothing")
        if r.near_misses:
            lines.append("  near misses:")
            lines.extend(f"    {m['gitrepo']}  ({m['repo']}): {m['reason']}" for m in r.near_misses)
    return "\n".join(lines)


def _paths(entry: Mapping[str, str]) -> str:
    """The paths rule's verdict for a GitRepo it was consulted for (a skip already says it as its reason)."""
    return f"; paths rule {entry['paths']}" if "paths" in entry else ""


def render_json(results: Sequence[Explanation]) -> str:
    """Machine-readable report."""
    return json.dumps(
        [
            {
                "provider": r.event.provider,
                "ref": f"{r.event.ref_kind}:{r.event.ref_name}",
                "commit": r.event.commit,
                "repositoryKeys": r.payload_keys,
                "changedFiles": sorted(r.event.changes.paths) if r.event.changes.paths is not None else None,
                **({"changedFilesUnknown": r.event.changes.unknown} if r.event.changes.paths is None else {}),
                "wouldUpdate": r.would_update,
                "unchanged": r.unchanged,
                "nearMisses": r.near_misses,
            }
            for r in results
        ],
        indent=2,
    )
