"""The large-body parse worker: every reply reaches the delivery that asked for it.

These run the real worker process (`python -m controller.parse_worker`); stopping it with SIGSTOP
makes "a delivery times out while the worker still holds its request" happen on purpose.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from controller import providers as registry
from controller.body import Body, BodyBudget
from controller.deliveries import PushEvent
from controller.parsing import Parsers
from controller.providers.base import WebhookRequest
from tests.support import delivery, sha

URL = "https://github.com/example-org/worker"


def spooled(budget: BodyBudget, body: bytes) -> Body:
    held = Body(budget)
    held.write(body)
    assert held.spooled
    return held


def head(headers: dict[str, str]) -> WebhookRequest:
    return WebhookRequest("POST", {k.lower(): v for k, v in headers.items()}, b"")


def commits(events: tuple[object, ...]) -> list[str]:
    return [e.commit for e in events if isinstance(e, PushEvent)]


async def test_a_delivery_that_timed_out_mid_parse_never_answers_the_next_one() -> None:
    parsers = Parsers()
    budget = BodyBudget(memory_bytes=1 << 20, spool_bytes=64 << 20, spool_after=16)
    github = registry.by_name("github")
    first = delivery("github", https_url=URL, commit=sha("first"), secret=None)
    second = delivery("github", https_url=URL, commit=sha("second"), secret=None)
    try:
        await parsers.start()
        worker = parsers.worker_pid()
        assert worker is not None
        os.kill(worker, signal.SIGSTOP)  # the worker takes the request and does not answer in time
        body = spooled(budget, first.body)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await parsers.authenticated(github, head(first.headers), body)
        os.kill(worker, signal.SIGCONT)
        await asyncio.sleep(0.5)  # the worker answers the first request; nobody reads that answer
        late = spooled(budget, second.body)
        body.close()  # the first delivery was answered 503 and its file closed, as the pipeline does
        async with asyncio.timeout(30):
            events = await parsers.authenticated(github, head(second.headers), late)
        late.close()
        assert commits(events) == [sha("second")]
    finally:
        await parsers.close()


async def test_the_worker_reads_the_file_it_was_handed_even_after_the_delivery_closed_it() -> None:
    """The hand-off is a descriptor of its own, not a number another body's file may take."""
    parsers = Parsers()
    budget = BodyBudget(memory_bytes=1 << 20, spool_bytes=64 << 20, spool_after=16)
    github = registry.by_name("github")
    first = delivery("github", https_url=URL, commit=sha("held"), secret=None)
    other = delivery("github", https_url=URL, commit=sha("intruder"), secret=None)
    try:
        await parsers.start()
        worker = parsers.worker_pid()
        assert worker is not None
        os.kill(worker, signal.SIGSTOP)
        body = spooled(budget, first.body)
        task = asyncio.create_task(parsers.authenticated(github, head(first.headers), body))
        await asyncio.sleep(0.2)  # the request is in the pipe, the worker has not opened the file yet
        body.close()
        intruder = spooled(budget, other.body)  # takes the lowest free descriptor number: the old one
        os.kill(worker, signal.SIGCONT)
        async with asyncio.timeout(30):
            events = await task
        intruder.close()
        assert commits(events) == [sha("held")]
    finally:
        await parsers.close()


def open_descriptors() -> int:
    return len(os.listdir(f"/proc/{os.getpid()}/fd"))


def deleted_file_descriptors() -> set[str]:
    """Descriptors of this process open on unlinked files: spooled bodies and their duplicates."""
    out = set()
    for fd in os.listdir(f"/proc/{os.getpid()}/fd"):
        try:
            target = os.readlink(f"/proc/{os.getpid()}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.endswith("(deleted)"):
            out.add(f"{fd} -> {target}")
    return out


async def test_a_worker_killed_mid_parse_is_replaced_and_no_descriptor_leaks() -> None:
    parsers = Parsers()
    budget = BodyBudget(memory_bytes=1 << 20, spool_bytes=64 << 20, spool_after=16)
    github = registry.by_name("github")
    push = delivery("github", https_url=URL, commit=sha("survivor"), secret=None)
    try:
        await parsers.start()
        before, spooled_before = open_descriptors(), deleted_file_descriptors()
        worker = parsers.worker_pid()
        assert worker is not None
        os.kill(worker, signal.SIGSTOP)
        body = spooled(budget, push.body)
        task = asyncio.create_task(parsers.authenticated(github, head(push.headers), body))
        await asyncio.sleep(0.2)
        os.kill(worker, signal.SIGKILL)  # killed for memory, say, while it held the request
        async with asyncio.timeout(30):
            events = await task
        body.close()
        assert commits(events) == [sha("survivor")]
        assert parsers.worker_pid() not in (None, worker)
        assert deleted_file_descriptors() <= spooled_before  # neither the body nor its worker copy
        # At most as many as before (the garbage collector may close an earlier test's leftovers meanwhile).
        assert open_descriptors() <= before
    finally:
        await parsers.close()
