"""The ledger annotation: what a replica reads back is what the writer learnt, and nothing else."""

from __future__ import annotations

import pytest

from controller.deliveries import PushEvent, RefKind
from controller.ledger import MAX_ENTRIES, Ledger
from tests.support import sha


def push(before: str, commit: str, delivery: str | None = None, *, forced: bool = False) -> PushEvent:
    return PushEvent(
        "github", delivery, ("https://example.com/r",), RefKind.BRANCH, "main", commit, before, False, forced
    )


A, B, C = sha("a"), sha("b"), sha("c")


def test_round_trip_keeps_order_flags_and_ids() -> None:
    ledger = Ledger().learn(push(A, B, "d1"), "").learn(push(B, C, "d2", forced=True), B)
    again = Ledger.parse(ledger.dump())
    assert again == ledger
    assert [(e.delivery, e.commit, e.forced, e.applied) for e in again.entries] == [
        ("d1", B, False, True),  # B was recorded when d2 was learnt
        ("d2", C, True, False),
    ]


def test_order_facts_survive_the_annotation() -> None:
    ledger = Ledger.parse(Ledger().learn(push(A, B), "").learn(push(B, C), "").dump())
    history = ledger.history()
    assert history.precedes(B, C)
    assert history.precedes(A, C)
    assert not history.precedes(C, B)


def test_only_recorded_deliveries_are_handled() -> None:
    learnt = Ledger().learn(push(A, B, "d1"), A)
    assert not learnt.handled(push(A, B, "d1"))  # learnt, not yet seen recorded: a retry must be judged again
    assert learnt.learn(push(B, C, "d2"), B).handled(push(A, B, "d1"))
    assert not learnt.handled(push(A, B, None))


def test_a_recorded_delivery_id_sent_with_another_push_is_not_handled() -> None:
    """The id is an unsigned header: a captured body under the id of a later push must not hide it."""
    ledger = Ledger().learn(push(A, B, "d1"), A).learn(push(B, C, "d2"), B)
    assert ledger.handled(push(A, B, "d1"))
    assert not ledger.handled(push(B, C, "d1"))


def test_learning_the_same_delivery_again_moves_it_last_without_a_copy() -> None:
    ledger = Ledger().learn(push(A, B, "d1"), "").learn(push(B, C, "d2"), "").learn(push(A, B, "d1"), "")
    assert [e.delivery for e in ledger.entries] == ["d2", "d1"]
    assert ledger.knows(push(A, B, "d1"))
    assert not ledger.knows(push(A, B, "d9"))


def test_bounded_and_unreadable_text_is_empty() -> None:
    ledger = Ledger()
    for i in range(MAX_ENTRIES + 5):
        ledger = ledger.learn(push(sha(str(i)), sha(str(i + 1)), f"d{i}"), "")
    assert len(Ledger.parse(ledger.dump()).entries) == MAX_ENTRIES
    assert Ledger.parse("not json") == Ledger()
    assert Ledger.parse('{"v": 99, "e": []}') == Ledger()
    assert Ledger.parse('{"v": 1, "e": [["x", 1, 2, 3], ["d", "c", "b", 0]]}').entries[0].delivery == "d"


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("[" * 20_000 + "]" * 20_000, "is not JSON"),  # deeper than the decoder's recursion limit
        ('{"v": 1, "e": ' + "[" * 5_000 + "]" * 5_000 + "}", "is not JSON"),
        ('{"v": 1, "e": [[[[]]], ["d", "c", "b", 0]]}', "entry 0 is not"),
        ("[1, 2, 3]", "is not a version-1 ledger"),
        ("42", "is not a version-1 ledger"),
        ('"text"', "is not a version-1 ledger"),
        ('{"v": 1, "e": {"a": 1}}', "is not a version-1 ledger"),
        ('{"v": 1, "e": [["d", "c", "b", ' + "9" * 5_000 + "]]}", "is not JSON"),  # over int's digit limit
        ('{"v": 1, "e": [["d", "c", "b", 1.5], ["d", "c", "b", true]]}', "entry 0 is not"),
        ("x" * 300_000, "is longer than"),
    ],
    ids=[
        "deep-array",
        "deep-entry",
        "nested-entry",
        "list",
        "number",
        "string",
        "entries-object",
        "huge-int",
        "float",
        "huge",
    ],
)
def test_a_malformed_ledger_counts_as_absent_and_says_why(raw: str, problem: str) -> None:
    """A user (or a broken writer) may put anything in the annotation: it is read as no ledger, never raises."""
    ledger, why = Ledger.read(raw)
    assert [e.commit for e in ledger.entries] == (
        ["c"] if raw.endswith('["d", "c", "b", 0]]}') else []
    )  # good entries stay
    assert why is not None
    assert problem in why
    assert Ledger.parse(raw) == ledger
