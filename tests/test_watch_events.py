"""Filtered WatchRun and WatchEvents across runs: selection, resume, exactly once,
cursor errors, draining and takeovers (real servers, real Postgres)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from conftest import Harness, collect, edge, error_reason, shell_node, util_node, wait_for_event

from runwire.store import encode_cursor, log_bounds, mark_pruned
from runwire.v1 import events_pb2, flow_pb2, run_service_pb2, run_service_pb2_grpc

Events = list[events_pb2.RunEvent]


def logging_flow(name: str, lines: int = 3) -> flow_pb2.Flow:
    return flow_pb2.Flow(
        name=name,
        nodes=[
            shell_node("count", "seq", "1", str(lines)),
            util_node("shape", "set", value={"ok": True}),
            shell_node("more", "seq", "1", "2"),
        ],
        edges=[edge("count", "shape"), edge("shape", "more")],
    )


def _kind(e: events_pb2.RunEvent) -> str:
    return e.WhichOneof("event") or ""


async def _watch_run(
    stub: run_service_pb2_grpc.RunServiceStub, run_id: str, after_seq: int, flt: Any
) -> list[run_service_pb2.WatchRunResponse]:
    return [
        r
        async for r in stub.WatchRun(
            run_service_pb2.WatchRunRequest(run_id=run_id, after_seq=after_seq, filter=flt)
        )
    ]


# -- filtered WatchRun -------------------------------------------------------------


async def test_watch_run_filter_selects_kinds_and_nodes_and_resumes(harness: Harness) -> None:
    run = await harness.start(logging_flow("f", lines=4))
    everything = await collect(harness.stub, run.run_id)
    flt = run_service_pb2.EventFilter(kinds=["node_log"], node_ids=["count"])
    wanted = [
        e
        for e in everything
        if _kind(e) == "run_completed" or (_kind(e) == "node_log" and e.node_id == "count")
    ]
    assert len(wanted) == 5  # four lines and RunCompleted
    for after in range(everything[-1].seq + 1):
        responses = await _watch_run(harness.stub, run.run_id, after, flt)
        got = [e for r in responses for e in r.events]
        assert got == [e for e in wanted if e.seq > after], after
        # resume_after_seq only grows; a response's events are at or below it.
        marks = [r.resume_after_seq for r in responses if not r.HasField("stream_end")]
        assert marks == sorted(marks)
        for r in responses:
            assert all(e.seq <= r.resume_after_seq for e in r.events)
        assert responses[-1].HasField("stream_end")
        # Resuming from any resume_after_seq given gives exactly the rest.
        for r in responses[:-1]:
            rest = await _watch_run(harness.stub, run.run_id, r.resume_after_seq, flt)
            assert [e for x in rest for e in x.events] == [
                e for e in wanted if e.seq > r.resume_after_seq
            ]


async def test_watch_run_filter_live_sends_progress_and_run_completed(harness: Harness) -> None:
    """A live filtered watcher: skipped chunks advance resume_after_seq; RunCompleted
    is delivered though the filter names other kinds."""
    gate = flow_pb2.Node(id="ok")
    gate.approval.message = "go?"
    flow = flow_pb2.Flow(
        name="live",
        nodes=[gate, shell_node("after", "seq", "1", "2")],
        edges=[edge("ok", "after")],
    )
    run = await harness.start(flow)
    # The gate must be pending before the test resolves it: a filtered
    # stream's first response may come before the engine opened it.
    await wait_for_event(harness.stub, run.run_id, lambda e: e.HasField("approval_requested"))
    flt = run_service_pb2.EventFilter(kinds=["ai_invocation"])  # selects nothing here
    stream = harness.stub.WatchRun(run_service_pb2.WatchRunRequest(run_id=run.run_id, filter=flt))
    first = await stream.read()
    assert list(first.events) == []  # progress only
    assert first.resume_after_seq > 0
    await harness.stub.ResolveApproval(
        run_service_pb2.ResolveApprovalRequest(run_id=run.run_id, node_id="ok", approve=True)
    )
    rest = [first]
    while (r := await stream.read()) is not grpc.aio.EOF:
        rest.append(r)
    got = [e for r in rest for e in r.events]
    assert [_kind(e) for e in got] == ["run_completed"]
    assert rest[-1].stream_end.last_seq == got[0].seq


async def test_watch_run_without_filter_says_resume_after_seq(harness: Harness) -> None:
    run = await harness.start(logging_flow("u"))
    responses = await _watch_run(harness.stub, run.run_id, 0, None)
    for r in responses[:-1]:
        assert r.resume_after_seq == r.events[-1].seq
    assert responses[-1].resume_after_seq == responses[-1].stream_end.last_seq > 0


# -- WatchEvents ---------------------------------------------------------------------


class Reader:
    """One WatchEvents call: events and the cursor after each response."""

    def __init__(self, stub: run_service_pb2_grpc.RunServiceStub, **request: Any) -> None:
        self.call = stub.WatchEvents(run_service_pb2.WatchEventsRequest(**request))
        self.events: Events = []
        self.cursor = request.get("cursor", "")

    async def until(self, done: Callable[[Events], bool]) -> Events:
        while not done(self.events):
            response = await self.call.read()
            assert response is not grpc.aio.EOF, "the stream ended"
            self.events.extend(response.events)
            assert response.cursor
            self.cursor = response.cursor
        return self.events

    def cancel(self) -> None:
        self.call.cancel()


def completed(n: int) -> Callable[[Events], bool]:
    return lambda events: sum(_kind(e) == "run_completed" for e in events) >= n


def _ids(events: Events) -> list[tuple[str, int]]:
    return [(e.run_id, e.seq) for e in events]


async def _log_order(harness: Harness) -> list[tuple[str, int]]:
    pool = harness.server.store.pool  # type: ignore[union-attr]
    rows = await pool.fetch("SELECT run_id, seq FROM events ORDER BY pos")
    return [(r["run_id"], r["seq"]) for r in rows]


async def test_watch_events_streams_every_run_in_commit_order(harness: Harness) -> None:
    reader = Reader(harness.stub)  # STREAM_START_UNSPECIFIED: from now on
    labelled = Reader(
        harness.stub,
        filter=run_service_pb2.RunEventsFilter(
            labels={"team": "a"}, events=run_service_pb2.EventFilter(kinds=["node_log"])
        ),
    )
    runs = [
        await harness.start(logging_flow(f"r{i}"), labels={"team": "a" if i % 2 else "b"})
        for i in range(4)
    ]
    events = await reader.until(completed(4))
    assert _ids(events) == await _log_order(harness)
    for run in runs:
        mine = [e for e in events if e.run_id == run.run_id]
        assert mine == await harness.events(run.run_id)  # the run's whole stream, in seq order
    chosen = await labelled.until(completed(2))
    expected = [
        e
        for e in events
        if e.run_id in {runs[1].run_id, runs[3].run_id}
        and _kind(e) in ("node_log", "run_completed")
    ]
    assert chosen == expected
    reader.cancel()
    labelled.cancel()

    # From the earliest retained event, and by flow name and run status.
    earliest = Reader(
        harness.stub,
        start=run_service_pb2.STREAM_START_EARLIEST,
        filter=run_service_pb2.RunEventsFilter(
            flow_name="r2", run_statuses=[events_pb2.RUN_STATUS_SUCCEEDED]
        ),
    )
    assert await earliest.until(completed(1)) == [e for e in events if e.run_id == runs[2].run_id]
    earliest.cancel()


async def test_watch_events_resumes_from_any_cursor_exactly_once(harness: Harness) -> None:
    first = Reader(harness.stub, start=run_service_pb2.STREAM_START_EARLIEST)
    for i in range(3):
        await harness.start(logging_flow(f"c{i}", lines=5))
    everything = await first.until(completed(3))
    first.cancel()
    # Cut after each response in turn: the rest from its cursor completes it exactly.
    cuts = Reader(harness.stub, start=run_service_pb2.STREAM_START_EARLIEST)
    seen: Events = []
    while len(seen) < len(everything):
        response = await cuts.call.read()
        seen.extend(response.events)
        resumed = Reader(harness.stub, cursor=response.cursor)
        left = len(everything) - len(seen)
        rest = await resumed.until(lambda got, left=left: len(got) >= left)
        resumed.cancel()
        assert seen + rest == everything
    cuts.cancel()


async def test_watch_events_says_its_start_at_once_so_a_cut_before_any_event_loses_none(
    harness: Harness,
) -> None:
    call = harness.stub.WatchEvents(run_service_pb2.WatchEventsRequest())  # LATEST
    # Nothing is committed yet: the first response is the starting cursor alone.
    first = await asyncio.wait_for(call.read(), 10)  # a guard: without it, a hang
    assert list(first.events) == []
    assert first.cursor
    call.cancel()  # cut before any event
    run = await harness.start(logging_flow("late"))
    stored = await harness.events(run.run_id)
    resumed = Reader(harness.stub, cursor=first.cursor)
    assert await resumed.until(completed(1)) == stored
    resumed.cancel()


async def test_watch_events_cursor_errors(harness: Harness) -> None:
    await collect(harness.stub, (await harness.start(logging_flow("e"))).run_id)
    pool = harness.server.store.pool  # type: ignore[union-attr]
    _, latest = await log_bounds(pool)

    async def fails(request: run_service_pb2.WatchEventsRequest) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in harness.stub.WatchEvents(request):
                pass
        return caught.value

    err = await fails(run_service_pb2.WatchEventsRequest(cursor="not-a-cursor"))
    assert (err.code(), error_reason(err)) == (grpc.StatusCode.INVALID_ARGUMENT, "CURSOR_INVALID")
    err = await fails(run_service_pb2.WatchEventsRequest(cursor=encode_cursor(latest + 1)))
    assert (err.code(), error_reason(err)) == (grpc.StatusCode.INVALID_ARGUMENT, "CURSOR_INVALID")
    await mark_pruned(pool, 3)
    err = await fails(run_service_pb2.WatchEventsRequest(cursor=encode_cursor(2)))
    assert (err.code(), error_reason(err)) == (grpc.StatusCode.OUT_OF_RANGE, "CURSOR_EXPIRED")
    # At the horizon is fine, and EARLIEST starts there.
    at = Reader(harness.stub, cursor=encode_cursor(3))
    rest = await at.until(completed(1))
    at.cancel()
    earliest = Reader(harness.stub, start=run_service_pb2.STREAM_START_EARLIEST)
    assert await earliest.until(completed(1)) == rest
    earliest.cancel()
    assert rest[0].seq == 4


async def test_watch_events_from_another_server_and_through_a_takeover(
    harness_factory: Any,
) -> None:
    """A run started on one server, taken over by another mid-node, read through a
    third: every event once, in commit order, the takeover's included."""
    reader_h: Harness = await harness_factory()
    reader = Reader(reader_h.stub)
    first: Harness = await harness_factory(lease_seconds=0.5)
    flow = flow_pb2.Flow(
        name="takeover",
        nodes=[shell_node("once", "echo", "hi"), shell_node("long", "sleep", "2")],
        edges=[edge("once", "long")],
    )
    run = await first.start(flow)
    await reader.until(
        lambda evs: any(e.node_id == "long" and _kind(e) == "node_started" for e in evs)
    )
    await first.server.stop(grace=0.5)  # releases the lease: the next server claims the run
    await harness_factory(lease_seconds=0.5)
    events = await reader.until(completed(1))
    assert _ids(events) == await _log_order(reader_h)
    assert events == await reader_h.events(run.run_id)
    assert [e.node_id for e in events if _kind(e) == "node_started"] == ["once", "long", "long"]
    reader.cancel()


async def test_watch_events_ends_unavailable_on_drain(harness: Harness) -> None:
    reader = Reader(harness.stub)
    await harness.start(logging_flow("d"))
    await reader.until(completed(1))
    harness.server.service.close_streams()  # type: ignore[union-attr]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await reader.until(lambda _e: False)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_watch_events_shares_the_watchers_admission_bound(harness_factory: Any) -> None:
    h: Harness = await harness_factory(max_watchers=1)
    first = Reader(h.stub)
    await h.start(logging_flow("adm"))
    await first.until(completed(1))  # the first stream holds the one place
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in h.stub.WatchEvents(run_service_pb2.WatchEventsRequest()):
            pass
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_reason(caught.value) == "OVERLOADED"
    first.cancel()
