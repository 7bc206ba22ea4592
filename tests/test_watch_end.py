"""WatchRun at and past the end of a run: every stream of a finished run says it ended."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import grpc
import pytest
from conftest import Harness, collect, edge, util_node, wait_for_event
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from runwire.v1 import events_pb2, flow_pb2, run_service_pb2

SUCCEEDED = events_pb2.RUN_STATUS_SUCCEEDED


def _gated_flow() -> flow_pb2.Flow:
    """A run that holds at an approval gate until the test resolves it."""
    gate = flow_pb2.Node(id="gate", approval=flow_pb2.ApprovalNode(message="go?"))
    return flow_pb2.Flow(
        name="gated",
        nodes=[gate, util_node("after", "set", value="done")],
        edges=[edge("gate", "after")],
    )


def _quick_flow() -> flow_pb2.Flow:
    return flow_pb2.Flow(
        name="quick",
        nodes=[util_node("a", "set", value=1), util_node("b", "set", value=2)],
        edges=[edge("a", "b")],
    )


async def _responses(harness: Harness, run_id: str, after_seq: int) -> list[Any]:
    request = run_service_pb2.WatchRunRequest(run_id=run_id, after_seq=after_seq)
    return [r async for r in harness.stub.WatchRun(request)]


def _error_info(exc: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(exc)
    assert status is not None
    infos = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            infos.append(info)
    assert len(infos) == 1
    return infos[0]


async def _resolve(harness: Harness, run_id: str) -> None:
    await harness.stub.ResolveApproval(
        run_service_pb2.ResolveApprovalRequest(run_id=run_id, node_id="gate", approve=True)
    )


def _subscribed(harness: Harness, run_id: str) -> asyncio.Event:
    """An event set when a WatchRun of the run subscribes to live chunks."""
    hub = harness.server.hub
    subscribed = asyncio.Event()
    subscribe = hub.subscribe

    def spy(watched: str) -> Any:
        if watched == run_id:
            subscribed.set()
        return subscribe(watched)

    hub.subscribe = spy  # type: ignore[method-assign]  # a spy on this test's hub only
    return subscribed


async def test_watch_run_whole_stream_ends_with_one_stream_end(harness: Harness) -> None:
    run = await harness.start(_quick_flow())
    responses = await _responses(harness, run.run_id, 0)
    events = [e for r in responses for e in r.events]
    ends = [r.stream_end for r in responses if r.HasField("stream_end")]
    assert events[-1].HasField("run_completed")
    assert responses[-1].HasField("stream_end"), "the last response carries the end"
    assert [(e.last_seq, e.status) for e in ends] == [(events[-1].seq, SUCCEEDED)]


async def test_watch_run_at_the_last_seq_answers_only_the_end(harness: Harness) -> None:
    """A resuming client that saw RunCompleted but not the stream's end asks
    for after_seq = last: it used to get an empty OK stream, which every
    client took for a cut stream and resumed forever."""
    run = await harness.start(_quick_flow())
    last = (await collect(harness.stub, run.run_id))[-1].seq
    responses = await _responses(harness, run.run_id, last)
    assert len(responses) == 1
    assert list(responses[0].events) == []
    assert (responses[0].stream_end.last_seq, responses[0].stream_end.status) == (last, SUCCEEDED)


async def test_watch_run_past_the_last_seq_of_a_finished_run_is_out_of_range(
    harness: Harness,
) -> None:
    run = await harness.start(_quick_flow())
    last = (await collect(harness.stub, run.run_id))[-1].seq
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _responses(harness, run.run_id, last + 5)
    assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
    info = _error_info(caught.value)
    assert (info.domain, info.reason) == ("runwire.v1", "AFTER_SEQ_BEYOND_END")
    assert dict(info.metadata) == {
        "run_id": run.run_id,
        "after_seq": str(last + 5),
        "last_seq": str(last),
        "status": "RUN_STATUS_SUCCEEDED",
    }


async def test_watch_run_resumed_after_the_run_finished_gets_the_rest_and_the_end(
    harness: Harness,
) -> None:
    """The run finishes while the watcher is between reconnects."""
    run = await harness.start(_gated_flow())
    requested = await wait_for_event(
        harness.stub, run.run_id, lambda e: e.HasField("approval_requested")
    )
    await _resolve(harness, run.run_id)
    final = await wait_for_event(harness.stub, run.run_id, lambda e: e.HasField("run_completed"))
    responses = await _responses(harness, run.run_id, requested.seq)
    events = [e for r in responses for e in r.events]
    assert [e.seq for e in events] == list(range(requested.seq + 1, final.seq + 1))
    assert responses[-1].stream_end.last_seq == final.seq


async def test_watch_run_far_beyond_a_live_run_ends_out_of_range_when_it_finishes(
    harness: Harness,
) -> None:
    """WatchRun(after_seq=10**9) on a live run used to skip the completing
    chunk as "already sent" and never end; it waits, then says where the run
    ended."""
    run = await harness.start(_gated_flow())
    await wait_for_event(harness.stub, run.run_id, lambda e: e.HasField("approval_requested"))
    subscribed = _subscribed(harness, run.run_id)
    watching = asyncio.ensure_future(_responses(harness, run.run_id, 10**9))
    await subscribed.wait()
    await _resolve(harness, run.run_id)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await watching
    assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
    info = _error_info(caught.value)
    last = (await harness.stored(run.run_id))[-1].seq
    assert (info.reason, info.metadata["last_seq"], info.metadata["status"]) == (
        "AFTER_SEQ_BEYOND_END",
        str(last),
        "RUN_STATUS_SUCCEEDED",
    )


async def test_watch_run_just_beyond_a_live_run_waits_for_the_events_past_it(
    harness: Harness,
) -> None:
    run = await harness.start(_gated_flow())
    requested = await wait_for_event(
        harness.stub, run.run_id, lambda e: e.HasField("approval_requested")
    )
    after = requested.seq + 1  # not committed yet: ApprovalResolved will be
    subscribed = _subscribed(harness, run.run_id)
    watching = asyncio.ensure_future(_responses(harness, run.run_id, after))
    await subscribed.wait()
    await _resolve(harness, run.run_id)
    responses = await watching
    stored = await harness.stored(run.run_id)
    assert [e for r in responses for e in r.events] == stored[after:]
    assert responses[-1].stream_end.last_seq == stored[-1].seq


async def test_watch_run_beyond_a_live_run_that_ends_exactly_there_gets_the_end(
    harness: Harness,
) -> None:
    """after_seq = the seq the run will end at: nothing to send but the end."""
    reference = await harness.start(_gated_flow())
    await wait_for_event(harness.stub, reference.run_id, lambda e: e.HasField("approval_requested"))
    await _resolve(harness, reference.run_id)
    length = len(await collect(harness.stub, reference.run_id))
    run = await harness.start(_gated_flow())
    await wait_for_event(harness.stub, run.run_id, lambda e: e.HasField("approval_requested"))
    subscribed = _subscribed(harness, run.run_id)
    watching = asyncio.ensure_future(_responses(harness, run.run_id, length))
    await subscribed.wait()
    await _resolve(harness, run.run_id)
    responses = await watching
    assert len(await harness.stored(run.run_id)) == length, "the same flow, the same stream"
    assert [list(r.events) for r in responses] == [[]]
    assert responses[0].stream_end.last_seq == length


async def _cli_watch(harness: Harness, run_id: str, after_seq: int) -> tuple[int, str, str]:
    """`runwire watch RUN --after-seq N --plain`, bounded so a loop fails instead of hanging."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runwire.cli", "watch", run_id, "--after-seq", str(after_seq),
        "--plain", "--addr", harness.addr,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_watch_at_and_past_the_end_of_a_finished_run_exits(harness: Harness) -> None:
    """`runwire watch RUN --after-seq LAST` used to reconnect forever with no
    backoff; at and past the end it now reports the final status and exits as
    a whole watch of the run would."""
    run = await harness.start(_quick_flow())
    last = (await collect(harness.stub, run.run_id))[-1].seq
    for after in (last, last + 5):
        code, out, err = await _cli_watch(harness, run.run_id, after)
        assert (code, err) == (0, ""), after
        assert out == f"run {run.run_id} SUCCEEDED: finished at seq {last}\n"


async def test_cli_watch_resumed_mid_run_prints_the_rest(harness: Harness) -> None:
    run = await harness.start(_quick_flow())
    events = await collect(harness.stub, run.run_id)
    code, out, _ = await _cli_watch(harness, run.run_id, len(events) - 2)
    assert code == 0
    lines = out.splitlines()
    assert [line.split()[0] for line in lines[:2]] == [str(len(events) - 1), str(len(events))]
    assert "SUCCEEDED" in lines[-1]


async def test_watch_run_beyond_a_run_on_another_server_settles_when_it_finishes(
    harness_factory: Any,
) -> None:
    """The watcher's server only hears NOTIFY wake-ups (no chunks): it reads
    the run row on each and answers OUT_OF_RANGE once the run has finished."""
    runner: Harness = await harness_factory()
    watcher: Harness = await harness_factory()
    run = await runner.start(_gated_flow())
    await wait_for_event(runner.stub, run.run_id, lambda e: e.HasField("approval_requested"))
    subscribed = _subscribed(watcher, run.run_id)
    watching = asyncio.ensure_future(_responses(watcher, run.run_id, 10**9))
    await subscribed.wait()
    await _resolve(runner, run.run_id)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await watching
    assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert _error_info(caught.value).metadata["status"] == "RUN_STATUS_SUCCEEDED"


async def test_watch_run_opens_with_one_store_read(harness: Harness) -> None:
    """A watcher's stream opens with one statement, the run's head and its first
    page of events together: no read of the run row before it (a round trip
    per watcher, which capped runs/s under many short runs). A live stream
    then reads nothing more; a finished run's replay also reads once."""
    store = harness.server.store
    assert store is not None
    run = await harness.start(_gated_flow())
    runs, pages = store.run_reads, store.event_reads
    events: list[events_pb2.RunEvent] = []
    request = run_service_pb2.WatchRunRequest(run_id=run.run_id)
    async for response in harness.stub.WatchRun(request):
        events.extend(response.events)
        if any(e.HasField("approval_requested") for e in response.events):
            assert (store.run_reads, store.event_reads) == (runs, pages + 1)
            runs = store.run_reads  # ResolveApproval reads the run itself
            await _resolve(harness, run.run_id)
            runs, pages = store.run_reads, store.event_reads
    assert events[-1].HasField("run_completed")
    assert (store.run_reads, store.event_reads) == (runs, pages), "live: no more reads"
    replay = await collect(harness.stub, run.run_id)
    assert [e.seq for e in replay] == [e.seq for e in events]
    assert (store.run_reads, store.event_reads) == (runs, pages + 1)


async def test_watch_run_of_an_unknown_run_is_not_found_and_leaves_no_watcher(
    harness: Harness,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(harness.stub, "no-such-run")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert harness.server.hub.watching == 0
