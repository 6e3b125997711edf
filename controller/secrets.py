"""Reading webhook secrets from Kubernetes Secrets or mounted folders, with a short cache.

A provider's credentials are the values under its keys (`github`, or `azure-username` +
`azure-password`) and, during a rotation, under the same keys plus the configured suffix
(`github.previous`). Both sets verify until the suffixed key is removed, so a secret can be rotated
without downtime: add the new value as `<key>`, move the old one to `<key>.previous`, update the
provider, then delete `<key>.previous`.

Values never leave this module except as bytes handed to a provider's verify().
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from controller.config import SecretSource, default_config
from controller.kube import Forbidden
from controller.providers.base import Credential

SecretReader = Callable[[str, str], Awaitable[dict[str, bytes] | None]]
MAX_SECRET_FILE_BYTES = 64 * 1024


# A failed read is answered from the cache for this long (at most `ttl`), so that strangers cannot
# make the receiver ask an unreachable or refusing API server once per request.
FAILED_READ_RETRY_SECONDS = 2.0


# A cached value is read again in the background once this share of `secrets.cacheSeconds` has passed.
REFRESH_AHEAD_SHARE = 0.6


class SecretUnavailable(Exception):
    """The secret could not be read: the API is down (503, retry) or RBAC refuses it (`refused`)."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


@dataclass(frozen=True, slots=True)
class _FailedRead:
    """A cached failure: the same SecretUnavailable is raised until the entry expires."""

    message: str
    refused: bool

    def error(self) -> SecretUnavailable:
        return SecretUnavailable(self.message, refused=self.refused)


# ("dir", folder, "") or ("k8s", namespace, name) -> (expires at, value or failure)
_CacheKey = tuple[str, str, str]
_Entry = tuple[float, dict[str, bytes] | _FailedRead | None]


def _usable(value: bytes | None) -> bool:
    """A value only of spaces or newlines is a mistake (an editor, `echo`), not a one-byte key."""
    return bool(value and value.strip())


def credential_sets(data: dict[str, bytes] | None, keys: Sequence[str], suffix: str) -> list[Credential]:
    """Current and previous credential sets found in a secret's data; empty and blank values are ignored."""
    if not data:
        return []
    sets: list[Credential] = []
    for variant in ("", suffix):
        found = {key: data[key + variant] for key in keys if _usable(data.get(key + variant))}
        if len(found) == len(keys):
            sets.append(found)
    return sets


def _read_directory(directory: str) -> dict[str, bytes] | None:
    """Every small regular file of a folder (a mounted Secret), keyed by file name."""
    folder = Path(directory)
    if not folder.is_dir():
        return None
    data: dict[str, bytes] = {}
    for entry in folder.iterdir():
        if entry.name.startswith(".."):  # the ConfigMap/Secret volume's own bookkeeping
            continue
        try:
            if entry.is_file() and entry.stat().st_size <= MAX_SECRET_FILE_BYTES:
                data[entry.name] = entry.read_bytes().rstrip(b"\r\n")
        except OSError:
            continue
    return data


class SecretStore:
    """Cached access to secret sources; a cache entry lives `ttl` seconds."""

    def __init__(self, reader: SecretReader, controller_namespace: str, ttl: float | None = None) -> None:
        self._reader = reader
        self._namespace = controller_namespace
        self.ttl = default_config().secrets.cache_seconds if ttl is None else ttl  # the schema's default
        # Not a cachetools.TTLCache: an expired entry is still the answer while the API is unreachable.
        # Entries: (expires at, value); a refusal by RBAC is cached like a value, an unreachable API
        # for FAILED_READ_RETRY_SECONDS.
        self._cache: dict[_CacheKey, _Entry] = {}
        self._refreshing: dict[_CacheKey, asyncio.Task[None]] = {}  # background reads (`_refresh_ahead`)
        self._sets: dict[tuple[int, tuple[str, ...], str], tuple[dict[str, bytes] | None, list[Credential]]] = {}

    def namespace_of(self, source: SecretSource) -> str:
        """The namespace a Kubernetes secret source refers to."""
        return source.namespace or self._namespace

    async def data(self, source: SecretSource) -> dict[str, bytes] | None:
        """The source's key->value data; None when the Secret or folder does not exist.

        Raises SecretUnavailable when it cannot be read (refused: RBAC does not allow it).
        """
        cache_key = self._cache_key(source)
        hit = self._cache.get(cache_key)
        now = time.monotonic()
        if hit is not None and now < hit[0]:
            if isinstance(hit[1], _FailedRead):
                raise hit[1].error()
            self._refresh_ahead(cache_key, source, hit, now)
            return hit[1]
        return await self._read(cache_key, source, hit)

    def _refresh_ahead(self, cache_key: _CacheKey, source: SecretSource, hit: _Entry, now: float) -> None:
        """Read a value again in the background once REFRESH_AHEAD_SHARE of its time has passed.

        While deliveries keep coming, the cache is renewed before it expires, so no delivery waits
        for the API (with the 5 s default, one in every 5 s did: a few milliseconds in the p99).
        One read at a time per source: however many deliveries ask, the API is asked as often as
        before. After an idle spell the value expires and the next delivery reads it, as it always did.
        """
        if cache_key in self._refreshing or now < hit[0] - self.ttl * (1 - REFRESH_AHEAD_SHARE):
            return
        task = asyncio.get_running_loop().create_task(self._refresh(cache_key, source, hit))
        self._refreshing[cache_key] = task
        task.add_done_callback(lambda _task: self._refreshing.pop(cache_key, None))

    async def _refresh(self, cache_key: _CacheKey, source: SecretSource, hit: _Entry) -> None:
        with contextlib.suppress(SecretUnavailable):  # stored as a failed read: the next delivery is told
            await self._read(cache_key, source, hit)

    async def _read(self, cache_key: _CacheKey, source: SecretSource, hit: _Entry | None) -> dict[str, bytes] | None:
        """Ask the API (or the folder) and cache what it says: a value, an absence, a refusal, a failure."""
        now = time.monotonic()
        retry_at = now + min(self.ttl, FAILED_READ_RETRY_SECONDS)
        try:
            if source.is_directory:
                value = await asyncio.to_thread(_read_directory, source.directory)
            else:
                value = await self._reader(self.namespace_of(source), source.name)
        except Forbidden:
            where = f"secret {self.namespace_of(source)}/{source.name}"
            failed = _FailedRead(f"{where}: the controller's RBAC does not allow reading it", refused=True)
            self._store(cache_key, now + self.ttl, failed)
            raise failed.error() from None
        except Exception as exc:
            if hit is not None and not isinstance(hit[1], _FailedRead):
                self._store(cache_key, retry_at, hit[1])  # the last known value while the API is unreachable
                return hit[1]
            where = source.describe() if source.is_directory else f"secret {self.namespace_of(source)}/{source.name}"
            failed = _FailedRead(f"{where}: {type(exc).__name__}", refused=False)
            self._store(cache_key, retry_at, failed)
            raise failed.error() from None
        self._store(cache_key, now + self.ttl, value)
        return value

    def _store(self, key: _CacheKey, expires: float, value: dict[str, bytes] | _FailedRead | None) -> None:
        if len(self._cache) >= 10_000 and key not in self._cache:
            self._cache.clear()
        self._cache[key] = (expires, value)

    async def credentials(self, source: SecretSource, keys: Sequence[str], suffix: str) -> list[Credential]:
        """Credential sets (current, then previous) for a provider's keys from one source.

        Memoized per secret data object: every delivery asks, and the data only changes on a re-read.
        """
        data = await self.data(source)
        memo_key = (id(data), tuple(keys), suffix)
        held = self._sets.get(memo_key)
        if held is not None and held[0] is data:
            return held[1]
        sets = credential_sets(data, keys, suffix)
        if len(self._sets) > 1_000:
            self._sets.clear()
        self._sets[memo_key] = (data, sets)
        return sets

    def cached_credentials(self, source: SecretSource, keys: Sequence[str], suffix: str) -> list[Credential] | None:
        """`credentials` without waiting, when the source's data is cached and fresh; else None.

        Every delivery asks for its route's credentials: on a hit this costs two dict lookups and
        no coroutine, which matters most for the deliveries refused on their headers.
        """
        cache_key = self._cache_key(source)
        hit = self._cache.get(cache_key)
        now = time.monotonic()
        if hit is None or now >= hit[0] or isinstance(hit[1], _FailedRead):
            return None
        held = self._sets.get((id(hit[1]), tuple(keys), suffix))
        if held is None or held[0] is not hit[1]:
            return None
        self._refresh_ahead(cache_key, source, hit, now)
        return held[1]

    def _cache_key(self, source: SecretSource) -> _CacheKey:
        if source.is_directory:
            return ("dir", source.directory, "")
        return ("k8s", self.namespace_of(source), source.name)

    async def blank_keys(self, source: SecretSource, keys: Sequence[str]) -> list[str]:
        """Which of `keys` the source holds with a blank value (to say so in the 401, never the value)."""
        data = await self.data(source) or {}
        return [key for key in keys if key in data and not _usable(data[key])]

    async def gitrepo_credentials(
        self, namespace: str, name: str, keys: Sequence[str], suffix: str
    ) -> list[Credential] | None:
        """Credentials from a GitRepo's spec.webhookSecret; None when that Secret is missing."""
        data = await self.data(SecretSource(name=name, namespace=namespace))
        if data is None:
            return None
        return credential_sets(data, keys, suffix)
