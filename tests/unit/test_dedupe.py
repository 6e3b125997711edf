"""The delivery-id cache: a redelivery within the TTL gets the first answer, nothing older or evicted does."""

from __future__ import annotations

from controller.dedupe import CachedAnswer, DeliveryCache

ANSWER = CachedAnswer(200, b'{"updated": []}')


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_answer_is_replayed_within_the_ttl_and_forgotten_after() -> None:
    clock = Clock()
    cache = DeliveryCache(60, 10, timer=clock)
    cache.put("github", "d-1", ANSWER)
    clock.now += 59
    assert cache.get("github", "d-1") == ANSWER
    assert cache.get("gitlab", "d-1") is None  # ids are per provider
    clock.now += 2
    assert cache.get("github", "d-1") is None
    assert len(cache) == 0


def test_when_full_the_oldest_goes_first() -> None:
    cache = DeliveryCache(60, 3, timer=Clock())
    for i in range(5):
        cache.put("github", f"d-{i}", CachedAnswer(200, str(i).encode()))
    assert [cache.get("github", f"d-{i}") is not None for i in range(5)] == [False, False, True, True, True]


def test_no_id_or_a_zero_ttl_remembers_nothing() -> None:
    cache = DeliveryCache(0, 10, timer=Clock())
    cache.put("github", "d-1", ANSWER)
    assert cache.get("github", "d-1") is None
    cache = DeliveryCache(60, 10, timer=Clock())
    cache.put("github", None, ANSWER)
    assert len(cache) == 0


def test_a_reload_keeps_the_newest_entries_the_new_limits_allow() -> None:
    clock = Clock()
    cache = DeliveryCache(60, 10, timer=clock)
    for i in range(4):
        cache.put("github", f"d-{i}", ANSWER)
    cache.resize(60, 2)
    assert [cache.get("github", f"d-{i}") is not None for i in range(4)] == [False, False, True, True]
    cache.resize(0, 2)  # dedupe switched off
    assert cache.get("github", "d-3") is None
