"""Bounded events (promise 9): no event and no WatchRunResponse outgrows what a
client with gRPC's default 4 MiB receive limit accepts. Oversized values are
refused up front (StartRun), refused at render time (templates), or cut with
a marker (everything else); never emitted whole."""

from __future__ import annotations

import json

import asyncpg
import grpc
import pytest
from conftest import Harness, assert_grammar, util_node
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from runwire.engine import (
    MAX_EVENT_BYTES,
    MAX_JSON_BYTES,
    TRUNCATED_KEY,
    NodeRef,
    SpanIds,
    new_event,
)
from runwire.v1 import events_pb2, flow_pb2, run_service_pb2, run_service_pb2_grpc

# Control characters: JSON escapes each as \u00XX, six bytes for one.
CONTROL = "\x01" * 700_000


def _violations(exc: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(exc)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    for detail in status.details:
        if detail.Is(bad.DESCRIPTOR):
            detail.Unpack(bad)
    return [v.field for v in bad.field_violations]


async def _watch_with_default_limits(
    addr: str, run_id: str
) -> list[run_service_pb2.WatchRunResponse]:
    """WatchRun through a fresh channel with gRPC's default limits (4 MiB receive)."""
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = run_service_pb2_grpc.RunServiceStub(channel)
        return [r async for r in stub.WatchRun(run_service_pb2.WatchRunRequest(run_id=run_id))]


async def test_start_run_refuses_params_no_event_could_hold(harness: Harness) -> None:
    flow = flow_pb2.Flow(name="big", nodes=[util_node("a", "set", value=CONTROL)])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.start(flow)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(caught.value) == ["flow.nodes[0].action.params.value"]
    assert str(MAX_JSON_BYTES) in (caught.value.details() or "")


async def test_start_run_refuses_inputs_no_event_could_hold(harness: Harness) -> None:
    flow = flow_pb2.Flow(name="ok", nodes=[util_node("a", "set", value=1)])
    request = run_service_pb2.StartRunRequest(flow=flow)
    request.inputs.update({"blob": CONTROL})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.StartRun(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(caught.value) == ["inputs"]
    listed = await harness.stub.ListRuns(run_service_pb2.ListRunsRequest())
    assert list(listed.runs) == []  # nothing persisted


async def test_start_run_refuses_an_approval_message_no_event_could_hold(harness: Harness) -> None:
    node = flow_pb2.Node(id="gate", approval=flow_pb2.ApprovalNode(message=CONTROL))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.start(flow_pb2.Flow(name="big", nodes=[node]))
    assert _violations(caught.value) == ["flow.nodes[0].approval.message"]


async def test_template_output_is_bounded_at_render_time(harness: Harness) -> None:
    """`'x' * 50000000` is refused before it is computed; the node fails with
    TEMPLATE and a message naming the limit, and the run ends FAILED."""
    flow = flow_pb2.Flow(
        name="huge",
        nodes=[util_node("a", "set", value="{{ 'x' * 50000000 }}")],
    )
    events = await harness.events((await harness.start(flow)).run_id)
    failed = next(e for e in events if e.HasField("node_failed")).node_failed
    assert failed.error.reason == "TEMPLATE"
    assert str(MAX_JSON_BYTES) in failed.error.message
    assert events[-1].run_completed.status == events_pb2.RUN_STATUS_FAILED


async def test_oversized_values_are_cut_with_a_marker_and_every_event_fits(
    harness: Harness,
) -> None:
    """Four templates of 200 KB each render params (and an output) no event can
    hold: NodeStarted and NodeSucceeded carry the marker object instead, and a
    client with default limits receives the whole stream."""
    value = dict.fromkeys("abcd", "{{ inputs.blob }}")
    flow = flow_pb2.Flow(name="wide", nodes=[util_node("a", "set", value=value)])
    request = run_service_pb2.StartRunRequest(flow=flow)
    request.inputs.update({"blob": "y" * 200_000})
    run = (await harness.stub.StartRun(request)).run
    responses = await _watch_with_default_limits(harness.addr, run.run_id)
    events = [e for r in responses for e in r.events]
    assert_grammar(events)
    assert max(e.ByteSize() for e in events) <= MAX_EVENT_BYTES
    assert max(r.ByteSize() for r in responses) <= (1 << 20) + 64 * 1024
    started = next(e for e in events if e.HasField("node_started")).node_started
    assert TRUNCATED_KEY in json.loads(started.params_json)
    succeeded = next(e for e in events if e.HasField("node_succeeded")).node_succeeded
    marker = json.loads(succeeded.output_json)[TRUNCATED_KEY]
    assert marker["bytes"] > MAX_JSON_BYTES
    assert events[-1].run_completed.status == events_pb2.RUN_STATUS_SUCCEEDED


def test_new_event_cuts_an_oversized_log_line_with_the_truncated_marker() -> None:
    line = "z" * (3 * MAX_EVENT_BYTES)
    event = new_event(
        "run_1",
        7,
        "node_log",
        events_pb2.NodeLog(stream=events_pb2.LOG_STREAM_STDOUT, line=line, line_number=1),
        span=SpanIds("0" * 32, "0" * 16),
        node=NodeRef("a", 1, 1),
    )
    assert event.ByteSize() <= MAX_EVENT_BYTES
    assert event.node_log.truncated
    assert event.node_log.line.endswith(f"[truncated: {len(line)} bytes]")
    assert event.node_log.line.startswith("zzz")


async def test_watch_run_bounds_an_oversized_event_stored_before_the_limit(
    harness: Harness,
) -> None:
    """A stream written before events were bounded stays readable: the stored
    5 MB event reaches a default client cut, never as RESOURCE_EXHAUSTED."""
    flow = flow_pb2.Flow(name="old", nodes=[util_node("a", "set", value=1)])
    run = await harness.start(flow)
    events = await harness.events(run.run_id)
    started = next(e for e in events if e.HasField("node_started"))
    started.node_started.params_json = json.dumps({"value": "\\u0001" * 900_000})
    assert started.ByteSize() > 4 << 20
    conn = await asyncpg.connect(harness.database_url)
    try:
        await conn.execute(
            "UPDATE events SET event = $3 WHERE run_id = $1 AND seq = $2",
            run.run_id,
            started.seq,
            started.SerializeToString(deterministic=True),
        )
    finally:
        await conn.close()
    responses = await _watch_with_default_limits(harness.addr, run.run_id)
    got = [e for r in responses for e in r.events]
    assert [e.seq for e in got] == [e.seq for e in events]
    cut = next(e for e in got if e.HasField("node_started")).node_started
    assert json.loads(cut.params_json)[TRUNCATED_KEY]["bytes"] > 4 << 20
