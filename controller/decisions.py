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
4. the monorepo paths rule, for GitRepos that opted in: a push that changed no file Fleet deploys
   for the GitRepo (`spec.paths`, `spec.bundles`) is skipped; one whose files the payload cannot
   tell triggers (`paths_decision`);
5. already at this commit -> nothing to write;
6. newest by construction: a push whose `before` is the recorded commit, or a forced push (a
   rollback by force push is the users' way back), is written;
7. out of order: the commit is older than the one recorded (see CommitHistory) -> not moved back.

Rules 5-7 are `commit_decision`; the writer asks it again after a write conflict, with the GitRepo
as it is now, so a GitRepo is judged by one rule set whoever asks.

Within one delivery, several changes to one ref collapse to the newest (`collapse`), and each
GitRepo gets one decision however many refs the delivery moved (`plan_delivery`), so a batch of
5,000 ref changes costs O(changes + GitRepos), not their product.
"""

from __future__ import annotations

import dataclasses
import enum
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from controller import paths
from controller.config import Config, GitRepoRef, RepoMapping, Route
from controller.deliveries import ChangedFiles, PushEvent, RefKind
from controller.index import (
    ALSO_TRIGGER_ON_PATHS_ANNOTATION,
    TRIGGER_ON_PATHS_ANNOTATION,
    GitRepoIndex,
    GitRepoInfo,
)
from controller.normalize import RepoKey, redact_url

# The branch Fleet's gitjob controller checks out when spec.branch and spec.revision are empty.
FLEET_DEFAULT_BRANCH = "master"


class PathsOutcome(enum.StrEnum):
    """How the monorepo paths rule decided (the `outcome` label of fleet_webhook_paths_rule_total)."""

    SKIPPED = "skipped"  # the push changed no file the GitRepo deploys
    TOUCHED = "touched"  # it changed one
    CANNOT_TELL = "cannot_tell"  # the payload does not say which files changed: triggered
    NOT_JUDGED = "not_judged"  # the GitRepo's paths or annotation cannot be judged: triggered


@dataclass(frozen=True, slots=True)
class PathsVerdict:
    """The monorepo paths rule's answer for one GitRepo and one push: trigger or not, and why."""

    trigger: bool
    reason: str
    outcome: PathsOutcome


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
    # The monorepo paths rule's verdict when it was consulted (the answer and `explain` show it).
    paths: PathsVerdict | None = None

    @property
    def paths_verdict(self) -> str:
        """The paths rule's reason, or "" when it was not consulted."""
        return self.paths.reason if self.paths is not None else ""


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
        """Remember that `event.before` is the parent of `event.commit`.

        A rollback (W->X, then a force push X->W) would make X and W each other's parent; the older
        fact is dropped, so W is now the newest and a late redelivery of X is what is out of order.
        """
        if event.before and event.commit and event.before != event.commit and not event.deleted:
            if self._parent.get(event.before) == event.commit:
                del self._parent[event.before]
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
                add(index.lookup(alias_key), f"alias {redact_url(alias)}", mapping)
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


def commit_decision(event: PushEvent, info: GitRepoInfo, via: str, history: CommitHistory) -> Decision:
    """Rules 4-6: whether `event.commit` should replace what the GitRepo records now."""
    recorded = info.webhook_commit
    if recorded == event.commit:
        return Decision(info, Action.UNCHANGED, "already at this commit", via)
    if not recorded or event.forced or event.before == recorded:
        return Decision(info, Action.UPDATE, "commit recorded", via)
    if history.precedes(event.commit, recorded):
        return Decision(
            info, Action.SKIP, f"out of order: {event.commit[:12]} precedes the recorded {recorded[:12]}", via
        )
    return Decision(info, Action.UPDATE, "commit recorded", via)


def paths_opted_in(info: GitRepoInfo, by_mapping: bool) -> tuple[bool, PathsVerdict | None]:
    """Whether the paths rule applies to this GitRepo, and the verdict when its annotation is unusable.

    The annotation decides when it is `"true"` or `"false"`; without it a mapping's `triggerOnPaths`
    does. Any other value is a mistake that must not cost a deployment: the rule stays off.
    """
    value = info.trigger_on_paths
    if value is None:
        return by_mapping, None
    if value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true", None
    note = f"annotation {TRIGGER_ON_PATHS_ANNOTATION}: {value!r} is neither 'true' nor 'false', so it is off"
    return False, PathsVerdict(True, note, PathsOutcome.NOT_JUDGED)


def paths_decision(changes: ChangedFiles, info: GitRepoInfo) -> PathsVerdict:
    """Rule 4 for a GitRepo that opted in: does the push change a file Fleet deploys for it?

    Whenever that cannot be known (no file lists, an entry that cannot be judged, the whole
    repository deployed) the answer is trigger: the rule only ever saves Jobs, never loses one.
    """
    field = "spec.bundles" if info.bundles else "spec.paths"
    also = f"annotation {ALSO_TRIGGER_ON_PATHS_ANNOTATION}"
    not_judged = PathsOutcome.NOT_JUDGED
    try:
        watched = paths.watched_for(info.paths, info.bundles)
    except paths.BadPath as exc:
        return PathsVerdict(True, f"triggers: {field} cannot be judged ({exc})", not_judged)
    if not watched:
        reason = "triggers: spec.paths is empty, so the GitRepo deploys the whole repository"
        return PathsVerdict(True, reason, not_judged)
    try:
        extra = paths.watched_for(info.also_trigger_on, ()) if info.also_trigger_on else ()
    except paths.BadPath as exc:
        return PathsVerdict(True, f"triggers: {also} cannot be judged ({exc})", not_judged)
    for source, entries in ((field, watched), (also, extra)):
        if any(w.is_root for w in entries):
            return PathsVerdict(True, f"triggers: {source} includes the repository root", not_judged)
    if changes.paths is None:
        reason = f"triggers: the payload cannot tell which files changed ({changes.unknown})"
        return PathsVerdict(True, reason, PathsOutcome.CANNOT_TELL)
    changed = paths.change_index(changes.paths)
    for source, entries in ((field, watched), (also, extra)):
        found = changed.first_covered(entries)
        if found is not None:
            file, entry = found
            return PathsVerdict(
                True, f"triggers: {file} changed under {source} entry {entry.text!r}", PathsOutcome.TOUCHED
            )
    shown = f"{field} [" + ", ".join(w.text for w in watched) + "]"
    if extra:
        shown += f" nor {also} [" + ", ".join(w.text for w in extra) + "]"
    count = len(changed.files)
    example = f", e.g. {changed.files[0][0]}" if count else ""
    reason = f"push changed no file under {shown} ({count} files changed{example})"
    return PathsVerdict(False, reason, PathsOutcome.SKIPPED)


def decide(
    event: PushEvent,
    candidate: Candidate,
    route: Route | None,
    config: Config,
    history: CommitHistory,
    *,
    paths_by_mapping: bool = False,
) -> Decision:
    """The outcome for one candidate GitRepo; see the module docstring for the rule order.

    `paths_by_mapping`: a mapping for the pushed repository sets `triggerOnPaths`.
    """
    unreachable = ineligible(candidate, route, config)
    if unreachable:
        return _skipper(candidate)(unreachable)
    mismatch = ref_mismatch(event, candidate.gitrepo)
    if mismatch:
        return _skipper(candidate)(mismatch)
    opted, verdict = paths_opted_in(candidate.gitrepo, paths_by_mapping)
    if opted:
        verdict = paths_decision(event.changes, candidate.gitrepo)
        if not verdict.trigger:
            return Decision(candidate.gitrepo, Action.SKIP, verdict.reason, candidate.via, verdict)
    decision = commit_decision(event, candidate.gitrepo, candidate.via, history)
    return dataclasses.replace(decision, paths=verdict) if verdict is not None else decision


def paths_by_mapping(event: PushEvent, index: GitRepoIndex, config: Config) -> bool:
    """Whether a mapping for the pushed repository turns the paths rule on (`triggerOnPaths`)."""
    if not any(m.trigger_on_paths for m in config.mappings):
        return False
    keys = set(event_keys(event, index))
    return any(m.trigger_on_paths and index.key(m.repo) in keys for m in config.mappings)


def ineligible(candidate: Candidate, route: Route | None, config: Config) -> str | None:
    """Rules 1-2: why this GitRepo may not be updated by this delivery at all, or None."""
    info = candidate.gitrepo
    if not config.exclusions.empty and config.exclusions.excludes(info.namespace, info.name, info.label_map):
        return "excluded by config exclusions"
    if candidate.mapping is not None and GitRepoRef(info.namespace, info.name) in candidate.mapping.exclude:
        return f"excluded by mapping for {redact_url(candidate.mapping.repo)}"
    if route is not None and not route.allows_namespace(info.namespace):
        return f"namespace {info.namespace!r} is not allowed by route {route.path!r}"
    return None


def _skipper(candidate: Candidate) -> Callable[[str], Decision]:
    def skip(reason: str) -> Decision:
        return Decision(candidate.gitrepo, Action.SKIP, reason, candidate.via)

    return skip


def collapse(events: Sequence[PushEvent]) -> list[PushEvent]:
    """Several changes to one ref in one delivery become the newest of them, in first-seen order.

    The newest is the change whose commit no other change of that ref builds on (its commit is
    nobody's `before`); when that does not single one out, the last in the payload wins, as a host
    lists changes in the order they happened. Deletions are kept apart: they never trigger anyway.
    """
    groups: dict[tuple[str, str, tuple[str, ...], bool], list[PushEvent]] = {}
    for event in events:
        groups.setdefault((event.ref_kind, event.ref_name, event.repo_urls, event.deleted), []).append(event)
    out: list[PushEvent] = []
    for group in groups.values():
        if len(group) == 1:
            out.append(group[0])
            continue
        built_on = {e.before for e in group if e.before}
        tips = [e for e in group if e.commit not in built_on] or group
        out.append(dataclasses.replace(tips[-1], changes=COLLAPSED))
    return out


COLLAPSED = ChangedFiles.cannot_tell("the delivery moved the ref several times")


WITHHELD = "not authenticated for this GitRepo"


def _tracked_ref(info: GitRepoInfo) -> tuple[RefKind, str]:
    if info.revision:
        return RefKind.TAG, info.revision
    return RefKind.BRANCH, info.branch or FLEET_DEFAULT_BRANCH


def plan_delivery(
    events: Sequence[PushEvent],
    index: GitRepoIndex,
    config: Config,
    route: Route | None,
    history: CommitHistory,
    only: Callable[[GitRepoInfo], bool] | None = None,
) -> list[tuple[PushEvent, Decision]]:
    """One decision per GitRepo the delivery reaches, paired with the change it is about.

    Each GitRepo is judged against the change to the ref it tracks (a live change before a deletion).
    When the delivery moved no such ref, the GitRepo is skipped once with the reason of the first
    change, or, for a batch, a summary naming the ref it tracks.

    `only`: the GitRepos that may be judged at all (those whose own secret authenticated the body);
    every other candidate is skipped with WITHHELD before any rule runs, so a sender who is not
    authenticated for a GitRepo buys no work for it (not even the paths rule's).
    """
    pushes = collapse(events)
    if not pushes:
        return []
    out: list[tuple[PushEvent, Decision]] = []
    by_repo: dict[tuple[str, ...], list[PushEvent]] = {}
    for push in pushes:
        by_repo.setdefault(push.repo_urls, []).append(push)
    for group in by_repo.values():
        by_ref: dict[tuple[RefKind, str], PushEvent] = {}
        for push in group:
            held = by_ref.get((push.ref_kind, push.ref_name))
            if held is None or (held.deleted and not push.deleted):
                by_ref[(push.ref_kind, push.ref_name)] = push
        by_mapping = paths_by_mapping(group[0], index, config)
        for candidate in candidates(group[0], index, config):
            if only is not None and not only(candidate.gitrepo):
                out.append((group[0], _skipper(candidate)(WITHHELD)))
                continue
            tracked = _tracked_ref(candidate.gitrepo)
            match = by_ref.get(tracked)
            if match is not None or len(group) == 1:
                push = match or group[0]
                out.append((push, decide(push, candidate, route, config, history, paths_by_mapping=by_mapping)))
                continue
            kind, name = tracked
            reason = ineligible(candidate, route, config) or (
                f"GitRepo tracks {kind} {name!r}; this delivery changed {len(group)} other refs"
            )
            out.append((group[0], _skipper(candidate)(reason)))
    out.sort(key=lambda pair: pair[1].gitrepo.ref)
    return out


def plan(
    event: PushEvent,
    index: GitRepoIndex,
    config: Config,
    route: Route | None,
    history: CommitHistory,
) -> list[Decision]:
    """Decisions for every GitRepo one push reaches, sorted by namespace/name for stable output."""
    return [decision for _, decision in plan_delivery([event], index, config, route, history)]
