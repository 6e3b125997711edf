"""Keeps the GitRepo index in step with the cluster: one watcher per watched namespace (or one for all).

Watchers are asyncio tasks (kube.GitRepoWatcher) that call back on the loop, so the index is only
ever changed by the loop and needs no lock. The index counts as synced once every watcher has
listed once; after an outage each watcher re-lists by itself and the index is replaced with the
fresh list.
"""

from __future__ import annotations

import asyncio
import functools
import logging

from controller.config import Config, WatchConfig
from controller.index import GitRepoIndex, GitRepoInfo, Keyer, gitrepo_info
from controller.kube import GitRepoWatcher, Kube, WatchEvent
from controller.normalize import repo_key

log = logging.getLogger("fleet_webhook.sync")


def keyer_for(watch: WatchConfig) -> Keyer:
    """The normalization function the config asks for."""
    aliases = dict(watch.ssh_host_aliases)
    return functools.partial(repo_key, case_sensitive_path=watch.case_sensitive_paths, ssh_host_aliases=aliases or None)


class IndexSync:
    """Owns the watchers feeding one GitRepoIndex."""

    def __init__(self, kube: Kube, index: GitRepoIndex) -> None:
        self.kube = kube
        self.index = index
        self._watchers: list[GitRepoWatcher] = []
        self._stopping: list[GitRepoWatcher] = []  # stopped, maybe still unwinding: `join` waits for them
        self._listed: set[str | None] = set()
        self._scope: frozenset[str] = frozenset()

    def start(self, watch: WatchConfig) -> None:
        """Start watching the namespaces `watch` names (all when empty); called on the loop."""
        self._scope = watch.namespaces
        self._listed.clear()
        self.index.synced = False
        namespaces: list[str | None] = [*sorted(watch.namespaces)] if watch.namespaces else [None]
        self._watchers = [
            GitRepoWatcher(self.kube, ns, self._on_list, self._on_event, self._on_error, convert=gitrepo_info)
            for ns in namespaces
        ]
        for watcher in self._watchers:
            watcher.start()
        log.info("watching gitrepos", extra={"namespaces": list(watch.namespaces) or ["*"]})

    def stop(self) -> None:
        """Stop every watcher: their tasks are cancelled and no callback of theirs runs after this.

        The tasks end within a turn or two of the loop; `join` waits for that (before the API client's
        connections are closed, so nothing is left pending when the loop ends).
        """
        for watcher in self._watchers:
            watcher.stop()
        self._stopping = [*(w for w in self._stopping if not w.done()), *self._watchers]
        self._watchers = []

    async def join(self, within: float = 5.0) -> None:
        """Wait for the watchers stopped so far to end (up to `within` seconds in all; never raises)."""
        stopping, self._stopping = self._stopping, []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        for watcher in stopping:
            await watcher.join(max(0.0, deadline - loop.time()))

    def on_config_change(self, old: Config, new: Config) -> None:
        """Restart watchers when the watched namespaces change; re-key when URL rules change."""
        if old.watch.namespaces != new.watch.namespaces:
            self.stop()
            self.index.replace_all([], keyer_for(new.watch))
            self.start(new.watch)
        elif (old.watch.case_sensitive_paths, old.watch.ssh_host_aliases) != (
            new.watch.case_sensitive_paths,
            new.watch.ssh_host_aliases,
        ):
            self.index.rekey(keyer_for(new.watch))

    def _on_list(self, namespace: str | None, items: list[GitRepoInfo | None]) -> None:
        infos = [i for i in items if i is not None]
        if namespace is None:
            self.index.replace_all(infos)
        else:
            self.index.replace_namespace(namespace, infos)
        self._listed.add(namespace)
        expected = set(self._scope) if self._scope else {None}
        if expected <= self._listed and not self.index.synced:
            self.index.synced = True
            log.info("gitrepo index synced", extra={"gitrepos": len(self.index)})
        self.index.watch_error = None

    def _on_event(self, event: WatchEvent) -> None:
        if event.type != "DELETED" and self.index.holds(event.obj):
            return  # the echo of our own write: its answer put this very version in the index already
        info = gitrepo_info(event.obj)
        if info is None:
            return
        if event.type == "DELETED":
            self.index.remove(info.namespace, info.name)
        else:
            self.index.upsert(info)

    def _on_error(self, message: str) -> None:
        self.index.watch_error = message
