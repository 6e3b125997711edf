"""Realistic benchmark data: GitRepo API objects as the list/watch returns them, and one signed push.

The GitRepos are deterministic (same N, same objects) and look like a real fleet of them:
several hosts (github.com, a self-hosted GitLab with subgroups, Bitbucket Server over SSH with a
port, Azure DevOps), https and scp-like SSH forms, `.git` or not, two GitRepos per repository on
average (different paths), a few pinned revisions, empty branches, labels and a Fleet-like status.

Among them, always, the four GitRepos the benchmark push is about (`TARGETS`): three name the
pushed repository (two track the pushed branch, one tracks `dev`) and one names a repository
whose name merely starts the same (`fleet-apps-suffix`, which must not match).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.deliveries import PushEvent
from controller.index import GitRepoIndex, GitRepoInfo, gitrepo_info
from controller.providers import GitHubProvider
from controller.providers.base import WebhookRequest

SECRET = "bench-webhook-secret"
CONTROLLER_NAMESPACE = "cattle-fleet-system"
PUSH_HTTPS = "https://github.com/example-org/fleet-apps"
PUSH_SSH = "git@github.com:example-org/fleet-apps.git"
PUSH_BRANCH = "main"


def sha(seed: str) -> str:
    """A deterministic 40-hex commit id."""
    return hashlib.sha1(seed.encode(), usedforsecurity=False).hexdigest()


ZERO_SHA = "0" * 40
PUSH_COMMIT = sha("bench-push-after")
PUSH_BEFORE = sha("bench-push-before")


@dataclass(frozen=True)
class Target:
    """One of the GitRepos the benchmark push concerns (or nearly)."""

    namespace: str
    name: str
    repo: str
    branch: str
    triggered: bool  # whether the push must move it


TARGETS = (
    Target("fleet-default", "fleet-apps", PUSH_HTTPS, "main", True),
    Target("team-payments", "fleet-apps-ssh", PUSH_SSH, "main", True),
    Target("fleet-default", "fleet-apps-dev", PUSH_HTTPS + ".git", "dev", False),
    Target("fleet-default", "fleet-apps-suffix", PUSH_HTTPS + "-suffix", "main", False),
)
TRIGGERED = frozenset((t.namespace, t.name) for t in TARGETS if t.triggered)

_NAMESPACES = tuple(["fleet-default", "fleet-local"] + [f"team-{i:02d}" for i in range(48)])
_BRANCHES = ("main",) * 14 + ("master",) * 3 + ("release-1.x", "develop", "")
_PATHS = (["charts/app"], ["manifests"], ["clusters/prod", "clusters/staging"], ["kustomize/overlays/prod"])


def repo_url(repo_id: int, form: int) -> str:
    """The URL of background repository `repo_id`, in one of several forms a GitRepo may use."""
    kind = repo_id % 10
    if kind < 6:  # github.com
        org, name = f"org-{repo_id % 97:02d}", f"service-{repo_id:06d}"
        return (
            f"https://github.com/{org}/{name}",
            f"git@github.com:{org}/{name}.git",
            f"https://github.com/{org}/{name}.git",
        )[form % 3]
    if kind < 8:  # self-hosted GitLab with subgroups
        path = f"platform/group-{repo_id % 31:02d}/deploy-{repo_id:06d}"
        return (f"https://gitlab.example.com/{path}.git", f"git@gitlab.example.com:{path}.git")[form % 2]
    if kind == 8:  # Bitbucket Server / Data Center
        proj, name = f"p{repo_id % 13:02d}", f"cfg-{repo_id:06d}"
        return (
            f"ssh://git@bitbucket.example.com:7999/{proj}/{name}.git",
            f"https://bitbucket.example.com/scm/{proj}/{name}.git",
        )[form % 2]
    org, proj, name = "contoso", f"Project{repo_id % 7}", f"infra-{repo_id:06d}"  # Azure DevOps
    return (
        f"https://dev.azure.com/{org}/{proj}/_git/{name}",
        f"git@ssh.dev.azure.com:v3/{org}/{proj}/{name}",
    )[form % 2]


def gitrepo_object(
    namespace: str,
    name: str,
    repo: str,
    branch: str,
    *,
    seq: int,
    revision: str = "",
    webhook_commit: str = "",
    polling_interval: str | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A GitRepo as the API returns it in a list (metadata, spec and a Fleet-like status)."""
    stamp = "2026-11-20T10:15:30Z"
    spec: dict[str, Any] = {
        "repo": repo,
        "paths": _PATHS[seq % len(_PATHS)],
        "targets": [{"name": "prod", "clusterSelector": {"matchLabels": {"env": "prod"}}}],
    }
    if branch:
        spec["branch"] = branch
    if revision:
        spec["revision"] = revision
    if polling_interval:
        spec["pollingInterval"] = polling_interval
    commit = webhook_commit or sha(f"deployed-{seq}")
    status: dict[str, Any] = {
        "commit": commit,
        "observedGeneration": 2,
        "readyClusters": 3,
        "desiredReadyClusters": 3,
        "gitJobStatus": "Current",
        "display": {"readyBundleDeployments": "3/3", "state": "", "message": "", "error": False},
        "summary": {"desiredReady": 3, "ready": 3},
        "resourceCounts": {"ready": 12, "desiredReady": 12, "missing": 0, "modified": 0, "notReady": 0},
        "conditions": [
            {"type": t, "status": s, "lastUpdateTime": stamp, "reason": "", "message": ""}
            for t, s in (("Ready", "True"), ("Accepted", "True"), ("Reconciling", "False"), ("Stalled", "False"))
        ],
    }
    if webhook_commit:
        status["webhookCommit"] = webhook_commit
        status["lastWebhookTime"] = stamp
    return {
        "apiVersion": "fleet.cattle.io/v1alpha1",
        "kind": "GitRepo",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": str(uuid.UUID(int=seq + 1)),
            "resourceVersion": str(100_000 + seq),
            "generation": 2,
            "creationTimestamp": stamp,
            "labels": labels if labels is not None else {"team": namespace, "tier": ("app", "infra")[seq % 2]},
            "finalizers": ["fleet.cattle.io/gitrepo-finalizer"],
        },
        "spec": spec,
        "status": status,
    }


def target_objects(webhook_commit: str = "") -> list[dict[str, Any]]:
    """The four GitRepos the benchmark push is about; `webhook_commit` as their recorded commit."""
    return [
        gitrepo_object(t.namespace, t.name, t.repo, t.branch, seq=i, webhook_commit=webhook_commit)
        for i, t in enumerate(TARGETS)
    ]


def background_object(i: int) -> dict[str, Any]:
    """Background GitRepo number `i` (two per repository on average, none is the pushed repo)."""
    repo_id = i // 2
    branch = _BRANCHES[i % len(_BRANCHES)]
    revision = f"v1.{i % 9}.0" if i % 50 == 7 else ""
    return gitrepo_object(
        _NAMESPACES[i % len(_NAMESPACES)],
        f"svc-{repo_id:06d}-{('app', 'cfg')[i % 2]}",
        repo_url(repo_id, i),
        branch,
        seq=len(TARGETS) + i,
        revision=revision,
        webhook_commit=sha(f"hook-{i}") if i % 5 < 3 else "",
        polling_interval="1h" if i % 4 == 0 else None,
    )


def gitrepo_objects(n: int, webhook_commit: str = "") -> Iterator[dict[str, Any]]:
    """`n` GitRepo objects (n >= 4): the targets first, then background ones."""
    if n < len(TARGETS):
        raise ValueError(f"need at least {len(TARGETS)} GitRepos, got {n}")
    yield from target_objects(webhook_commit)
    for i in range(n - len(TARGETS)):
        yield background_object(i)


def gitrepo_infos(n: int, webhook_commit: str = "") -> list[GitRepoInfo]:
    """What the watch would index for `n` GitRepos (objects converted one at a time)."""
    infos = [gitrepo_info(obj) for obj in gitrepo_objects(n, webhook_commit)]
    return [i for i in infos if i is not None]


def build_index(infos: list[GitRepoInfo]) -> GitRepoIndex:
    """A synced index holding `infos`, keyed with the default normalization."""
    index = GitRepoIndex()
    index.replace_all(infos)
    index.synced = True
    return index


SAMPLES = Path(__file__).resolve().parent / "samples"


@dataclass(frozen=True)
class Delivery:
    """One HTTP delivery ready to POST."""

    headers: dict[str, str]
    body: bytes


@functools.cache
def _github_push_sample() -> tuple[dict[str, str], dict[str, Any]]:
    """A recorded GitHub push (bench/samples/, a copy of the test suite's: the bench needs no tests/)."""
    headers = json.loads((SAMPLES / "github-push.headers.json").read_text())
    return headers, json.loads((SAMPLES / "github-push.json").read_bytes())


def delivery(
    provider: str,
    *,
    https_url: str,
    ssh_url: str,
    ref: str,
    commit: str,
    before: str,
    secret: str,
    delivery_id: str | None = None,
) -> Delivery:
    """The recorded GitHub push rewritten to name this repository, ref and commit, signed the way the
    GitHub provider module says GitHub signs (`Provider.sign`)."""
    assert provider == "github", "the benchmarks send GitHub pushes"
    sample_headers, sample = _github_push_sample()
    doc = copy.deepcopy(sample)
    repo = doc["repository"]
    repo.update(html_url=https_url, clone_url=https_url + ".git", ssh_url=ssh_url)
    repo["git_url"] = "git://" + https_url.split("://", 1)[1]
    repo["full_name"] = https_url.split("://", 1)[1].split("/", 1)[1]
    doc.update(ref=ref, after=commit, before=before, deleted=False, created=before == ZERO_SHA)
    doc["head_commit"]["id"] = commit
    body = json.dumps(doc).encode()
    headers = {**sample_headers, "X-GitHub-Delivery": delivery_id or str(uuid.uuid4())}
    return Delivery(GitHubProvider().sign(headers, body, {"github": secret.encode()}), body)


def push_delivery(commit: str = PUSH_COMMIT, before: str = PUSH_BEFORE, delivery_id: str | None = None) -> Delivery:
    """The signed GitHub push of the benchmark (tests.support's realistic payload)."""
    return delivery(
        "github",
        https_url=PUSH_HTTPS,
        ssh_url=PUSH_SSH,
        ref=f"refs/heads/{PUSH_BRANCH}",
        commit=commit,
        before=before,
        secret=SECRET,
        delivery_id=delivery_id,
    )


def push_delivery_for(https_url: str, commit: str, before: str) -> Delivery:
    """A signed GitHub push of `commit` to the main branch of the github.com repository `https_url`."""
    path = https_url.removeprefix("https://github.com/")
    return delivery(
        "github",
        https_url=https_url,
        ssh_url=f"git@github.com:{path}.git",
        ref=f"refs/heads/{PUSH_BRANCH}",
        commit=commit,
        before=before,
        secret=SECRET,
    )


def push_event(d: Delivery | None = None) -> PushEvent:
    """The PushEvent the receiver parses out of the benchmark push."""
    d = d or push_delivery()
    request = WebhookRequest("POST", {k.lower(): v for k, v in d.headers.items()}, d.body)
    (parsed,) = GitHubProvider().parse(request)
    assert isinstance(parsed, PushEvent)
    return parsed


def secret_reader() -> Any:
    """An in-memory secret reader holding the default webhook secret `gitjob-webhook`."""
    data = {(CONTROLLER_NAMESPACE, "gitjob-webhook"): {"github": SECRET.encode()}}

    async def read(namespace: str, name: str) -> dict[str, bytes] | None:
        return data.get((namespace, name))

    return read
