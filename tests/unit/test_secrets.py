"""Secret sources: Kubernetes data and mounted folders, rotation sets, caching, outages."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from controller.config import SecretSource
from controller.secrets import REFRESH_AHEAD_SHARE, SecretStore, SecretUnavailable, credential_sets


def test_current_and_previous_sets_in_order() -> None:
    data = {"github": b"new", "github.previous": b"old", "gitlab": b"gl"}
    assert credential_sets(data, ("github",), ".previous") == [{"github": b"new"}, {"github": b"old"}]
    assert credential_sets(data, ("gitlab",), ".previous") == [{"gitlab": b"gl"}]


def test_empty_values_and_half_azure_pairs_never_count() -> None:
    assert credential_sets({"github": b""}, ("github",), ".previous") == []
    keys = ("azure-username", "azure-password")
    assert credential_sets({"azure-username": b"u"}, keys, ".previous") == []
    assert credential_sets({"azure-username": b"u", "azure-password": b"p"}, keys, ".previous") == [
        {"azure-username": b"u", "azure-password": b"p"}
    ]
    assert credential_sets(None, ("github",), ".previous") == []


async def test_directory_source_reads_mounted_secret_files(tmp_path: Path) -> None:
    (tmp_path / "github").write_text("from-file\n")
    (tmp_path / "..data").mkdir()  # the volume's own bookkeeping is ignored
    store = SecretStore(_no_api, "ns", ttl=0)
    creds = await store.credentials(SecretSource(directory=str(tmp_path)), ("github",), ".previous")
    assert creds == [{"github": b"from-file"}]
    (tmp_path / "github.previous").write_text("older")
    creds = await store.credentials(SecretSource(directory=str(tmp_path)), ("github",), ".previous")
    assert creds == [{"github": b"from-file"}, {"github": b"older"}]


async def test_missing_directory_means_no_credentials(tmp_path: Path) -> None:
    store = SecretStore(_no_api, "ns", ttl=0)
    assert await store.credentials(SecretSource(directory=str(tmp_path / "absent")), ("github",), ".p") == []


async def _no_api(namespace: str, name: str) -> dict[str, bytes] | None:
    raise AssertionError("the API must not be called for a directory source")


async def test_kubernetes_source_is_cached_and_defaults_to_controller_namespace() -> None:
    calls: list[tuple[str, str]] = []

    async def read(namespace: str, name: str) -> dict[str, bytes] | None:
        calls.append((namespace, name))
        return {"gitlab": b"tok"}

    store = SecretStore(read, "cattle-fleet-system", ttl=60)
    source = SecretSource(name="gitjob-webhook")
    for _ in range(3):
        assert await store.credentials(source, ("gitlab",), ".previous") == [{"gitlab": b"tok"}]
    assert calls == [("cattle-fleet-system", "gitjob-webhook")]


async def test_outage_serves_last_known_value_or_fails_clearly() -> None:
    healthy = True

    async def read(namespace: str, name: str) -> dict[str, bytes] | None:
        if not healthy:
            raise ConnectionError("apiserver down")
        return {"github": b"s"}

    store = SecretStore(read, "ns", ttl=0)
    source = SecretSource(name="gitjob-webhook")
    assert await store.credentials(source, ("github",), ".p") == [{"github": b"s"}]
    healthy = False
    assert await store.credentials(source, ("github",), ".p") == [{"github": b"s"}]
    cold = SecretStore(read, "ns", ttl=0)
    with pytest.raises(SecretUnavailable, match="ns/gitjob-webhook"):
        await cold.credentials(source, ("github",), ".p")


async def test_missing_gitrepo_secret_is_none_not_empty() -> None:
    async def read(namespace: str, name: str) -> dict[str, bytes] | None:
        return None

    store = SecretStore(read, "ns", ttl=0)
    assert await store.gitrepo_credentials("team", "absent", ("github",), ".p") is None


async def test_rbac_refusal_is_named_not_hidden() -> None:
    from controller.kube import Forbidden

    async def read(namespace: str, name: str) -> dict[str, bytes] | None:
        raise Forbidden("403 Forbidden")

    store = SecretStore(read, "ns", ttl=0)
    with pytest.raises(SecretUnavailable, match="RBAC does not allow reading it"):
        await store.credentials(SecretSource(name="gitjob-webhook"), ("github",), ".p")


class _SlowApi:
    """A Secret reader whose answers the test releases one at a time; it counts the reads."""

    def __init__(self) -> None:
        self.reads = 0
        self.value = b"v1"
        self.release = asyncio.Event()
        self.fail: Exception | None = None

    async def read(self, namespace: str, name: str) -> dict[str, bytes] | None:
        self.reads += 1
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return {"github": self.value}


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_value_is_read_again_in_the_background_before_it_expires() -> None:
    """Past REFRESH_AHEAD_SHARE of the TTL, deliveries get the cached value at once while one read
    renews it; once it is in, they get the new value. No delivery waits for the API."""
    api = _SlowApi()
    api.release.set()
    ttl = 0.2
    store = SecretStore(api.read, "ns", ttl=ttl)
    source = SecretSource(name="gitjob-webhook")
    assert await store.credentials(source, ("github",), ".p") == [{"github": b"v1"}]
    assert api.reads == 1
    assert store.cached_credentials(source, ("github",), ".p") == [{"github": b"v1"}]
    assert api.reads == 1  # early in the TTL: nothing to renew
    await asyncio.sleep(ttl * (REFRESH_AHEAD_SHARE + 0.1))
    api.release.clear()
    api.value = b"v2"
    for _ in range(3):  # the held value at once, however slow the API; one background read for all
        assert store.cached_credentials(source, ("github",), ".p") == [{"github": b"v1"}]
        assert await asyncio.wait_for(store.credentials(source, ("github",), ".p"), 0.05) == [{"github": b"v1"}]
    await _settle()
    assert api.reads == 2
    api.release.set()
    await _settle()
    assert await store.credentials(source, ("github",), ".p") == [{"github": b"v2"}]
    assert api.reads == 2


async def test_a_value_nobody_asked_for_expires_and_is_read_by_the_next_delivery() -> None:
    api = _SlowApi()
    api.release.set()
    store = SecretStore(api.read, "ns", ttl=0.05)
    source = SecretSource(name="gitjob-webhook")
    await store.credentials(source, ("github",), ".p")
    await asyncio.sleep(0.08)
    assert store.cached_credentials(source, ("github",), ".p") is None
    api.value = b"v2"
    assert await store.credentials(source, ("github",), ".p") == [{"github": b"v2"}]
    assert api.reads == 2


async def test_a_background_read_refused_by_rbac_is_what_the_next_delivery_is_told() -> None:
    from controller.kube import Forbidden

    api = _SlowApi()
    api.release.set()
    ttl = 0.2
    store = SecretStore(api.read, "ns", ttl=ttl)
    source = SecretSource(name="gitjob-webhook")
    await store.credentials(source, ("github",), ".p")
    await asyncio.sleep(ttl * (REFRESH_AHEAD_SHARE + 0.1))
    api.fail = Forbidden("403")
    assert await store.credentials(source, ("github",), ".p") == [{"github": b"v1"}]  # starts the read
    await _settle()
    with pytest.raises(SecretUnavailable, match="RBAC does not allow reading it"):
        await store.credentials(source, ("github",), ".p")
