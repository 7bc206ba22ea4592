"""watch() against a real grpc.aio server: resume without loss or duplicates, typed errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
from grpclib.client import Channel
from grpclib.const import Status

from runwire_client import (
    Backoff,
    RunEvent,
    RunServiceStub,
    RunwireError,
    UnknownEventError,
    check_stream,
    encode_event,
    v1,
    watch,
)

from ._events import RUN_ID, stream
from .conftest import Abort, Hold, ScriptedRunService, Send, StartServer

# Fast reconnects keep the suite quick; the defaults are tested on their own.
FAST = Backoff(initial=0.001, maximum=0.01, give_up_after=30.0)

# seq 1..8: a whole, grammatical run.
RUN = stream(
    "run_started",
    "run_status_changed",
    ("node_started", "a"),
    ("node_log", "a"),
    ("node_log", "a"),
    ("node_log", "a"),
    ("node_succeeded", "a"),
    "run_completed",
)


def seqs(events: list[RunEvent]) -> list[int]:
    return [event.seq for event in events]


async def collect(events: AsyncIterator[RunEvent]) -> list[RunEvent]:
    return [event async for event in events]


class Collector:
    """Drains a watch in a task; tests wait on what it has seen, never on time."""

    def __init__(self, events: AsyncIterator[RunEvent]) -> None:
        self.events: list[RunEvent] = []
        self._seen = asyncio.Condition()
        self.task = asyncio.create_task(self._drain(events))

    async def _drain(self, events: AsyncIterator[RunEvent]) -> list[RunEvent]:
        async for event in events:
            async with self._seen:
                self.events.append(event)
                self._seen.notify_all()
        return self.events

    async def until(self, seq: int) -> None:
        async with asyncio.timeout(10), self._seen:
            await self._seen.wait_for(lambda: bool(self.events) and self.events[-1].seq >= seq)


async def test_watch_yields_every_event_then_stops_after_run_completed(
    start_server: StartServer, channel_to: Callable[[int], Channel]
) -> None:
    """The server keeps the call open after RunCompleted; watch ends anyway and cancels the call."""
    service = ScriptedRunService([Send(RUN[:3]), Send(RUN[3:]), Hold()])
    port, _ = await start_server(service)

    events = await collect(watch(channel_to(port), RUN_ID, backoff=FAST))

    assert seqs(events) == list(range(1, 9))
    assert events == RUN
    check_stream(events)
    await asyncio.wait_for(service.until_calls_ended(1), 10)
    assert service.after_seqs == [0]


async def test_watch_resumes_after_unavailable_without_loss_or_duplicates(
    start_server: StartServer, channel_to: Callable[[int], Channel]
) -> None:
    """A draining server closes the stream with UNAVAILABLE; the next one resends seq 3."""
    service = ScriptedRunService(
        [Send(RUN[:3]), Abort(grpc.StatusCode.UNAVAILABLE, "server draining")],
        [Send(RUN[2:5]), Send(RUN[5:])],
    )
    port, _ = await start_server(service)

    events = await collect(watch(channel_to(port), RUN_ID, backoff=FAST))

    assert seqs(events) == list(range(1, 9))
    assert service.after_seqs == [0, 3]


async def test_watch_resumes_from_after_seq(
    start_server: StartServer, channel_to: Callable[[int], Channel]
) -> None:
    service = ScriptedRunService([Send(RUN[4:])])
    port, _ = await start_server(service)

    stub = RunServiceStub(channel_to(port))
    events = await collect(watch(stub, RUN_ID, after_seq=4, backoff=FAST))

    assert seqs(events) == [5, 6, 7, 8]
    check_stream(events, after_seq=4)
    assert service.after_seqs == [4]


async def test_watch_retries_dying_server_statuses_and_early_ends(
    start_server: StartServer, channel_to: Callable[[int], Channel]
) -> None:
    """INTERNAL and UNKNOWN from a dying server, and an OK end before RunCompleted, all resume."""
    service = ScriptedRunService(
        [Send(RUN[:2]), Abort(grpc.StatusCode.INTERNAL, "stream reset")],
        [Send(RUN[2:4]), Abort(grpc.StatusCode.UNKNOWN, "")],
        [Send(RUN[4:6])],
        [Send([]), Send(RUN[6:])],
    )
    port, _ = await start_server(service)

    events = await collect(watch(channel_to(port), RUN_ID, backoff=FAST))

    assert seqs(events) == list(range(1, 9))
    assert service.after_seqs == [0, 2, 4, 6]


async def test_watch_resumes_across_server_restart(
    start_server: StartServer, channel_to: Callable[[int], Channel]
) -> None:
    """The server process goes away mid-stream and comes back on the same port.

    The first server holds the call open after seq 3; it is stopped (the
    connection drops), then a new server on the same port replays from seq 2,
    overlapping what the watcher already has. The watcher sees 1..8 once each.
    """
    first = ScriptedRunService([Send(RUN[:3]), Hold()])
    port, first_server = await start_server(first)
    collector = Collector(watch(channel_to(port), RUN_ID, backoff=FAST))
    await collector.until(seq=3)

    await first_server.stop(None)
    second = ScriptedRunService([Send(RUN[1:6]), Send(RUN[6:])])
    await start_server(second, port)

    events = await asyncio.wait_for(collector.task, 10)
    assert seqs(events) == list(range(1, 9))
    check_stream(events)
    assert second.after_seqs == [3]


async def test_watch_raises_run_not_found_without_retrying(
    start_server: StartServer, channel_to: Callable[[int], Channel]
) -> None:
    service = ScriptedRunService(
        [Abort(grpc.StatusCode.NOT_FOUND, 'run "run_x" not found', reason="RUN_NOT_FOUND")]
    )
    port, _ = await start_server(service)

    with pytest.raises(RunwireError) as caught:
        await collect(watch(channel_to(port), "run_x", backoff=FAST))

    error = caught.value
    assert (error.code, error.reason, error.domain) == (
        Status.NOT_FOUND,
        "RUN_NOT_FOUND",
        "runwire.v1",
    )
    assert error.error_reason == v1.ErrorReason.RUN_NOT_FOUND
    assert error.message == 'run "run_x" not found'
    assert str(error) == 'NOT_FOUND RUN_NOT_FOUND: run "run_x" not found'
    assert service.after_seqs == [0]


async def test_watch_raises_field_violations_for_invalid_argument(
    start_server: StartServer, channel_to: Callable[[int], Channel]
) -> None:
    service = ScriptedRunService(
        [
            Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "request is invalid",
                reason="REQUEST_INVALID",
                violations=[("after_seq", "must be >= 0, got -1"), ("run_id", "must not be empty")],
            )
        ]
    )
    port, _ = await start_server(service)

    with pytest.raises(RunwireError) as caught:
        await collect(watch(channel_to(port), "", after_seq=-1, backoff=FAST))

    error = caught.value
    assert (error.code, error.error_reason) == (
        Status.INVALID_ARGUMENT,
        v1.ErrorReason.REQUEST_INVALID,
    )
    assert [(v.field, v.description) for v in error.field_violations] == [
        ("after_seq", "must be >= 0, got -1"),
        ("run_id", "must not be empty"),
    ]
    assert "after_seq: must be >= 0, got -1" in str(error)


async def test_watch_raises_unknown_event_instead_of_dropping_it(
    start_server: StartServer, channel_to: Callable[[int], Channel]
) -> None:
    # Field 127, length-delimited: a variant from a newer contract.
    newer = encode_event(RunEvent(run_id=RUN_ID, seq=3)) + b"\xfa\x07\x00"
    service = ScriptedRunService([Send([*RUN[:2], newer, *RUN[3:]])])
    port, _ = await start_server(service)

    seen: list[RunEvent] = []

    async def drain() -> None:
        async for event in watch(channel_to(port), RUN_ID, backoff=FAST):
            seen.append(event)

    with pytest.raises(UnknownEventError, match=r"unknown event at seq 3 .*upgrade the client"):
        await drain()
    assert seqs(seen) == [1, 2]


async def test_watch_gives_up_after_its_budget(
    start_server: StartServer, channel_to: Callable[[int], Channel]
) -> None:
    # A port that just had a server: nothing listens there now.
    port, server = await start_server(ScriptedRunService())
    await server.stop(None)
    budget = Backoff(initial=0.001, maximum=0.01, give_up_after=0.05)

    with pytest.raises(RunwireError, match="gave up watching run") as caught:
        await collect(watch(channel_to(port), RUN_ID, backoff=budget))
    assert caught.value.code == Status.UNAVAILABLE


def test_backoff_grows_to_its_cap_with_bounded_jitter() -> None:
    policy = Backoff(initial=0.1, maximum=1.0, multiplier=2.0, jitter=0.2)
    for failures, base in [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (500, 1.0)]:
        delay = policy.delay(failures)
        assert base * 0.8 <= delay <= base


def test_backoff_default_outlasts_a_server_restart() -> None:
    """The default keeps retrying through well over 30 s of server absence and reconnects within ~2 s of its return."""
    policy = Backoff()
    assert policy.give_up_after is not None
    assert policy.give_up_after >= 60
    assert policy.maximum <= 2.0
