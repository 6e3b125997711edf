"""GitRepoIndex.key remembers payload URLs' keys: same answers, re-keyed with the settings, bounded."""

from __future__ import annotations

import pytest

from controller import index as index_module
from controller.index import GitRepoIndex
from controller.normalize import RepoKey, repo_key

URL = "https://github.com/Example-Org/Fleet-Apps.git"


def counting_keyer(calls: list[str], *, case_sensitive: bool = False) -> index_module.Keyer:
    def keyer(url: str) -> RepoKey | None:
        calls.append(url)
        return repo_key(url, case_sensitive_path=case_sensitive)

    return keyer


def test_key_is_computed_once_per_url_and_matches_the_normalizer() -> None:
    calls: list[str] = []
    index = GitRepoIndex(counting_keyer(calls))
    assert index.key(URL) == repo_key(URL)
    assert index.key(URL) == repo_key(URL)
    assert index.key("not a url") is None
    assert index.key("not a url") is None
    assert calls == [URL, "not a url"]


def test_new_normalization_settings_forget_remembered_keys() -> None:
    calls: list[str] = []
    index = GitRepoIndex(counting_keyer(calls))
    assert index.key(URL) == RepoKey("github.com", "example-org/fleet-apps")
    index.rekey(counting_keyer(calls, case_sensitive=True))
    assert index.key(URL) == RepoKey("github.com", "Example-Org/Fleet-Apps")
    assert calls == [URL, URL]


def test_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_module, "KEY_MEMO_SIZE", 3)
    calls: list[str] = []
    index = GitRepoIndex(counting_keyer(calls))
    urls = [f"https://github.com/org/repo-{i}" for i in range(10)]
    for url in urls:
        assert index.key(url) == repo_key(url)
    assert index.key(urls[-1]) == repo_key(urls[-1])
    assert calls == urls  # the latest URL is still remembered ...
    assert index.key(urls[0]) == repo_key(urls[0])
    assert calls == [*urls, urls[0]]  # ... the first was forgotten: at most KEY_MEMO_SIZE are kept


def test_upserts_of_one_gitrepo_key_its_url_once() -> None:
    """Every write's answer and watch echo upserts the same spec.repo: normalized once."""
    from controller.index import gitrepo_info

    calls: list[str] = []
    index = GitRepoIndex(counting_keyer(calls))
    for version in range(1, 4):
        obj = {"metadata": {"namespace": "ns", "name": "a", "resourceVersion": str(version)}, "spec": {"repo": URL}}
        info = gitrepo_info(obj)
        assert info is not None
        index.upsert(info)
    assert calls == [URL]
    assert [i.name for i in index.lookup(repo_key(URL) or RepoKey("", ""))] == ["a"]


def test_holds_tells_the_echo_of_a_version_already_held() -> None:
    from controller.index import gitrepo_info

    obj = {"metadata": {"namespace": "ns", "name": "a", "resourceVersion": "7"}, "spec": {"repo": URL}}
    index = GitRepoIndex()
    assert not index.holds(obj)
    info = gitrepo_info(obj)
    assert info is not None
    index.upsert(info)
    assert index.holds(obj)
    assert not index.holds({"metadata": {"namespace": "ns", "name": "a", "resourceVersion": "8"}})
    assert not index.holds({"metadata": {"namespace": "ns", "name": "b", "resourceVersion": "7"}})
    assert not index.holds({"metadata": {"namespace": "ns", "name": "a"}})
    assert not index.holds({"metadata": "not an object"})


def test_the_watch_echo_of_a_held_version_is_not_converted_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """IndexSync skips an event for a version the index holds (its write's answer was applied)."""
    from controller import sync as sync_module
    from controller.index import gitrepo_info
    from controller.kube import Kube, WatchEvent

    converted: list[str] = []

    def counting_info(obj: dict[str, object]) -> object:
        converted.append(str(obj["metadata"]))
        return gitrepo_info(obj)

    monkeypatch.setattr(sync_module, "gitrepo_info", counting_info)
    index = GitRepoIndex()
    written = {"metadata": {"namespace": "ns", "name": "a", "resourceVersion": "7"}, "spec": {"repo": URL}}
    info = gitrepo_info(written)
    assert info is not None
    index.upsert(info)  # what the write's answer did
    sync = sync_module.IndexSync(Kube.__new__(Kube), index)
    sync._on_event(WatchEvent("MODIFIED", written))
    assert converted == []
    assert index.get("ns", "a") is info
    newer = {"metadata": {"namespace": "ns", "name": "a", "resourceVersion": "8"}, "spec": {"repo": URL}}
    sync._on_event(WatchEvent("MODIFIED", newer))
    assert len(converted) == 1
    held = index.get("ns", "a")
    assert held is not None
    assert held.resource_version == "8"
    sync._on_event(WatchEvent("DELETED", newer))
    assert index.get("ns", "a") is None
