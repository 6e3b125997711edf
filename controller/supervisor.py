"""The background tasks `serve` depends on (the config reloader, the polling fallback), supervised.

A task that ends while the process is meant to be running (an exception, or returning) is logged
as an error and recorded, and /readyz then answers 503 naming it (`backgroundFailures`): a dead
reloader would otherwise leave a pod serving an old config forever while reporting ready, and a
dead fallback loop would leave GitRepos on an hour of polling after their webhooks stopped. Being
unready gets the pod replaced by its Deployment instead of dying quietly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("fleet_webhook.serve")


class Supervisor:
    """Starts named tasks, records the ones that die, cancels the rest on `stop`."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopping = False

    def start(self, name: str, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run `coroutine` as the task `name` until `stop`."""
        task = asyncio.create_task(coroutine, name=name)
        task.add_done_callback(self._ended)
        self._tasks.append(task)
        return task

    def _ended(self, task: asyncio.Task[Any]) -> None:
        if self._stopping or task.cancelled():
            return
        error = task.exception()
        reason = f"{task.get_name()} stopped: {type(error).__name__}: {error}" if error else f"{task.get_name()} ended"
        self.failures.append(reason)
        log.error("background task died", extra={"task": task.get_name(), "error": reason}, exc_info=error)

    async def stop(self) -> None:
        """Cancel every task still running and wait for them (their failures are no longer news)."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
