"""Filtered streams: the grammar's relaxation rule (clients/GRAMMAR.md) and watch with a filter."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import pytest
from grpclib.client import Channel

from runwire_client import (
    Backoff,
    GrammarChecker,
    GrammarViolation,
    RunEvent,
    SeqGapError,
    Watch,
    check_stream,
    v1,
    watch,
)

from ._events import RUN_ID, stream
from .conftest import Abort, End, Hold, ScriptedRunService, Send, StartServer

FAST = Backoff(initial=0.001, maximum=0.01, give_up_after=30.0)

# seq 1..9: a whole run with one attempt of node a and a log of node b.
RUN = stream(
    "run_started",
    "run_status_changed",
    ("node_started", "a"),
    ("node_log", "a"),
    ("node_started", "b"),
    ("node_log", "b"),
    ("node_succeeded", "a"),
    ("node_succeeded", "b"),
    "run_completed",
)
LOGS = v1.EventFilter(kinds=["node_log"])
ATTEMPTS = v1.EventFilter(kinds=["node_started", "node_succeeded", "node_failed", "node_log"])
NODE_A = v1.EventFilter(node_ids=["a"])


async def drain(run: Watch) -> list[RunEvent]:
    async with asyncio.timeout(10):
        return [event async for event in run]


def pick(*seqs: int) -> list[RunEvent]:
    return [RUN[seq - 1] for seq in seqs]


@pytest.mark.parametrize(
    ("event_filter", "seqs", "after_seq"),
    [
        (LOGS, (4, 6, 9), 0),  # gaps, logs outside any attempt seen
        (LOGS, (6, 9), 4),
        (ATTEMPTS, (3, 4, 5, 6, 7, 8, 9), 0),
        (NODE_A, (1, 2, 3, 4, 7, 9), 0),
        (v1.EventFilter(kinds=["run_completed"]), (9,), 0),
    ],
    ids=["logs", "logs resumed", "attempt kinds", "node a", "only run_completed"],
)
def test_grammar_accepts_filtered_streams(
    event_filter: v1.EventFilter, seqs: tuple[int, ...], after_seq: int
) -> None:
    check_stream(pick(*seqs), after_seq=after_seq, event_filter=event_filter)


@pytest.mark.parametrize(
    ("event_filter", "seqs", "after_seq", "rule", "at"),
    [
        # Without a filter, or with one that selects everything, nothing relaxes.
        (None, (4, 6, 9), 0, "seq-start", 4),
        (v1.EventFilter(), (4, 6, 9), 0, "seq-start", 4),
        (None, (1, 2, 4), 0, "seq-gapless", 4),
        # Seqs must still increase, from past after_seq.
        (LOGS, (4, 4), 0, "seq-gapless", 4),
        (LOGS, (6, 4), 0, "seq-gapless", 4),
        (LOGS, (4,), 4, "seq-start", 4),
        # Kinds that select the attempt framing keep the attempt rules.
        (ATTEMPTS, (3, 4, 5, 9), 0, "attempt-unclosed", 9),
        (ATTEMPTS, (4,), 0, "output-outside-attempt", 4),
        # node_ids never relax them.
        (NODE_A, (1, 2, 4), 0, "output-outside-attempt", 4),
        (NODE_A, (1, 2, 3, 3), 0, "seq-gapless", 3),
    ],
)
def test_grammar_rejects_what_a_filter_does_not_excuse(
    event_filter: v1.EventFilter | None, seqs: tuple[int, ...], after_seq: int, rule: str, at: int
) -> None:
    with pytest.raises(GrammarViolation) as caught:
        check_stream(pick(*seqs), after_seq=after_seq, event_filter=event_filter)
    assert (caught.value.rule, caught.value.seq) == (rule, at)


def test_grammar_filtered_stream_keeps_run_completed_last() -> None:
    late = RunEvent(run_id=RUN_ID, seq=10, node_id="b", node_log=v1.NodeLog())
    with pytest.raises(GrammarViolation, match=r"^run-completed-last at seq 10: "):
        check_stream([*pick(4, 9), late], event_filter=LOGS)


def test_grammar_filtered_stream_still_needs_run_completed() -> None:
    checker = GrammarChecker(after_seq=0, event_filter=LOGS)
    checker.feed(RUN[3])
    with pytest.raises(GrammarViolation, match=r"^run-completed-last at seq 4: "):
        checker.finish()


def test_grammar_filtered_stream_keeps_run_id_and_run_started_rules() -> None:
    other = RunEvent(run_id="run_other", seq=6, node_id="b", node_log=v1.NodeLog())
    with pytest.raises(GrammarViolation, match=r"^run-id-stable at seq 6: "):
        check_stream([RUN[3], other], event_filter=LOGS)
    misplaced = RunEvent(run_id=RUN_ID, seq=5, run_started=v1.RunStarted())
    with pytest.raises(GrammarViolation, match=r"^run-started-first at seq 5: "):
        check_stream([RUN[3], misplaced], event_filter=v1.EventFilter(kinds=["run_started"]))


async def test_watch_with_a_filter_resumes_after_resume_after_seq(
    start_server: StartServer, channel_to: Callable[[int], Channel]
) -> None:
    """The server looked through seq 8; the resumed call starts there, not at seq 6."""
    service = ScriptedRunService(
        [Send(pick(4, 6), resume_after_seq=8), Abort(grpc.StatusCode.UNAVAILABLE, "draining")],
        [Send(pick(6), resume_after_seq=8), Send(pick(9), resume_after_seq=9)],
    )
    port, _ = await start_server(service)

    run = watch(channel_to(port), RUN_ID, backoff=FAST, event_filter=LOGS)
    events = [event async for event in run]

    assert [event.seq for event in events] == [4, 6, 9]
    check_stream(events, event_filter=LOGS)
    assert service.after_seqs == [0, 8]
    assert [list(r.filter.kinds) for r in service.watch_requests] == [["node_log"]] * 2
    assert run.end is not None
    assert run.end.last_seq == 9


async def test_watch_with_a_filter_resumes_past_a_response_without_events(
    start_server: StartServer, channel_to: Callable[[int], Channel]
) -> None:
    service = ScriptedRunService(
        [Send([], resume_after_seq=5), Abort(grpc.StatusCode.UNAVAILABLE, "draining")],
        [Send(pick(6, 9), resume_after_seq=9)],
    )
    port, _ = await start_server(service)

    events = [
        event async for event in watch(channel_to(port), RUN_ID, backoff=FAST, event_filter=LOGS)
    ]

    assert [event.seq for event in events] == [6, 9]
    assert service.after_seqs == [0, 5]


async def test_watch_with_a_filter_ends_on_stream_end_at_its_resume_point(
    start_server: StartServer, channel_to: Callable[[int], Channel]
) -> None:
    service = ScriptedRunService([End(9), Hold()])
    port, _ = await start_server(service)

    run = watch(channel_to(port), RUN_ID, after_seq=9, backoff=FAST, event_filter=LOGS)
    assert [event async for event in run] == []
    assert run.end is not None
    assert run.end.last_seq == 9


async def test_watch_with_a_filter_raises_when_run_completed_was_skipped(
    start_server: StartServer, channel_to: Callable[[int], Channel]
) -> None:
    """RunCompleted is always delivered: a stream_end past the resume point lost it."""
    service = ScriptedRunService([Send(pick(4), resume_after_seq=6), End(9)])
    port, _ = await start_server(service)

    with pytest.raises(SeqGapError):
        await drain(watch(channel_to(port), RUN_ID, backoff=FAST, event_filter=LOGS))


async def test_watch_without_a_filter_still_raises_on_a_gap(
    start_server: StartServer, channel_to: Callable[[int], Channel]
) -> None:
    service = ScriptedRunService([Send(pick(1, 2, 4), resume_after_seq=4)])
    port, _ = await start_server(service)

    with pytest.raises(SeqGapError):
        await drain(watch(channel_to(port), RUN_ID, backoff=FAST))
