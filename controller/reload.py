"""Hot reload of the config file: watch its folder, re-validate, swap atomically, keep the last good one.

The folder is watched rather than the file because a Kubernetes ConfigMap volume updates by
swapping a `..data` symlink: the file path never gets a write event of its own. Any change in the
folder triggers a re-read; identical content is ignored. A new file that does not validate is
reported (log line with every error, metric, `/readyz` detail) and the previous config keeps
serving until a good file appears.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import watchfiles

from controller.config import Config, ConfigError, ConfigProblem, load_file

log = logging.getLogger("fleet_webhook.reload")
# A file emptied while serving is almost always caught mid-write (truncated, then rewritten), not a wish
# to fall back to every default, which would silently drop route namespace and provider limits. On
# reload it is refused like an invalid file; `{}` still selects the defaults on purpose.
EMPTY_FILE_DIGEST = hashlib.sha256(b"").hexdigest()
FOLDER_CHECK_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class ReloadStatus:
    """What the readiness endpoint and metrics report about the config."""

    loaded_at: float
    digest: str
    last_error: str | None = None
    last_error_at: float | None = None


class ConfigHolder:
    """The live config snapshot. `current` is swapped whole; readers never see a partial config."""

    def __init__(self, config: Config, digest: str = "") -> None:
        self.current = config
        self.status = ReloadStatus(loaded_at=time.time(), digest=digest)
        self._listeners: list[Callable[[Config, Config], None]] = []

    def on_change(self, listener: Callable[[Config, Config], None]) -> None:
        """Call `listener(old, new)` on the loop after each successful swap."""
        self._listeners.append(listener)

    def swap(self, config: Config, digest: str) -> None:
        """Install a new validated config."""
        old, self.current = self.current, config
        self.status = ReloadStatus(loaded_at=time.time(), digest=digest)
        for listener in self._listeners:
            try:
                listener(old, config)
            except Exception:
                log.exception("config change listener failed")

    def reject(self, error: str) -> None:
        """Record that a newer file was refused (the current config stays)."""
        self.status = ReloadStatus(
            loaded_at=self.status.loaded_at, digest=self.status.digest, last_error=error, last_error_at=time.time()
        )


def file_digest(path: Path) -> str:
    """Content hash of the config file ("" when unreadable)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""


class ConfigReloader:
    """Watches the config file's folder and reloads on change."""

    def __init__(
        self,
        path: Path,
        holder: ConfigHolder,
        on_result: Callable[[bool], None] | None = None,
        debounce_ms: int = 100,
    ) -> None:
        self.path = path
        self.holder = holder
        self.on_result = on_result or (lambda _ok: None)
        self.debounce_ms = debounce_ms
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """End the watch loop."""
        self._stop.set()

    async def check_now(self) -> bool:
        """Reload if the file's content changed; True when a new config was installed."""
        digest = await asyncio.to_thread(file_digest, self.path)
        if digest and digest == self.holder.status.digest:
            if self.holder.status.last_error:
                # Back to the content that is serving: the problem is gone.
                self.holder.status = ReloadStatus(self.holder.status.loaded_at, digest)
                self.on_result(True)
            return False
        if not digest and self.holder.status.last_error and "cannot read" in self.holder.status.last_error:
            return False
        try:
            if digest == EMPTY_FILE_DIGEST:
                problem = "file is empty (mid-write?); write `{}` to select the defaults"
                raise ConfigError([ConfigProblem(str(self.path), None, "$", problem)])
            config = await asyncio.to_thread(load_file, self.path)
        except ConfigError as exc:
            message = str(exc)
            if message != self.holder.status.last_error:
                log.error(
                    "config rejected; previous config keeps serving",
                    extra={"config": str(self.path), "errors": [str(p) for p in exc.problems]},
                )
            self.holder.reject(message)
            self.on_result(False)
            return False
        self.holder.swap(config, digest)
        log.info("config reloaded", extra={"config": str(self.path), "summary": config.summary()})
        self.on_result(True)
        return True

    async def run(self) -> None:
        """Watch until stopped. Errors of the watcher itself are logged and the watch restarted.

        A watch is tied to the folder it started on: when that folder is deleted (and maybe made
        again, as `kubectl cp`, a Helm hook or an operator may do), its events stop for good. So a
        guard polls the folder's identity every FOLDER_CHECK_SECONDS and restarts the watch when it
        changes, and every (re)start re-reads the file first: new valid files are picked up and
        `/readyz` stops reporting a read error that is gone.
        """
        folder = self.path.parent
        while not self._stop.is_set():
            identity = _identity(folder)
            if identity is None:
                await self.check_now()  # reports the missing file once (same message is not repeated)
                await self._sleep(FOLDER_CHECK_SECONDS)
                continue
            await self.check_now()
            watch_stop = asyncio.Event()
            guard = asyncio.create_task(self._guard(folder, identity, watch_stop))
            try:
                async for changes in watchfiles.awatch(
                    folder,
                    stop_event=watch_stop,
                    debounce=self.debounce_ms,
                    step=50,
                    recursive=False,
                    force_polling=None,
                    ignore_permission_denied=True,
                ):
                    await self.check_now()
                    if any(change is watchfiles.Change.deleted and Path(p) == folder for change, p in changes):
                        break  # the folder itself is gone (a new one may reuse its inode number)
            except Exception:
                log.exception("config watcher failed; restarting in 1s", extra={"config": str(self.path)})
                await self._sleep(1.0)
            finally:
                guard.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await guard

    async def _guard(self, folder: Path, identity: tuple[int, int], watch_stop: asyncio.Event) -> None:
        """Stop the current watch when the reloader stops or the folder is no longer the one watched.

        One re-read a moment after the watch started covers a file written before it was armed.
        """
        await self._sleep(FOLDER_CHECK_SECONDS)
        if not self._stop.is_set() and _identity(folder) == identity:
            await self.check_now()
        while not self._stop.is_set() and _identity(folder) == identity:
            await self._sleep(FOLDER_CHECK_SECONDS)
        watch_stop.set()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)


def _identity(folder: Path) -> tuple[int, int] | None:
    """(device, inode) of the folder, or None when it does not exist."""
    try:
        info = folder.stat()
    except OSError:
        return None
    return (info.st_dev, info.st_ino)
