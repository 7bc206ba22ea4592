"""watch() against a real grpc.aio server: resume without loss or duplicates, typed errors."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import grpc
import h2.exceptions
import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

from runwire.errors import Overloaded
from runwire.rpc._status import to_status
from runwire_client import (
    Backoff,
    RunEnd,
    RunEvent,
    RunServiceStub,
    RunwireError,
    SeqGapError,
    UnknownEventError,
    check_stream,
    encode_event,
    v1,
    watch,
)

from ._events import RUN_ID, stream
from .conftest import (
    Abort,
    End,
    Hold,
    Refuse,
    ScriptedRunService,
    Send,
    StartFront,
    StartServer,
)

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


# The retry policy, the same as the Go and TypeScript clients': for each status
# code, the runwire ErrorInfo reason that comes with it when the server raises
# it, and whether watch resumes the stream without that ErrorInfo (a dying
# connection, a proxy) and with it (the server's own answer).
Code = grpc.StatusCode
RETRY_POLICY: dict[grpc.StatusCode, tuple[str, bool, bool]] = {
    #                         reason               without  with
    Code.UNAVAILABLE:         ("SERVER_DRAINING",   True,    True),
    Code.INTERNAL:            ("INTERNAL",          True,    False),
    Code.UNKNOWN:             ("INTERNAL",          True,    False),
    Code.CANCELLED:           ("INTERNAL",          True,    False),
    Code.ABORTED:             ("REQUEST_ID_REUSED", True,    False),
    Code.DEADLINE_EXCEEDED:   ("INTERNAL",          True,    False),
    Code.NOT_FOUND:           ("RUN_NOT_FOUND",     False,   False),
    Code.INVALID_ARGUMENT:    ("REQUEST_INVALID",   False,   False),
    Code.FAILED_PRECONDITION: ("RUN_FINISHED",      False,   False),
    Code.UNAUTHENTICATED:     ("INTERNAL",          False,   False),
    Code.PERMISSION_DENIED:   ("ADAPTER_DISABLED",  False,   False),
    Code.ALREADY_EXISTS:      ("REQUEST_ID_REUSED", False,   False),
    Code.RESOURCE_EXHAUSTED:  ("OVERLOADED",        False,   True),
    Code.OUT_OF_RANGE:        ("REQUEST_INVALID",   False,   False),
    Code.UNIMPLEMENTED:       ("INTERNAL",          False,   False),
    Code.DATA_LOSS:           ("INTERNAL",          False,   False),
}  # fmt: skip


async def drain_into(seen: list[RunEvent], events: AsyncIterator[RunEvent]) -> None:
    """Appends each event to `seen`, so what came before an exception stays visible."""
    async with asyncio.timeout(10):
        async for event in events:
            seen.append(event)


@pytest.mark.parametrize("with_info", [False, True], ids=["without_info", "with_info"])
@pytest.mark.parametrize("code", list(RETRY_POLICY), ids=lambda code: code.name)
async def test_watch_retry_policy(
    code: grpc.StatusCode,
    with_info: bool,
    start_server: StartServer,
    channel_to: Callable[[int], Channel],
) -> None:
    """After seq 2 the stream ends with `code`; watch either resumes from seq 2 or raises it."""
    reason, resumed_without, resumed_with = RETRY_POLICY[code]
    resumed = resumed_with if with_info else resumed_without
    service = ScriptedRunService(
        [Send(RUN[:2]), Abort(code, "cut off", reason=reason if with_info else "")],
        [Send(RUN[1:])],
    )
    port, _ = await start_server(service)
    seen: list[RunEvent] = []

    if resumed:
        await drain_into(seen, watch(channel_to(port), RUN_ID, backoff=FAST))
        assert seqs(seen) == list(range(1, 9))
        assert service.after_seqs == [0, 2]
        return
    with pytest.raises(RunwireError) as caught:
        await drain_into(seen, watch(channel_to(port), RUN_ID, backoff=FAST))
    assert seqs(seen) == [1, 2]
    assert service.after_seqs == [0]
    error = caught.value
    assert (error.code, error.message) == (Status(code.value[0]), "cut off")
    assert (error.reason, error.domain) == ((reason, "runwire.v1") if with_info else ("", ""))


async def test_watch_resumes_internal_with_another_domains_error_info(
    start_server: StartServer, channel_to: Callable[[int], Channel]
) -> None:
    """Only a runwire ErrorInfo makes INTERNAL the server's answer; a proxy's own is transport."""
    service = ScriptedRunService(
        [
            Send(RUN[:2]),
            Abort(Code.INTERNAL, "upstream reset", reason="UPSTREAM_RESET", domain="proxy.example"),
        ],
        [Send(RUN[2:])],
    )
    port, _ = await start_server(service)

    events = await collect(watch(channel_to(port), RUN_ID, backoff=FAST))

    assert seqs(events) == list(range(1, 9))
    assert service.after_seqs == [0, 2]


async def test_watch_resumes_streams_that_end_ok_before_run_completed(
    start_server: StartServer, channel_to: Callable[[int], Channel]
) -> None:
    """The server ends with OK only after RunCompleted, so an earlier OK end is a lost stream."""
    service = ScriptedRunService(
        [Send(RUN[:3])],
        [],
        [Send([]), Send(RUN[3:])],
    )
    port, _ = await start_server(service)

    events = await collect(watch(channel_to(port), RUN_ID, backoff=FAST))

    assert seqs(events) == list(range(1, 9))
    assert service.after_seqs == [0, 3, 3]


async def test_watch_resumes_across_tcp_resets_and_http2_protocol_errors(
    start_server: StartServer, start_front: StartFront, channel_to: Callable[[int], Channel]
) -> None:
    """Through a front that resets the first connection and breaks HTTP/2 on the second."""
    service = ScriptedRunService([Send(RUN)])
    backend, _ = await start_server(service)
    port, front = await start_front(backend, "tcp_reset", "h2_protocol_error")

    events = await asyncio.wait_for(collect(watch(channel_to(port), RUN_ID, backoff=FAST)), 10)

    assert seqs(events) == list(range(1, 9))
    assert front.connections == 3
    assert service.after_seqs == [0]


class FaultyStub(RunServiceStub):
    """A stub whose first WatchRun relays the server's first response and then
    raises `fault`: transport failures that a real server cannot stage on cue."""

    def __init__(self, channel: Channel, fault: Exception) -> None:
        super().__init__(channel)
        self.fault: Exception | None = fault

    # watch() calls the stub's _unary_stream (the generated watch_run's own
    # call) with a response type that applies protobuf's merge rules.
    async def _unary_stream(self, *args: Any, **kwargs: Any) -> Any:
        async with aclosing(super()._unary_stream(*args, **kwargs)) as responses:  # type: ignore[type-var]
            async for response in responses:
                yield response
                if self.fault is not None:
                    fault, self.fault = self.fault, None
                    raise fault


# Errors below the gRPC status and whether watch resumes after them.
TRANSPORT_FAULTS: list[tuple[str, Exception, bool]] = [
    ("stream_reset", StreamTerminatedError("Stream reset by remote party, error_code: 2"), True),
    ("connection_lost", StreamTerminatedError("Connection lost"), True),
    ("connection_reset", ConnectionResetError(104, "Connection reset by peer"), True),
    ("connection_refused", ConnectionRefusedError(111, "Connect call failed"), True),
    ("stub_timeout", TimeoutError("Deadline exceeded"), True),
    ("h2_stream_closed", h2.exceptions.StreamClosedError(1), True),
    (
        "h2_connection_closed",
        h2.exceptions.ProtocolError("Invalid input ConnectionInputs.SEND_DATA in state CLOSED"),
        True,
    ),
    # grpclib's own ProtocolError means the calling code misused a stream.
    ("grpclib_misuse", ProtocolError("Stream was already ended"), False),
    ("a_bug", ValueError("not a transport error"), False),
]


@pytest.mark.parametrize(
    ("fault", "resumed"),
    [(fault, resumed) for _, fault, resumed in TRANSPORT_FAULTS],
    ids=[name for name, _, _ in TRANSPORT_FAULTS],
)
async def test_watch_transport_faults(
    fault: Exception,
    resumed: bool,
    start_server: StartServer,
    channel_to: Callable[[int], Channel],
) -> None:
    """The fault strikes after seq 3; watch resumes from there or lets the exception through."""
    service = ScriptedRunService([Send(RUN[:3]), Hold()], [Send(RUN[3:])])
    port, _ = await start_server(service)
    stub = FaultyStub(channel_to(port), fault)
    seen: list[RunEvent] = []

    if resumed:
        await drain_into(seen, watch(stub, RUN_ID, backoff=FAST))
        assert seqs(seen) == list(range(1, 9))
        assert service.after_seqs == [0, 3]
    else:
        with pytest.raises(type(fault)) as caught:
            await drain_into(seen, watch(stub, RUN_ID, backoff=FAST))
        assert caught.value is fault
        assert seqs(seen) == [1, 2, 3]
        assert service.after_seqs == [0]
    # Leaving the faulted call cancelled it on the server.
    await asyncio.wait_for(service.until_calls_ended(1), 10)


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


# A RetryInfo delay far above FAST's waits (1 ms doubling to 10 ms): a watch
# that ignored it would come back within a few milliseconds.
ASKED = 0.3


@pytest.mark.parametrize(
    ("code", "reason"),
    [(Code.RESOURCE_EXHAUSTED, "OVERLOADED"), (Code.UNAVAILABLE, "SERVER_DRAINING")],
    ids=["overloaded", "draining"],
)
async def test_watch_waits_at_least_the_retry_info_delay(
    code: grpc.StatusCode,
    reason: str,
    start_server: StartServer,
    channel_to: Callable[[int], Channel],
) -> None:
    """The wait is the longer of the backoff's and the server's RetryInfo, for any retried code."""
    service = ScriptedRunService(
        [Send(RUN[:2]), Abort(code, "busy", reason=reason, retry_delay=ASKED)],
        [Send(RUN[1:])],
    )
    port, _ = await start_server(service)

    events = await asyncio.wait_for(collect(watch(channel_to(port), RUN_ID, backoff=FAST)), 10)

    assert seqs(events) == list(range(1, 9))
    assert service.after_seqs == [0, 2]
    # A lower bound on the server's own clock: the second call came no
    # sooner than the delay after the failure was sent.
    assert service.call_times[1] - service.abort_times[0] >= ASKED


async def test_watch_waits_out_the_runwire_servers_own_overloaded_status(
    start_server: StartServer, channel_to: Callable[[int], Channel]
) -> None:
    """The status the server sends at its watcher bound, made by its own mapping
    (RetryInfo and the grpc-retry-pushback-ms trailer), is waited out in full."""
    refused = to_status(Overloaded("open WatchRun streams", 1, ASKED))
    service = ScriptedRunService([Send(RUN[:2]), Refuse(refused)], [Send(RUN[1:])])
    port, _ = await start_server(service)

    events = await asyncio.wait_for(collect(watch(channel_to(port), RUN_ID, backoff=FAST)), 10)

    assert seqs(events) == list(range(1, 9))
    assert service.call_times[1] - service.abort_times[0] >= ASKED


async def test_watch_caps_the_retry_info_delay(
    start_server: StartServer, channel_to: Callable[[int], Channel]
) -> None:
    """An hour-long RetryInfo is cut to max_server_delay: the watch comes back, not before it."""
    service = ScriptedRunService(
        [Abort(Code.RESOURCE_EXHAUSTED, "busy", reason="OVERLOADED", retry_delay=3600)],
        [Send(RUN)],
    )
    port, _ = await start_server(service)
    capped = dataclasses.replace(FAST, max_server_delay=ASKED)

    events = await asyncio.wait_for(collect(watch(channel_to(port), RUN_ID, backoff=capped)), 10)

    assert seqs(events) == list(range(1, 9))
    assert service.call_times[1] - service.abort_times[0] >= ASKED


async def test_watch_gives_up_when_the_retry_info_delay_outlasts_its_budget(
    start_server: StartServer, channel_to: Callable[[int], Channel]
) -> None:
    """A delay past give_up_after ends the watch with the last error instead of a sleep past it."""
    service = ScriptedRunService(
        [Abort(Code.RESOURCE_EXHAUSTED, "busy", reason="OVERLOADED", retry_delay=20)],
        [Send(RUN)],
    )
    port, _ = await start_server(service)
    budget = dataclasses.replace(FAST, give_up_after=10.0)

    with pytest.raises(RunwireError, match=r"server asked for a retry in 20\.0s") as caught:
        await asyncio.wait_for(collect(watch(channel_to(port), RUN_ID, backoff=budget)), 10)

    assert caught.value.code == Status.UNAVAILABLE
    last = caught.value.__cause__
    assert isinstance(last, GRPCError)
    assert last.status == Status.RESOURCE_EXHAUSTED
    assert len(service.call_times) == 1


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


def test_backoff_defaults_are_the_same_in_every_client() -> None:
    """100 ms doubling to 2 s, waits drawn from [wait/2, wait], 120 s budget (GRAMMAR.md)."""
    policy = Backoff()
    assert (policy.initial, policy.maximum, policy.multiplier) == (0.1, 2.0, 2.0)
    assert (policy.jitter, policy.give_up_after) == (0.5, 120.0)
    assert policy.max_server_delay == 30.0


async def test_watch_at_the_last_seq_of_a_finished_run_ends_with_its_status(
    start_server: StartServer, channel_to: Callable[[int], Channel]
) -> None:
    """A watcher that saw RunCompleted's seq but not the stream's end resumes
    at after_seq = last: the server's stream_end ends the watch, no retry."""
    service = ScriptedRunService([End(8, v1.RunStatus.FAILED.value)])
    port, _ = await start_server(service)

    watching = watch(channel_to(port), RUN_ID, 8, backoff=FAST)
    assert await collect(watching) == []
    assert watching.end == RunEnd(RUN_ID, 8, v1.RunStatus.FAILED)
    assert watching.end.status_name == "RUN_STATUS_FAILED"
    assert service.after_seqs == [8]


async def test_watch_past_the_end_of_a_finished_run_ends_with_its_status(
    start_server: StartServer, channel_to: Callable[[int], Channel]
) -> None:
    """after_seq = last + 5: OUT_OF_RANGE AFTER_SEQ_BEYOND_END is an end, not an error to retry."""
    service = ScriptedRunService(
        [
            Abort(
                grpc.StatusCode.OUT_OF_RANGE,
                "beyond",
                reason="AFTER_SEQ_BEYOND_END",
                metadata={"last_seq": "8", "status": "RUN_STATUS_SUCCEEDED", "after_seq": "13"},
            )
        ]
    )
    port, _ = await start_server(service)

    watching = watch(channel_to(port), RUN_ID, 13, backoff=FAST)
    assert await collect(watching) == []
    assert watching.end == RunEnd(RUN_ID, 8, v1.RunStatus.SUCCEEDED, beyond_end=True)
    assert service.after_seqs == [13]


async def test_watch_resumed_after_the_run_finished_between_reconnects(
    start_server: StartServer, channel_to: Callable[[int], Channel]
) -> None:
    service = ScriptedRunService(
        [Send(RUN[:5]), Abort(grpc.StatusCode.UNAVAILABLE, "restarting")],
        [Send(RUN[5:]), End(8)],
    )
    port, _ = await start_server(service)

    watching = watch(channel_to(port), RUN_ID, backoff=FAST)
    assert seqs(await collect(watching)) == list(range(1, 9))
    completed = RUN[-1].run_completed
    assert completed is not None
    assert watching.end == RunEnd(RUN_ID, 8, completed.status)
    assert service.after_seqs == [0, 5]


async def test_watch_end_keeps_a_status_newer_than_the_client(
    start_server: StartServer, channel_to: Callable[[int], Channel]
) -> None:
    service = ScriptedRunService([End(8, 42)])
    port, _ = await start_server(service)

    watching = watch(channel_to(port), RUN_ID, 8, backoff=FAST)
    await collect(watching)
    assert watching.end == RunEnd(RUN_ID, 8, 42)
    assert watching.end.status_name == "42"


async def test_watch_raises_on_a_seq_gap_instead_of_skipping(
    start_server: StartServer, channel_to: Callable[[int], Channel]
) -> None:
    service = ScriptedRunService([Send([*RUN[:3], *RUN[4:]])])
    port, _ = await start_server(service)

    seen: list[RunEvent] = []
    with pytest.raises(SeqGapError, match="expected seq 4, received seq 5"):
        await drain_into(seen, watch(channel_to(port), RUN_ID, backoff=FAST))
    assert seqs(seen) == [1, 2, 3]


async def test_watch_raises_when_the_end_says_events_were_skipped(
    start_server: StartServer, channel_to: Callable[[int], Channel]
) -> None:
    service = ScriptedRunService([Send(RUN[:3]), End(8)])
    port, _ = await start_server(service)

    seen: list[RunEvent] = []
    with pytest.raises(SeqGapError, match="expected seq 4, received seq 8"):
        await drain_into(seen, watch(channel_to(port), RUN_ID, backoff=FAST))
    assert seqs(seen) == [1, 2, 3]
