"""A background task that dies makes the pod unready (naming it) instead of leaving it quietly degraded."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from controller.app import make_app
from controller.supervisor import Supervisor
from tests.factories import receiver

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


async def crash() -> None:
    await asyncio.sleep(0)
    raise RuntimeError("inotify watch limit reached")


async def forever() -> None:
    await asyncio.Event().wait()


async def test_a_task_that_raises_is_recorded_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    supervisor = Supervisor()
    caplog.set_level(logging.ERROR, logger="fleet_webhook.serve")
    supervisor.start("config reloader", crash())
    supervisor.start("polling fallback", forever())
    await asyncio.sleep(0.05)
    assert supervisor.failures == ["config reloader stopped: RuntimeError: inotify watch limit reached"]
    assert [r.__dict__["task"] for r in caplog.records if r.getMessage() == "background task died"] == [
        "config reloader"
    ]
    await supervisor.stop()
    assert len(supervisor.failures) == 1  # the task cancelled by stop is not a failure


async def test_a_task_that_returns_early_is_a_failure_too() -> None:
    supervisor = Supervisor()

    async def done() -> None:
        return None

    supervisor.start("polling fallback", done())
    await asyncio.sleep(0.05)
    assert supervisor.failures == ["polling fallback ended"]
    await supervisor.stop()


async def test_readiness_fails_and_names_the_dead_task(aiohttp_client: ClientFactory) -> None:
    r = receiver()
    client = await aiohttp_client(make_app(r))
    assert (await client.get("/readyz")).status == 200
    r.background.start("config reloader", crash())
    await asyncio.sleep(0.05)
    ready = await client.get("/readyz")
    body = await ready.json()
    assert ready.status == 503
    assert body["status"] == "not ready"
    assert body["backgroundFailures"] == ["config reloader stopped: RuntimeError: inotify watch limit reached"]
    await r.background.stop()
