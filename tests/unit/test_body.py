"""Bodies in flight: one memory budget for all, larger bodies spooled, space given back on close."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
from pathlib import Path

import pytest

from controller.body import Body, BodyBudget, BodyEvicted, BudgetExhausted
from controller.providers.base import ONE_SHOT_MAX_BYTES, BodyMac, MacStream, Verdict


async def test_small_bodies_stay_in_memory_and_are_accounted_together() -> None:
    budget = BodyBudget(memory_bytes=100, spool_bytes=1000, spool_after=60)
    first, second = Body(budget), Body(budget)
    first.write(b"a" * 50)
    second.write(b"b" * 40)
    assert (budget.in_memory, budget.spooled) == (90, 0)
    second.write(b"b" * 15)  # 105 > 100 together: this body moves to the spool
    assert second.spooled
    assert not first.spooled
    assert (budget.in_memory, budget.spooled) == (50, 55)
    assert await second.read() == b"b" * 55
    first.close()
    second.close()
    assert (budget.in_memory, budget.spooled) == (0, 0)


async def test_a_large_body_is_spooled_and_read_back_whole() -> None:
    budget = BodyBudget(memory_bytes=1 << 20, spool_bytes=1 << 20, spool_after=1000)
    body = Body(budget)
    for _ in range(10):
        body.write(b"x" * 300)
    assert body.spooled
    assert budget.in_memory == 0
    assert await body.read() == b"x" * 3000
    descriptor = body.worker_descriptor()
    body.close()  # the worker's descriptor still names the body
    worker_view = await asyncio.to_thread(Path(f"/proc/{os.getpid()}/fd/{descriptor}").read_bytes)
    os.close(descriptor)
    assert worker_view == b"x" * 3000
    assert budget.spooled == 0


def test_nothing_left_is_a_503_kind_of_refusal_and_nothing_leaks() -> None:
    budget = BodyBudget(memory_bytes=10, spool_bytes=20, spool_after=5)
    body = Body(budget)
    body.write(b"12345")
    with pytest.raises(BudgetExhausted):
        body.write(b"x" * 30)
    body.close()
    assert (budget.in_memory, budget.spooled) == (0, 0)


def test_spool_zero_keeps_bodies_in_memory_within_the_budget() -> None:
    budget = BodyBudget(memory_bytes=100, spool_bytes=0, spool_after=10)
    body = Body(budget)
    body.write(b"x" * 80)  # larger than spool_after, but there is no spool: memory, within the budget
    assert not body.spooled
    with pytest.raises(BudgetExhausted):
        body.write(b"x" * 30)
    body.close()
    assert budget.in_memory == 0


def test_the_signature_is_computed_as_the_body_streams() -> None:
    secret, payload = b"s3cret", b'{"ref": "refs/heads/main"}' * 100
    claimed = hmac.new(secret, payload, hashlib.sha256).digest()
    budget = BodyBudget(memory_bytes=1 << 20, spool_bytes=0, spool_after=1 << 20)
    good = Body(budget, MacStream([BodyMac("sha256", (b"other", secret), (claimed,))]))
    bad = Body(budget, MacStream([BodyMac("sha256", (b"other",), (claimed,))]))
    for start in range(0, len(payload), 7):
        good.write(payload[start : start + 7])
        bad.write(payload[start : start + 7])
    assert good.macs is not None
    assert good.macs.verdict() is Verdict.OK
    assert bad.macs is not None
    assert bad.macs.verdict() is Verdict.MISMATCH


def test_unverified_bodies_hold_only_their_share_and_verified_ones_the_rest() -> None:
    budget = BodyBudget(memory_bytes=100, spool_bytes=0, spool_after=100, unverified_share=0.5)
    stranger = Body(budget)
    stranger.write(b"s" * 50)
    with pytest.raises(BudgetExhausted):  # the unverified half is full and no other body can give room
        stranger.write(b"s")
    trusted = Body(budget, verified=True)  # authenticated by its headers (a token): the whole budget
    trusted.write(b"t" * 50)
    assert (budget.in_memory, budget.unverified_memory) == (100, 50)
    stranger.verified()
    assert (budget.in_memory, budget.unverified_memory) == (100, 0)
    stranger.close()
    trusted.close()
    assert (budget.in_memory, budget.unverified_memory, budget.arriving) == (0, 0, {})


def test_a_body_with_no_room_evicts_the_oldest_body_of_the_heaviest_sender() -> None:
    budget = BodyBudget(memory_bytes=100, spool_bytes=0, spool_after=100)
    evicted: list[str] = []
    light = Body(budget, sender="git-host", on_evict=lambda: evicted.append("light"))
    light.write(b"l" * 10)
    heavy_old = Body(budget, sender="attacker", on_evict=lambda: evicted.append("heavy-old"))
    heavy_old.write(b"a" * 40)
    heavy_new = Body(budget, sender="attacker", on_evict=lambda: evicted.append("heavy-new"))
    heavy_new.write(b"a" * 40)
    push = Body(budget, sender="git-host")
    push.write(b"p" * 30)  # 120 > 100: the attacker (80 bytes held) loses its oldest body, not the host
    assert evicted == ["heavy-old"]
    assert (budget.in_memory, budget.evictions) == (80, 1)
    with pytest.raises(BodyEvicted):
        heavy_old.write(b"a")
    for body in (light, heavy_old, heavy_new, push):
        body.close()
    assert (budget.in_memory, budget.unverified_memory, budget.arriving) == (0, 0, {})


def test_a_body_that_has_arrived_is_never_evicted() -> None:
    budget = BodyBudget(memory_bytes=100, spool_bytes=0, spool_after=100)
    decided = Body(budget, sender="attacker")
    decided.write(b"d" * 90)
    decided.arrived()  # being authenticated and answered now
    newcomer = Body(budget, sender="git-host")
    with pytest.raises(BudgetExhausted) as refused:
        newcomer.write(b"n" * 20)
    assert not isinstance(refused.value, BodyEvicted)
    assert not decided.evicted
    assert decided.in_memory_bytes() == b"d" * 90
    decided.close()
    newcomer.close()


def test_eviction_is_the_last_resort_a_body_that_fits_the_spool_moves_there() -> None:
    budget = BodyBudget(memory_bytes=100, spool_bytes=1000, spool_after=100)
    parked = Body(budget, sender="attacker")
    parked.write(b"a" * 90)
    arriving = Body(budget, sender="git-host")
    arriving.write(b"b" * 20)
    assert arriving.spooled
    assert not parked.evicted
    parked.close()
    arriving.close()
    assert (budget.in_memory, budget.spooled, budget.unverified_spooled) == (0, 0, 0)


def test_a_spooled_body_evicts_spooled_strangers_when_the_spool_is_full() -> None:
    budget = BodyBudget(memory_bytes=10, spool_bytes=100, spool_after=5, unverified_share=0.5)
    parked = Body(budget, sender="attacker")
    parked.write(b"a" * 50)  # the whole unverified half of the spool
    assert parked.spooled
    signed_large = Body(budget, sender="git-host")
    signed_large.write(b"s" * 30)
    assert parked.evicted
    assert (budget.spooled, budget.unverified_spooled) == (30, 30)
    signed_large.close()
    parked.close()
    assert (budget.spooled, budget.unverified_spooled) == (0, 0)


@pytest.mark.parametrize(
    "chunks",
    [
        [b"one small body"],
        [b"one ", b"small ", b"body"],
        [b"x" * (ONE_SHOT_MAX_BYTES + 1)],
        [b"x" * 10, b"y" * (ONE_SHOT_MAX_BYTES + 1), b"z"],
        [],
    ],
    ids=["one-chunk", "several", "big-first", "small-then-big", "empty"],
)
def test_mac_stream_gives_one_verdict_however_the_body_is_cut(chunks: list[bytes]) -> None:
    """One chunk is a one-shot HMAC; more (or a big first one) stream: same verdict, prefix included."""
    secret, prefix = b"s3cret", b"v0:"
    whole = b"".join(chunks)
    claimed = hmac.new(secret, prefix + whole, hashlib.sha256).digest()
    for secrets, expected in (((b"other", secret), Verdict.OK), ((b"other",), Verdict.MISMATCH)):
        stream = MacStream([BodyMac("sha256", secrets, (claimed,), prefix)])
        for chunk in chunks:
            stream.update(chunk)
        assert stream.verdict() is expected
