"""The API pool warm-up loop (controller/api_pool.py) when the API server cannot be reached.

That it opens and reuses connections against a real API server: tests/integration/test_kube_connections.py.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from kubernetes import client

from controller.api_pool import keep_warm
from controller.kube import ApiHttp
from tools.served import free_port


async def test_keep_warm_survives_an_unreachable_api_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{free_port()}"
    http = ApiHttp(configuration, timeout=1.0)
    attempts: list[int] = []
    original = http.warm

    async def counted(connections: int) -> int:
        attempts.append(connections)
        return await original(connections)

    http.warm = counted  # type: ignore[method-assign]
    caplog.set_level(logging.WARNING, logger="fleet_webhook.api_pool")
    task = asyncio.create_task(keep_warm(http, 3, every=0.01))
    try:
        await asyncio.sleep(0.3)
        assert not task.done()  # a failed warm-up never ends the loop (serve would turn unready)
    finally:
        task.cancel()
        http.close()
    assert len(attempts) >= 3
    assert set(attempts) == {3}
    warnings = [r for r in caplog.records if r.name == "fleet_webhook.api_pool"]
    assert len(warnings) == 1, warnings  # once when it became unreachable, not once per attempt
    assert "unreachable" in warnings[0].getMessage()


async def test_keep_warm_keeps_going_when_warming_raises(caplog: pytest.LogCaptureFixture) -> None:
    """Something other than a connection error (an unreadable token file, say) is not fatal either."""
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{free_port()}"
    http = ApiHttp(configuration, timeout=1.0)
    calls = 0

    async def broken(connections: int) -> int:
        nonlocal calls
        calls += 1
        raise RuntimeError("token file unreadable")

    http.warm = broken  # type: ignore[method-assign]
    task = asyncio.create_task(keep_warm(http, 2, every=0.01))
    await asyncio.sleep(0.1)
    assert not task.done()
    task.cancel()
    assert calls >= 3
