"""The stream grammar checker, rule by rule (clients/GRAMMAR.md)."""

from __future__ import annotations

import dataclasses

import pytest

from runwire_client import EVENT_CASES, GrammarChecker, GrammarViolation, RunEvent, check_stream
from runwire_client._grammar import CLASSIFIED, RULES

from ._events import Item, event, stream

OPEN = ("node_started", "a")
LOG = ("node_log", "a")
DONE = ("node_succeeded", "a")


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    items: tuple[Item, ...]
    after_seq: int = 0


VALID = [
    Case("minimal", ("run_started", "run_completed")),
    Case(
        "one attempt with every output kind",
        (
            "run_started",
            "run_status_changed",
            OPEN,
            LOG,
            ("node_token", "a"),
            ("tool_call", "a"),
            ("node_heartbeat", "a"),
            DONE,
            "run_completed",
        ),
    ),
    Case(
        "a retry: failed attempt, notice, next attempt",
        (
            "run_started",
            ("node_started", "a", 1, 1),
            ("node_failed", "a", 1, 1),
            ("node_retrying", "a", 1, 1),
            ("node_started", "a", 1, 2),
            ("node_succeeded", "a", 1, 2),
            "run_completed",
        ),
    ),
    Case(
        "interleaved attempts of two nodes, a skip and a loop visit",
        (
            "run_started",
            OPEN,
            ("node_started", "b"),
            ("node_log", "b"),
            LOG,
            ("node_failed", "b"),
            ("node_skipped", "c"),
            DONE,
            ("node_started", "a", 2, 1),
            ("node_succeeded", "a", 2, 1),
            ("iteration_capped", "a", 2, 1),
            "run_completed",
        ),
    ),
    Case(
        "gates, pause and AI audit anywhere between the ends",
        (
            "run_started",
            "run_paused",
            "run_resumed",
            ("node_started", "ask"),
            ("approval_requested", "ask"),
            ("approval_resolved", "ask"),
            ("awaiting_confirmation", "ask"),
            ("confirmation_resolved", "ask"),
            ("ai_routing_decision", "ask"),
            ("ai_invocation", "ask"),
            ("ai_review_required", "ask"),
            ("ai_review_resolved", "ask"),
            ("sandbox_violation", "ask"),
            ("node_succeeded", "ask"),
            "run_completed",
        ),
    ),
    Case(
        "a fan-out: the node's attempt frames interleaved item attempts, item 0 retried",
        (
            "run_started",
            OPEN,
            ("node_started", "a", 1, 1, 0),
            ("node_started", "a", 1, 1, 1),
            ("node_log", "a", 1, 1, 1),
            ("node_failed", "a", 1, 1, 0),
            ("node_retrying", "a", 1, 1, 0),
            ("node_succeeded", "a", 1, 1, 1),
            ("node_started", "a", 1, 2, 0),
            ("node_succeeded", "a", 1, 2, 0),
            ("node_skipped", "a", 1, 0, 2),
            DONE,
            "run_completed",
        ),
    ),
    Case(
        "resumed: an item starts inside a frame opened before after_seq",
        (("node_started", "a", 1, 1, 3), ("node_succeeded", "a", 1, 1, 3), DONE, "run_completed"),
        after_seq=9,
    ),
    Case(
        "resumed: output and terminal of an attempt opened before after_seq",
        (LOG, DONE, "run_completed"),
        after_seq=7,
    ),
    Case(
        "resumed: the same node opens again after its earlier attempt closed",
        (
            DONE,
            ("node_started", "a", 1, 2),
            ("node_log", "a", 1, 2),
            ("node_failed", "a", 1, 2),
            "run_completed",
        ),
        after_seq=3,
    ),
]


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.name)
def test_checker_accepts_valid_stream(case: Case) -> None:
    check_stream(stream(*case.items, after_seq=case.after_seq), after_seq=case.after_seq)


@dataclasses.dataclass(frozen=True)
class Invalid:
    rule: str
    seq: int
    name: str
    events: tuple[RunEvent, ...]
    after_seq: int = 0


def _swap_run_id(events: list[RunEvent], index: int) -> list[RunEvent]:
    events[index].run_id = "run_other"
    return events


def _renumber(events: list[RunEvent], index: int, seq: int) -> list[RunEvent]:
    events[index].seq = seq
    return events


INVALID = [
    Invalid(
        "seq-start", 2, "whole stream starting at 2", tuple(stream("run_started", after_seq=1))
    ),
    Invalid(
        "seq-start",
        7,
        "resumed after 5 but starting at 7",
        tuple(stream("run_status_changed", after_seq=6)),
        after_seq=5,
    ),
    Invalid(
        "seq-gapless",
        4,
        "gap",
        tuple(_renumber(stream("run_started", "run_status_changed", "run_completed"), 2, 4)),
    ),
    Invalid(
        "seq-gapless",
        2,
        "repeat",
        tuple(_renumber(stream("run_started", "run_status_changed", "run_completed"), 2, 2)),
    ),
    Invalid(
        "run-id-stable",
        2,
        "second event of another run",
        tuple(_swap_run_id(stream("run_started", "run_status_changed", "run_completed"), 1)),
    ),
    Invalid("run-started-first", 1, "seq 1 is not RunStarted", tuple(stream("run_status_changed"))),
    Invalid(
        "run-started-first",
        2,
        "second RunStarted",
        tuple(stream("run_started", "run_started")),
    ),
    Invalid(
        "run-completed-last",
        3,
        "event after RunCompleted",
        tuple(stream("run_started", "run_completed", "run_status_changed")),
    ),
    Invalid(
        "run-completed-last",
        3,
        "second RunCompleted",
        tuple(stream("run_started", "run_completed", "run_completed")),
    ),
    Invalid(
        "run-completed-last",
        2,
        "stream finished without RunCompleted",
        tuple(stream("run_started", "run_status_changed")),
    ),
    Invalid(
        "attempt-open",
        3,
        "NodeStarted twice",
        tuple(stream("run_started", OPEN, ("node_started", "a", 1, 2))),
    ),
    Invalid(
        "output-outside-attempt",
        2,
        "log before NodeStarted",
        tuple(stream("run_started", LOG)),
    ),
    Invalid(
        "output-outside-attempt",
        3,
        "log for another attempt than the open one",
        tuple(stream("run_started", OPEN, ("node_token", "a", 1, 2))),
    ),
    Invalid(
        "output-outside-attempt",
        4,
        "heartbeat after the attempt closed",
        tuple(stream("run_started", OPEN, DONE, ("node_heartbeat", "a"))),
    ),
    Invalid(
        "output-outside-attempt",
        10,
        "resumed: tool call after the attempt the checker saw close",
        tuple(stream(DONE, ("tool_call", "a"), after_seq=8)),
        after_seq=8,
    ),
    Invalid(
        "terminal-outside-attempt",
        2,
        "NodeSucceeded with no attempt",
        tuple(stream("run_started", DONE)),
    ),
    Invalid(
        "terminal-outside-attempt",
        4,
        "second terminal event",
        tuple(stream("run_started", OPEN, DONE, ("node_failed", "a"))),
    ),
    Invalid(
        "terminal-outside-attempt",
        3,
        "NodeFailed of another iteration",
        tuple(stream("run_started", OPEN, ("node_failed", "a", 2, 1))),
    ),
    Invalid(
        "skip-inside-attempt",
        3,
        "NodeSkipped while running",
        tuple(stream("run_started", OPEN, ("node_skipped", "a"))),
    ),
    Invalid(
        "item-outside-frame",
        2,
        "an item starts with no open attempt of its node",
        tuple(stream("run_started", ("node_started", "a", 1, 1, 0))),
    ),
    Invalid(
        "item-outside-frame",
        3,
        "an item starts in another iteration than its node's open visit",
        tuple(stream("run_started", OPEN, ("node_started", "a", 2, 1, 0))),
    ),
    Invalid(
        "attempt-open",
        4,
        "the same item starts twice",
        tuple(
            stream(
                "run_started", OPEN, ("node_started", "a", 1, 1, 0), ("node_started", "a", 1, 2, 0)
            )
        ),
    ),
    Invalid(
        "output-outside-attempt",
        4,
        "a log of an item that is not open",
        tuple(
            stream("run_started", OPEN, ("node_started", "a", 1, 1, 0), ("node_log", "a", 1, 1, 1))
        ),
    ),
    Invalid(
        "item-unclosed",
        4,
        "the node's visit closes while an item is open",
        tuple(stream("run_started", OPEN, ("node_started", "a", 1, 1, 0), DONE)),
    ),
    Invalid(
        "attempt-unclosed",
        4,
        "RunCompleted with an open attempt",
        tuple(stream("run_started", OPEN, LOG, "run_completed")),
    ),
]


@pytest.mark.parametrize("case", INVALID, ids=lambda c: f"{c.rule}: {c.name}")
def test_checker_rejects_invalid_stream(case: Invalid) -> None:
    with pytest.raises(GrammarViolation) as caught:
        check_stream(case.events, after_seq=case.after_seq)
    assert (caught.value.rule, caught.value.seq) == (case.rule, case.seq)
    assert str(caught.value) == f"{case.rule} at seq {case.seq}: {caught.value.detail}"
    assert caught.value.detail


def test_invalid_table_covers_every_rule() -> None:
    assert {case.rule for case in INVALID} == set(RULES)


def test_checker_classification_names_only_known_variants() -> None:
    assert CLASSIFIED <= EVENT_CASES


def test_checker_feed_reports_progress() -> None:
    checker = GrammarChecker(after_seq=4)
    assert (checker.last_seq, checker.completed) == (4, False)
    for item in stream("run_status_changed", "run_completed", after_seq=4):
        checker.feed(item)
    assert (checker.last_seq, checker.completed) == (6, True)
    checker.finish()


def test_checker_finish_without_events_names_after_seq() -> None:
    with pytest.raises(GrammarViolation, match=r"^run-completed-last at seq 9: "):
        GrammarChecker(after_seq=9).finish()


def test_checker_rejects_unknown_event() -> None:
    from runwire_client import UnknownEventError

    with pytest.raises(UnknownEventError, match="upgrade the client"):
        GrammarChecker().feed(RunEvent(run_id="r", seq=1))


def test_event_builder_sets_the_variant() -> None:
    assert event(3, "node_log", "a", 1, 2).node_log is not None
