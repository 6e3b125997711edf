"""Shared test helpers: realistic deliveries built from the payload fixtures, signed like each host signs.

`delivery(provider, repo=..., ref=..., commit=...)` returns headers and body of a push to any
repository, so integration tests can aim one provider's real payload shape at their own GitRepos.
"""

from __future__ import annotations

import copy
import hashlib
import json
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.deliveries import Parsed
from controller.providers import PROVIDER_NAMES, Provider, by_name
from controller.providers.base import WebhookRequest

PAYLOADS = Path(__file__).resolve().parent / "fixtures" / "payloads"
AZURE_USER = "fleet-hook"
ZERO = "0" * 40

PUSH_FIXTURE = {
    "github": "push",
    "gitlab": "push",
    "bitbucket": "repo-push",
    "bitbucket-server": "repo-refs-changed",
    "gogs": "push",
    "gitea": "push",
    "azure-devops": "git-push",
    "generic": "push",
}
PROVIDERS = PROVIDER_NAMES
SECRET_KEYS = {name: by_name(name).secret_keys for name in PROVIDER_NAMES}
DELIVERY_ID_HEADERS = frozenset(h.lower() for name in PROVIDER_NAMES for h in by_name(name).delivery_headers)


def sha(seed: str) -> str:
    """A deterministic 40-hex commit id."""
    return hashlib.sha1(seed.encode(), usedforsecurity=False).hexdigest()


def fixture(provider: str, event: str) -> tuple[dict[str, str], dict[str, Any]]:
    """Headers (original spelling) and parsed body of a stored fixture."""
    headers = json.loads((PAYLOADS / provider / f"{event}.headers.json").read_text())
    body = json.loads((PAYLOADS / provider / f"{event}.json").read_bytes())
    return headers, body


def secret_data(provider: str, secret: str) -> dict[str, str]:
    """Secret data (key -> value) that makes `secret` valid for `provider` (a user name and `secret`
    as the password for a provider that reads two keys, as Azure DevOps does)."""
    keys = by_name(provider).secret_keys
    return {keys[0]: AZURE_USER, keys[1]: secret} if len(keys) == 2 else {keys[0]: secret}


def sign(provider: str, headers: dict[str, str], body: bytes, secret: str | None) -> dict[str, str]:
    """Headers plus the authentication header the host adds for `secret` (None: unsigned), exactly
    as the provider module says its host signs (`Provider.sign`)."""
    if secret is None:
        return dict(headers)
    credential = {k: v.encode() for k, v in secret_data(provider, secret).items()}
    return by_name(provider).sign(headers, body, credential)


def parse_one(provider: Provider, request: WebhookRequest) -> Parsed:
    """The event of a delivery that carries exactly one (AssertionError otherwise)."""
    parsed = provider.parse(request)
    assert len(parsed) == 1, parsed
    return parsed[0]


@dataclass(frozen=True)
class Delivery:
    """One HTTP delivery ready to POST."""

    headers: dict[str, str]
    body: bytes


def _ref_parts(ref: str) -> tuple[str, str]:
    if ref.startswith("refs/tags/"):
        return "tag", ref.removeprefix("refs/tags/")
    return "branch", ref.removeprefix("refs/heads/")


def push_document(
    provider: str,
    *,
    https_url: str,
    ssh_url: str,
    ref: str,
    commit: str,
    before: str,
    forced: bool = False,
    files: list[str] | None = None,
) -> dict[str, Any]:
    """The provider's push fixture rewritten to name this repo, ref and commit.

    With `files`, the push is one commit that modified exactly these files (hosts that list files per
    commit: GitHub, GitLab, Gitea, Gogs; the generic format's `changedFiles`)."""
    _, body = fixture(provider, PUSH_FIXTURE[provider])
    doc = copy.deepcopy(body)
    kind, name = _ref_parts(ref)
    path = urllib.parse.urlparse(https_url).path.strip("/").removesuffix(".git")
    if provider in ("github", "gogs", "gitea"):
        repo = doc["repository"]
        repo["html_url"] = https_url.removesuffix(".git")
        repo["clone_url"] = https_url if https_url.endswith(".git") else https_url + ".git"
        repo["ssh_url"] = ssh_url
        if "git_url" in repo:
            repo["git_url"] = "git://" + https_url.split("://", 1)[1]
        repo["full_name"] = path
        doc.update(ref=ref, after=commit, before=before)
        if isinstance(doc.get("head_commit"), dict):  # the pushed commit (a lightweight tag's too)
            doc["head_commit"]["id"] = commit
        if provider == "github":
            doc["deleted"] = False
            doc["created"] = before == ZERO
            doc["forced"] = forced
    elif provider == "gitlab":
        project = doc["project"]
        project.update(
            web_url=https_url.removesuffix(".git"),
            git_http_url=https_url,
            git_ssh_url=ssh_url,
            http_url=https_url,
            ssh_url=ssh_url,
            path_with_namespace=path,
            homepage=https_url.removesuffix(".git"),
            url=ssh_url,
        )
        doc["repository"].update(
            url=ssh_url, homepage=https_url.removesuffix(".git"), git_http_url=https_url, git_ssh_url=ssh_url
        )
        doc.update(ref=ref, after=commit, before=before, checkout_sha=commit)
    elif provider == "bitbucket":
        doc["repository"]["links"]["html"]["href"] = https_url.removesuffix(".git")
        doc["repository"]["full_name"] = path
        change = doc["push"]["changes"][0]
        change["new"]["name"] = name
        change["new"]["type"] = kind
        change["new"]["target"]["hash"] = commit
        if change.get("old"):
            change["old"]["name"] = name
            change["old"]["target"]["hash"] = before
        doc["push"]["changes"] = [change]
    elif provider == "bitbucket-server":
        doc["repository"]["links"] = {
            "clone": [{"href": ssh_url, "name": "ssh"}, {"href": https_url, "name": "http"}],
            "self": [{"href": https_url}],
        }
        doc["changes"] = [
            {
                "ref": {"id": ref, "displayId": name, "type": kind.upper()},
                "refId": ref,
                "fromHash": before,
                "toHash": commit,
                "type": "UPDATE" if before != ZERO else "ADD",
            }
        ]
    elif provider == "azure-devops":
        doc["resource"]["repository"]["remoteUrl"] = https_url
        doc["resource"]["refUpdates"] = [{"name": ref, "oldObjectId": before, "newObjectId": commit}]
    elif provider == "generic":
        doc = {"repository": https_url, "repositories": [ssh_url], "ref": ref, "commit": commit, "before": before}
        if files is not None:
            doc["changedFiles"] = files
    if files is not None and provider in ("github", "gitlab", "gitea", "gogs"):
        template = dict(doc["commits"][-1])
        template.update(id=commit, added=[], modified=list(files), removed=[])
        doc["commits"] = [template]
        for count in ("total_commits", "total_commits_count"):
            if count in doc:
                doc[count] = 1
    return doc


def delivery(
    provider: str,
    *,
    https_url: str,
    ssh_url: str = "",
    ref: str = "refs/heads/main",
    commit: str,
    before: str = ZERO,
    secret: str | None = None,
    delivery_id: str | None = None,
    form: bool = False,
    forced: bool = False,
    files: list[str] | None = None,
    fields: dict[str, Any] | None = None,
) -> Delivery:
    """A signed push delivery of `provider`, with a fresh delivery id unless one is given.

    `forced` marks a GitHub push as a force push (other hosts' payloads do not say so). `files`: see
    push_document; `fields`: top-level payload fields set last (`total_commits`, `forced`)."""
    headers, _ = fixture(provider, PUSH_FIXTURE[provider])
    doc = push_document(
        provider,
        https_url=https_url,
        ssh_url=ssh_url or https_url,
        ref=ref,
        commit=commit,
        before=before,
        forced=forced,
        files=files,
    )
    doc.update(fields or {})
    raw = json.dumps(doc).encode()
    if form:
        raw = urllib.parse.urlencode({"payload": raw.decode()}).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    new_id = delivery_id or str(uuid.uuid4())
    for name in list(headers):
        if name.lower() in DELIVERY_ID_HEADERS:
            headers[name] = new_id
    return Delivery(sign(provider, headers, raw, secret), raw)


def raw_delivery(provider: str, event: str, secret: str | None) -> Delivery:
    """A stored fixture as is, signed."""
    headers, _ = fixture(provider, event)
    raw = (PAYLOADS / provider / f"{event}.json").read_bytes()
    return Delivery(sign(provider, headers, raw, secret), raw)


def json_values(max_text: int, max_leaves: int) -> Any:
    """A hypothesis strategy for arbitrary JSON values (no NaN: providers reject it before parsing)."""
    from hypothesis import strategies as st

    return st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=max_text),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
        max_leaves=max_leaves,
    )


def replace_one_node(draw: Any, doc: Any, replacement: Any) -> None:
    """Walk down `doc` at random and replace one node with `draw(replacement(old_node))`, in place."""
    from hypothesis import strategies as st

    node = doc
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            return
        key = draw(st.sampled_from(keys))
        child = node[key]
        if isinstance(child, dict | list) and child and draw(st.booleans()):
            node = child
            continue
        node[key] = draw(replacement(child))
        return
