"""controller/heap.py: long-lived objects leave the collector's full passes once the index has synced."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from controller.heap import freeze_once_synced
from controller.index import GitRepoIndex


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


async def test_nothing_is_frozen_before_the_index_syncs_and_everything_after() -> None:
    index = GitRepoIndex()
    task = asyncio.create_task(freeze_once_synced(index, poll_seconds=0.01))
    await asyncio.sleep(0.05)
    assert not task.done()
    assert gc.get_freeze_count() == 0
    kept = [object() for _ in range(10)], {"a": [1]}  # alive when the index syncs: frozen with the rest
    index.synced = True
    await asyncio.wait_for(task, 1)
    frozen = gc.get_freeze_count()
    assert frozen > 10_000  # the imported modules and `kept`, out of every later pass
    assert kept


async def test_a_process_without_an_index_freezes_at_once() -> None:
    await asyncio.wait_for(freeze_once_synced(None), 1)
    assert gc.get_freeze_count() > 0
