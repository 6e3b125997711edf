"""Pure decisions: which GitRepos a push reaches, which of them get the commit, and why not the others.

No I/O here. The HTTP handler asks `plan()` for a list of `Decision`s, writes the ones marked
`update`, and returns every reason to the caller, so "200 but nothing happened" always comes with
an explanation. `fleet-webhook explain` uses exactly the same functions.

Rules, in the order they are checked for each candidate GitRepo:
1. excluded by `exclusions` or by the mapping that reached it;
2. namespace not allowed by the route the delivery came in on;
3. ref rules: a deleted branch/tag never triggers; `spec.revision` set -> only a tag push whose
   tag equals it; else `spec.branch` (or `master`, the branch Fleet's controller tracks when
   `spec.branch` is empty) must equal the pushed branch;
4. already at this commit -> nothing to write;
5. out of order: the commit is older than the one recorded (see CommitHistory) -> not moved back.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from controller.config import Config, GitRepoRef, RepoMapping, Route
from controller.events import PushEvent, RefKind
from controller.index import GitRepoIndex, GitRepoInfo
from controller.normalize import RepoKey

# The branch Fleet's gitjob controller checks out when spec.branch and spec.revision are empty.
FLEET_DEFAULT_BRANCH = "master"


class Action(enum.StrEnum):
    """What happens to one candidate GitRepo."""

    UPDATE = "update"
    UNCHANGED = "unchanged"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class Candidate:
    """A GitRepo reached by a push, and how it was reached (for explanations)."""

    gitrepo: GitRepoInfo
    via: str
    mapping: RepoMapping | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one candidate."""

    gitrepo: GitRepoInfo
    action: Action
    reason: str
    via: str


class CommitHistory:
    """Recent "commit X came right after commit Y" facts learnt from deliveries, bounded in size.

    Deliveries carry the previous commit (`before`). If a delivery for A->B arrives after one for
    B->C, we know B precedes C and refuse to move webhookCommit from C back to B (Fleet #4000).
    When nothing links the two commits we cannot tell their order and the newest delivery wins.
    """

    def __init__(self, max_entries: int = 50_000, max_walk: int = 256) -> None:
        self._parent: OrderedDict[str, str] = OrderedDict()
        self._max_entries = max_entries
        self._max_walk = max_walk

    def learn(self, event: PushEvent) -> None:
        """Remember that `event.before` is the parent of `event.commit`."""
        if event.before and event.commit and event.before != event.commit and not event.deleted:
            self._parent[event.commit] = event.before
            self._parent.move_to_end(event.commit)
            while len(self._parent) > self._max_entries:
                self._parent.popitem(last=False)

    def precedes(self, older: str, newer: str) -> bool:
        """Whether the chain of known parents leads from `newer` back to `older`."""
        seen = 0
        node = self._parent.get(newer)
        while node is not None and seen < self._max_walk:
            if node == older:
                return True
            node = self._parent.get(node)
            seen += 1
        return False


def event_keys(event: PushEvent, index: GitRepoIndex) -> tuple[RepoKey, ...]:
    """Normalized identities of every URL the payload names, without repeats."""
    keys = (index.key(url) for url in event.repo_urls)
    return tuple(dict.fromkeys(k for k in keys if k is not None))


def candidates(event: PushEvent, index: GitRepoIndex, config: Config) -> list[Candidate]:
    """Every GitRepo a push could reach, each once: by spec.repo, by alias, by explicit mapping."""
    found: dict[tuple[str, str], Candidate] = {}

    def add(infos: Iterable[GitRepoInfo], via: str, mapping: RepoMapping | None = None) -> None:
        for info in infos:
            found.setdefault(info.ref, Candidate(info, via, mapping))

    keys = event_keys(event, index)
    for key in keys:
        add(index.lookup(key), "spec.repo")
    key_set = set(keys)
    for mapping in config.mappings:
        if index.key(mapping.repo) not in key_set:
            continue
        for alias in mapping.aliases:
            alias_key = index.key(alias)
            if alias_key is not None:
                add(index.lookup(alias_key), f"alias {alias}", mapping)
        for ref in mapping.gitrepos:
            info = index.get(ref.namespace, ref.name)
            if info is not None:
                add((info,), "mapping gitRepos", mapping)
        if not mapping.selector.empty:
            add((i for i in index if mapping.selector.matches(i.label_map)), "mapping selector", mapping)
    # A mapping's exclude applies to whichever way the GitRepo was reached.
    for mapping in config.mappings:
        if index.key(mapping.repo) in key_set:
            for ref in mapping.exclude:
                if (ref.namespace, ref.name) in found:
                    cand = found[(ref.namespace, ref.name)]
                    found[(ref.namespace, ref.name)] = Candidate(cand.gitrepo, cand.via, mapping)
    return list(found.values())


def ref_mismatch(event: PushEvent, gitrepo: GitRepoInfo) -> str | None:
    """Why this push's ref does not concern the GitRepo, or None when it does."""
    if event.deleted:
        return f"{event.ref_kind} {event.ref_name!r} was deleted"
    if gitrepo.revision:
        if event.ref_kind is RefKind.TAG and event.ref_name == gitrepo.revision:
            return None
        return f"revision pinned to {gitrepo.revision!r}; push was to {event.ref_kind} {event.ref_name!r}"
    tracked = gitrepo.branch or FLEET_DEFAULT_BRANCH
    if event.ref_kind is not RefKind.BRANCH:
        return f"GitRepo tracks branch {tracked!r}; push was to {event.ref_kind} {event.ref_name!r}"
    if event.ref_name != tracked:
        default = "" if gitrepo.branch else " (spec.branch is empty: Fleet uses 'master')"
        return f"branch differs: GitRepo tracks {tracked!r}{default}, push was to {event.ref_name!r}"
    return None


def decide(
    event: PushEvent,
    candidate: Candidate,
    route: Route | None,
    config: Config,
    history: CommitHistory,
) -> Decision:
    """The outcome for one candidate GitRepo; see the module docstring for the rule order."""
    info = candidate.gitrepo

    def skip(reason: str) -> Decision:
        return Decision(info, Action.SKIP, reason, candidate.via)

    if config.exclusions.excludes(info.namespace, info.name, info.label_map):
        return skip("excluded by config exclusions")
    if candidate.mapping is not None and GitRepoRef(info.namespace, info.name) in candidate.mapping.exclude:
        return skip(f"excluded by mapping for {candidate.mapping.repo}")
    if route is not None and not route.allows_namespace(info.namespace):
        return skip(f"namespace {info.namespace!r} is not allowed by route {route.path!r}")
    mismatch = ref_mismatch(event, info)
    if mismatch:
        return skip(mismatch)
    if info.webhook_commit == event.commit:
        return Decision(info, Action.UNCHANGED, "already at this commit", candidate.via)
    if info.webhook_commit and history.precedes(event.commit, info.webhook_commit):
        return skip(f"out of order: {event.commit[:12]} precedes the recorded {info.webhook_commit[:12]}")
    return Decision(info, Action.UPDATE, "commit recorded", candidate.via)


def plan(
    event: PushEvent,
    index: GitRepoIndex,
    config: Config,
    route: Route | None,
    history: CommitHistory,
) -> list[Decision]:
    """Decisions for every GitRepo the push reaches, sorted by namespace/name for stable output."""
    decisions = [decide(event, c, route, config, history) for c in candidates(event, index, config)]
    return sorted(decisions, key=lambda d: d.gitrepo.ref)
