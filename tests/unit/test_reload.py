"""Hot reload: good changes go live fast, bad ones never replace the good config, ConfigMap swaps count."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from controller.config import load_file
from controller.reload import ConfigHolder, ConfigReloader, file_digest

GOOD_1 = "polling:\n  webhookInterval: 1h\n"
GOOD_2 = "polling:\n  webhookInterval: 30m\n"
BAD = "polling:\n  webhookInterval: soon\n"


async def eventually(check: Callable[[], bool], within: float = 2.0) -> float:
    """Seconds until `check()` held; fails the test after `within` seconds."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > within:
            pytest.fail(f"condition not met within {within}s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


class Running:
    def __init__(self, path: Path) -> None:
        self.results: list[bool] = []
        self.holder = ConfigHolder(load_file(path), file_digest(path))
        self.reloader = ConfigReloader(path, self.holder, self.results.append, debounce_ms=50)


@pytest.fixture
async def plain_file(tmp_path: Path) -> AsyncIterator[tuple[Path, Running]]:
    path = tmp_path / "config.yaml"
    path.write_text(GOOD_1)
    running = Running(path)
    task = asyncio.create_task(running.reloader.run())
    await asyncio.sleep(0.3)  # let the watcher start
    yield path, running
    running.reloader.stop()
    await asyncio.wait_for(task, 5)


async def test_valid_change_is_live_within_two_seconds(plain_file: tuple[Path, Running]) -> None:
    path, running = plain_file
    assert running.holder.current.polling.webhook_interval == "1h"
    path.write_text(GOOD_2)
    took = await eventually(lambda: running.holder.current.polling.webhook_interval == "30m")
    assert took < 2.0
    assert running.results == [True]


async def test_invalid_change_keeps_old_config_then_fix_is_picked_up(plain_file: tuple[Path, Running]) -> None:
    path, running = plain_file
    path.write_text(BAD)
    await eventually(lambda: running.holder.status.last_error is not None)
    assert running.holder.current.polling.webhook_interval == "1h"
    assert "$.polling.webhookInterval" in (running.holder.status.last_error or "")
    assert running.results == [False]
    path.write_text(GOOD_2)
    await eventually(lambda: running.holder.current.polling.webhook_interval == "30m")
    assert running.holder.status.last_error is None
    assert running.results == [False, True]


async def test_deleted_file_keeps_serving_and_recreation_is_picked_up(plain_file: tuple[Path, Running]) -> None:
    path, running = plain_file
    path.unlink()
    await eventually(lambda: running.holder.status.last_error is not None)
    assert "cannot read file" in (running.holder.status.last_error or "")
    assert running.holder.current.polling.webhook_interval == "1h"
    path.write_text(GOOD_2)
    await eventually(lambda: running.holder.current.polling.webhook_interval == "30m")


async def test_same_content_rewritten_is_not_a_reload(plain_file: tuple[Path, Running]) -> None:
    path, running = plain_file
    before = running.holder.current
    path.write_text(GOOD_1)
    await asyncio.sleep(0.5)
    assert running.holder.current is before
    assert running.results == []


def configmap_volume(root: Path, content: str, generation: int) -> None:
    """Lay out files exactly as the kubelet does for a ConfigMap volume, swapping `..data` atomically."""
    data_dir = root / f"..2026_11_25_00_00_0{generation}.000000000"
    data_dir.mkdir()
    (data_dir / "config.yaml").write_text(content)
    tmp_link = root / "..data_tmp"
    tmp_link.symlink_to(data_dir.name)
    os.replace(tmp_link, root / "..data")
    user_link = root / "config.yaml"
    if not user_link.is_symlink():
        user_link.symlink_to("..data/config.yaml")


async def test_configmap_symlink_swap_is_detected(tmp_path: Path) -> None:
    configmap_volume(tmp_path, GOOD_1, 1)
    path = tmp_path / "config.yaml"
    running = Running(path)
    task = asyncio.create_task(running.reloader.run())
    await asyncio.sleep(0.3)
    try:
        configmap_volume(tmp_path, GOOD_2, 2)
        await eventually(lambda: running.holder.current.polling.webhook_interval == "30m")
        configmap_volume(tmp_path, BAD, 3)
        await eventually(lambda: running.holder.status.last_error is not None)
        assert running.holder.current.polling.webhook_interval == "30m"
    finally:
        running.reloader.stop()
        await asyncio.wait_for(task, 5)


async def test_listeners_see_old_and_new(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(GOOD_1)
    running = Running(path)
    seen: list[tuple[str, str]] = []
    running.holder.on_change(lambda old, new: seen.append((old.polling.webhook_interval, new.polling.webhook_interval)))
    path.write_text(GOOD_2)
    assert await running.reloader.check_now() is True
    assert seen == [("1h", "30m")]


async def test_folder_deleted_and_recreated_keeps_reloading(tmp_path: Path) -> None:
    """Regression: the watch died with its folder, so files in a recreated folder were never read."""
    folder = tmp_path / "conf"
    folder.mkdir()
    path = folder / "config.yaml"
    path.write_text(GOOD_1)
    running = Running(path)
    task = asyncio.create_task(running.reloader.run())
    try:
        await asyncio.sleep(0.3)
        path.unlink()
        folder.rmdir()
        await eventually(lambda: bool(running.holder.status.last_error), within=3.0)
        assert running.holder.current.polling.webhook_interval == "1h"  # the last good config keeps serving
        folder.mkdir()
        path.write_text(GOOD_2)
        await eventually(lambda: running.holder.current.polling.webhook_interval == "30m", within=4.0)
        assert running.holder.status.last_error is None  # /readyz no longer reports the read error
        path.write_text(GOOD_1)  # and the new folder is watched, not just read once
        await eventually(lambda: running.holder.current.polling.webhook_interval == "1h", within=3.0)
    finally:
        running.reloader.stop()
        await asyncio.wait_for(task, 5)
