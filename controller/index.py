"""The in-memory GitRepo index: what the watch has seen, keyed by normalized repo identity.

A lookup is one dict access, so it costs the same with 10 or 100,000 GitRepos. The index is
owned by the event loop: the watch tasks change it there, between awaits, so readers (request
handlers) never see a half-applied change. Each key's entry is an immutable tuple that is
replaced, never edited, and a full re-list swaps both dicts at once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from controller.normalize import RepoKey, repo_key

# Annotation that marks a pollingInterval this controller set, holding the value it wrote.
MANAGED_INTERVAL_ANNOTATION = "fleet-webhook.cattle.io/polling-interval-set"
# Annotation holding the deliveries shared by replicas (controller/ledger.py owns its format).
LEDGER_ANNOTATION = "fleet-webhook.cattle.io/webhook-ledger"
# Opt-in (or, "false", opt-out) of the monorepo paths rule for one GitRepo (decisions.paths_decision).
TRIGGER_ON_PATHS_ANNOTATION = "fleet-webhook.cattle.io/trigger-on-paths"
# More directories (`;`- or `,`-separated, Fleet's glob syntax) whose changes also trigger the GitRepo
# under that rule: what its bundles read from outside spec.paths (`helm.chart: ../charts/x`).
ALSO_TRIGGER_ON_PATHS_ANNOTATION = "fleet-webhook.cattle.io/also-trigger-on-paths"
# Payload URLs whose key `GitRepoIndex.key` remembers. Every push to a repository names the same few
# URLs, so after the first delivery its keys cost a dict lookup instead of a parse. Bounded: when
# full the memo is emptied, so a flood of made-up URLs costs at most what it would without it.
KEY_MEMO_SIZE = 4096

Keyer = Callable[[str], RepoKey | None]


@dataclass(frozen=True, slots=True)
class GitRepoInfo:
    """The parts of a GitRepo the receiver reads, copied out of the API object."""

    namespace: str
    name: str
    resource_version: str
    repo: str
    branch: str
    revision: str
    labels: tuple[tuple[str, str], ...]
    webhook_secret: str
    polling_interval: str | None
    disable_polling: bool
    webhook_commit: str
    last_webhook_time: str
    managed_interval: str | None
    # Field managers owning spec.pollingInterval (managedFields), plus "last-applied" when a client-side
    # apply (kubectl, Argo CD) names it in its last-applied-configuration: polling.interval_is_ours.
    interval_owners: tuple[str, ...] = ()
    # The text of annotation ledger.LEDGER_ANNOTATION: deliveries every replica has learnt (--shared-order).
    ledger: str = ""
    # What Fleet deploys from the repository (controller/paths.py): spec.paths, or spec.bundles as
    # (base, options) pairs, and the raw value of TRIGGER_ON_PATHS_ANNOTATION (None when absent).
    paths: tuple[str, ...] = ()
    bundles: tuple[tuple[str, str], ...] = ()
    trigger_on_paths: str | None = None
    also_trigger_on: tuple[str, ...] = ()  # ALSO_TRIGGER_ON_PATHS_ANNOTATION, split

    @property
    def ref(self) -> tuple[str, str]:
        """(namespace, name)."""
        return (self.namespace, self.name)

    @property
    def label_map(self) -> dict[str, str]:
        """Labels as a dict."""
        return dict(self.labels)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _section(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


def gitrepo_info(obj: Mapping[str, Any]) -> GitRepoInfo | None:
    """Extract a GitRepoInfo from an API object (dict); None when it lacks a namespace or name."""
    meta, spec, status = _section(obj, "metadata"), _section(obj, "spec"), _section(obj, "status")
    namespace, name = _str(meta.get("namespace")), _str(meta.get("name"))
    if not namespace or not name:
        return None
    labels, annotations = _section(meta, "labels"), _section(meta, "annotations")
    interval = spec.get("pollingInterval")
    managed = annotations.get(MANAGED_INTERVAL_ANNOTATION)
    return GitRepoInfo(
        namespace=namespace,
        name=name,
        resource_version=_str(meta.get("resourceVersion")),
        repo=_str(spec.get("repo")),
        branch=_str(spec.get("branch")),
        revision=_str(spec.get("revision")),
        labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
        webhook_secret=_str(spec.get("webhookSecret")),
        polling_interval=interval if isinstance(interval, str) and interval != "" else None,
        disable_polling=spec.get("disablePolling") is True,
        webhook_commit=_str(status.get("webhookCommit")),
        last_webhook_time=_str(status.get("lastWebhookTime")),
        managed_interval=managed if isinstance(managed, str) else None,
        interval_owners=_interval_owners(meta, annotations),
        ledger=_str(annotations.get(LEDGER_ANNOTATION)),
        paths=tuple(p for p in _list(spec.get("paths")) if isinstance(p, str)),
        bundles=tuple(
            (_str(b.get("base")), _str(b.get("options"))) for b in _list(spec.get("bundles")) if isinstance(b, dict)
        ),
        trigger_on_paths=_optional_str(annotations.get(TRIGGER_ON_PATHS_ANNOTATION)),
        also_trigger_on=_path_list(annotations.get(ALSO_TRIGGER_ON_PATHS_ANNOTATION)),
    )


def _path_list(value: Any) -> tuple[str, ...]:
    """An annotation's `a; b, c` as ("a", "b", "c"): separators `;` and `,`, spaces around entries dropped."""
    if not isinstance(value, str):
        return ()
    return tuple(p.strip() for p in value.replace(",", ";").split(";") if p.strip())


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


LAST_APPLIED_ANNOTATION = "kubectl.kubernetes.io/last-applied-configuration"
LAST_APPLIED_OWNER = "last-applied"


def _interval_owners(meta: Mapping[str, Any], annotations: Mapping[str, Any]) -> tuple[str, ...]:
    """Who claims spec.pollingInterval: managers in managedFields, and client-side apply's annotation."""
    owners: list[str] = []
    entries = meta.get("managedFields")
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, dict) or entry.get("subresource"):
            continue
        spec = _section(_section(entry, "fieldsV1"), "f:spec")
        if "f:pollingInterval" in spec and isinstance(entry.get("manager"), str):
            owners.append(entry["manager"])
    applied = annotations.get(LAST_APPLIED_ANNOTATION)
    if isinstance(applied, str) and '"pollingInterval"' in applied:  # parse only when it may be there
        try:
            document = json.loads(applied)
        except ValueError:
            document = None
        if isinstance(document, dict) and "pollingInterval" in _section(document, "spec"):
            owners.append(LAST_APPLIED_OWNER)
    return tuple(sorted(set(owners)))


def _older(candidate: str, held: str) -> bool:
    """Whether resourceVersion `candidate` is older than `held` (both numeric in etcd-backed APIs)."""
    if candidate.isdigit() and held.isdigit():
        return int(candidate) < int(held)
    return False


def default_keyer() -> Keyer:
    """Key GitRepos with the normalizer's defaults."""
    return repo_key


class GitRepoIndex:
    """GitRepos by (namespace, name) and by normalized repo key. Loop-thread only."""

    def __init__(self, keyer: Keyer | None = None) -> None:
        self._keyer: Keyer = keyer or default_keyer()
        self._by_ref: dict[tuple[str, str], GitRepoInfo] = {}
        self._by_key: dict[RepoKey, tuple[GitRepoInfo, ...]] = {}
        self._key_of: dict[tuple[str, str], RepoKey | None] = {}
        self._key_memo: dict[str, RepoKey | None] = {}
        self._with_secret: dict[str, int] = {}  # namespace -> GitRepos carrying spec.webhookSecret
        self.synced = False
        # Why the watch that feeds the index last failed; None once it has listed again. The index is
        # then possibly stale, which /readyz says (`watchError`) rather than a log line alone.
        self.watch_error: str | None = None

    def __len__(self) -> int:
        return len(self._by_ref)

    def __iter__(self) -> Iterator[GitRepoInfo]:
        return iter(tuple(self._by_ref.values()))

    def key(self, url: str) -> RepoKey | None:
        """The normalized key of `url` under the current normalization settings (memoized)."""
        memo = self._key_memo
        if url in memo:
            return memo[url]
        key = self._keyer(url)
        if len(memo) >= KEY_MEMO_SIZE:
            memo.clear()
        memo[url] = key
        return key

    def lookup(self, key: RepoKey) -> tuple[GitRepoInfo, ...]:
        """Every GitRepo whose spec.repo normalizes to `key`."""
        return self._by_key.get(key, ())

    def has_webhook_secrets(self, namespaces: Iterable[str] = ()) -> bool:
        """Whether any GitRepo (in `namespaces`, or anywhere when empty) names its own spec.webhookSecret.

        Only then may a delivery that the route's secret does not authenticate be parsed at all (to
        find the repository whose GitRepo's secret might), so this must stay O(namespaces).
        """
        wanted = tuple(namespaces)
        if not wanted:
            return bool(self._with_secret)
        return any(self._with_secret.get(ns) for ns in wanted)

    def get(self, namespace: str, name: str) -> GitRepoInfo | None:
        """One GitRepo by namespace and name."""
        return self._by_ref.get((namespace, name))

    def upsert(self, info: GitRepoInfo) -> None:
        """Add or replace one GitRepo (a watch ADDED/MODIFIED event, or what a write returned).

        An object older than the one held (lower resourceVersion) is ignored: our own write may
        reach the index before the watch delivers the events that preceded it.
        """
        held = self._by_ref.get(info.ref)
        if held is not None and _older(info.resource_version, held.resource_version):
            return
        self._unlink(info.ref)
        key = self.key(info.repo) if info.repo else None  # memoized: every write's echo names the same URL
        self._by_ref[info.ref] = info
        self._count_secret(info, +1)
        self._key_of[info.ref] = key
        if key is not None:
            self._by_key[key] = (*self._by_key.get(key, ()), info)

    def holds(self, obj: Mapping[str, Any]) -> bool:
        """Whether the index already holds this very version of a GitRepo API object (same namespace,
        name and resourceVersion): the watch's echo of a write whose answer was applied already."""
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            return False
        namespace, name, version = meta.get("namespace"), meta.get("name"), meta.get("resourceVersion")
        if not (isinstance(namespace, str) and isinstance(name, str) and version):
            return False
        held = self._by_ref.get((namespace, name))
        return held is not None and held.resource_version == version

    def remove(self, namespace: str, name: str) -> None:
        """Forget one GitRepo (a watch DELETED event)."""
        self._unlink((namespace, name))  # also uncounts its webhookSecret
        self._by_ref.pop((namespace, name), None)
        self._key_of.pop((namespace, name), None)

    def replace_all(self, infos: Iterable[GitRepoInfo], keyer: Keyer | None = None) -> None:
        """Swap in a complete new content (after a full list, or when normalization settings change)."""
        if keyer is not None:
            self._keyer = keyer
            self._key_memo = {}
        by_ref: dict[tuple[str, str], GitRepoInfo] = {}
        grouped: dict[RepoKey, list[GitRepoInfo]] = {}
        key_of: dict[tuple[str, str], RepoKey | None] = {}
        for info in infos:
            key = self._keyer(info.repo) if info.repo else None
            by_ref[info.ref] = info
            key_of[info.ref] = key
            if key is not None:
                grouped.setdefault(key, []).append(info)
        self._by_ref, self._key_of = by_ref, key_of
        self._with_secret = {}
        for info in by_ref.values():
            self._count_secret(info, +1)
        self._by_key = {k: tuple(v) for k, v in grouped.items()}

    def replace_namespace(self, namespace: str, infos: Iterable[GitRepoInfo]) -> None:
        """Swap in a fresh list of one namespace (when several namespaces are watched separately)."""
        others = [i for i in self._by_ref.values() if i.namespace != namespace]
        self.replace_all([*others, *(i for i in infos if i.namespace == namespace)])

    def rekey(self, keyer: Keyer) -> None:
        """Re-index every GitRepo under new normalization settings."""
        self.replace_all(tuple(self._by_ref.values()), keyer)

    def _count_secret(self, info: GitRepoInfo, delta: int) -> None:
        if info.webhook_secret:
            count = self._with_secret.get(info.namespace, 0) + delta
            if count > 0:
                self._with_secret[info.namespace] = count
            else:
                self._with_secret.pop(info.namespace, None)

    def _unlink(self, ref: tuple[str, str]) -> None:
        held = self._by_ref.get(ref)
        if held is not None:
            self._count_secret(held, -1)
        old_key = self._key_of.get(ref)
        if old_key is None:
            return
        remaining = tuple(i for i in self._by_key.get(old_key, ()) if i.ref != ref)
        if remaining:
            self._by_key[old_key] = remaining
        else:
            self._by_key.pop(old_key, None)
