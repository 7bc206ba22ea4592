"""What an idle watcher keeps on the server: no copy of what it was sent, no
open SDK span (its span is made when the stream ends, and spans the stream).
Real gRPC over loopback and Postgres."""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import grpc
from conftest import Harness, edge, shell_node, wait_for_event

from runwire.store import frame_resume_after
from runwire.v1 import flow_pb2, run_service_pb2

LINES = 1_900  # a replay of ~200 KiB in one response (one page of 2 000 events, < 1 MiB)


def _gated(name: str) -> flow_pb2.Flow:
    return flow_pb2.Flow(
        name=name,
        nodes=[
            shell_node("count", "seq", "1", str(LINES)),
            flow_pb2.Node(id="gate", approval=flow_pb2.ApprovalNode(message="go?")),
        ],
        edges=[edge("count", "gate")],
    )


async def _caught_up(
    harness: Harness, run_id: str, **kwargs: Any
) -> tuple[Any, run_service_pb2.WatchRunResponse]:
    """A WatchRun stream read up to the open gate; returns it and its last response."""
    call = harness.stub.WatchRun(run_service_pb2.WatchRunRequest(run_id=run_id), **kwargs)
    while True:
        response = await call.read()
        assert isinstance(response, run_service_pb2.WatchRunResponse)
        if any(e.HasField("approval_requested") for e in response.events):
            return call, response


async def _until_waiting(harness: Harness, run_id: str) -> None:
    """Poll (a condition, not a timer) until the run's one watcher waits for news."""
    hub = harness.server.hub
    end = time.monotonic() + 30
    while True:
        subs = hub._subs.get(run_id, set())
        if subs and all(s._waiter is not None and not s._waiter.done() for s in subs):
            return
        assert time.monotonic() < end, "the watcher never went idle"
        await asyncio.sleep(0.01)


def _held(response: run_service_pb2.WatchRunResponse) -> int:
    """How many objects the garbage collector tracks refer to the bytes the
    server sent as `response` (bytes themselves are not tracked)."""
    size = response.ByteSize()
    tail = frame_resume_after(response.resume_after_seq)
    seen = 0
    for obj in gc.get_objects():
        for ref in gc.get_referents(obj):
            if type(ref) is bytes and len(ref) == size and ref.endswith(tail):
                seen += 1
    return seen


async def test_an_idle_watcher_holds_no_copy_of_its_replay(harness: Harness) -> None:
    run = await harness.start(_gated("held"))
    await wait_for_event(harness.stub, run.run_id, lambda e: e.HasField("approval_requested"))
    call, last = await _caught_up(harness, run.run_id)  # all of it from the store
    assert len(last.events) > LINES  # the whole replay in its last response
    await _until_waiting(harness, run.run_id)
    # That response went out; neither gRPC's stream loop nor the servicer's
    # frames keep it while the stream waits.
    assert _held(last) == 0
    call.cancel()
    await harness.stub.CancelRun(run_service_pb2.CancelRunRequest(run_id=run.run_id))


async def test_the_watch_span_is_made_at_the_end_and_spans_the_stream(harness: Harness) -> None:
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    parent = "b7ad6b7169203331"
    run = await harness.start(_gated("spanned"))
    began = time.time_ns()
    call, _ = await _caught_up(
        harness, run.run_id, metadata=(("traceparent", f"00-{trace_id}-{parent}-01"),)
    )
    await _until_waiting(harness, run.run_id)
    watching = [s for s in harness.spans.get_finished_spans() if s.name.endswith("/WatchRun")]
    assert watching == []  # nothing recorded while the stream is open
    idle_since = time.time_ns()
    await harness.stub.ResolveApproval(
        run_service_pb2.ResolveApprovalRequest(run_id=run.run_id, node_id="gate", approve=True)
    )
    while await call.read() is not grpc.aio.EOF:
        pass  # to the end of the run
    (span,) = [s for s in harness.spans.get_finished_spans() if s.name.endswith("/WatchRun")]
    assert format(span.context.trace_id, "032x") == trace_id
    assert span.parent is not None
    assert format(span.parent.span_id, "016x") == parent
    assert span.kind.name == "SERVER"
    assert span.attributes is not None
    assert span.attributes["runwire.run_id"] == run.run_id
    assert span.start_time is not None
    assert span.end_time is not None
    assert began <= span.start_time < idle_since < span.end_time
