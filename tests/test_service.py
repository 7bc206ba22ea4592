"""RunService over real gRPC on loopback, a real Postgres and real subprocesses."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import (
    Harness,
    assert_grammar,
    cases,
    collect,
    edge,
    shell_node,
    util_node,
    wait_for_event,
)
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from runwire.v1 import events_pb2, flow_pb2, run_service_pb2, run_service_pb2_grpc

FAILURE = flow_pb2.EDGE_CONDITION_FAILURE
ALWAYS = flow_pb2.EDGE_CONDITION_ALWAYS


def _details(
    exc: grpc.aio.AioRpcError,
) -> tuple[error_details_pb2.ErrorInfo, list[tuple[str, str]]]:
    status = rpc_status.from_call(exc)
    assert status is not None, "error carries no google.rpc.Status details"
    info = error_details_pb2.ErrorInfo()
    violations: list[tuple[str, str]] = []
    infos = 0
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
            infos += 1
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = [(v.field, v.description) for v in bad.field_violations]
    assert infos == 1, "every error carries exactly one ErrorInfo"
    assert info.domain == "runwire.v1"
    return info, violations


async def _error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def three_node_flow(name: str = "three") -> flow_pb2.Flow:
    return flow_pb2.Flow(
        name=name,
        nodes=[
            shell_node("build", "echo", "built"),
            util_node("shape", "set", value={"ok": True}),
            shell_node("test", "seq", "1", "3"),
        ],
        edges=[edge("build", "shape"), edge("shape", "test")],
    )


async def test_start_run_runs_flow_to_one_run_completed(harness: Harness) -> None:
    run = await harness.start(three_node_flow(), labels={"team": "infra"})
    assert run.status == events_pb2.RUN_STATUS_PENDING
    events = await harness.events(run.run_id)
    assert cases(events)[0] == "run_started"
    assert cases(events).count("run_completed") == 1
    completed = events[-1].run_completed
    assert completed.status == events_pb2.RUN_STATUS_SUCCEEDED
    assert completed.succeeded_node_count == 3
    logs = [e.node_log.line for e in events if e.HasField("node_log")]
    assert logs == ["built", "1", "2", "3"]
    # Order follows the edges.
    started = [e.node_id for e in events if e.HasField("node_started")]
    assert started == ["build", "shape", "test"]
    # Durable before visible: what was streamed is exactly what is stored.
    assert events == await harness.stored(run.run_id)
    got = (await harness.stub.GetRun(run_service_pb2.GetRunRequest(run_id=run.run_id))).run
    assert got.status == events_pb2.RUN_STATUS_SUCCEEDED
    assert got.last_seq == events[-1].seq
    assert got.succeeded_node_count == 3
    assert got.HasField("end_time")
    assert dict(got.labels) == {"team": "infra"}


async def test_start_run_rejects_invalid_flow_with_field_violations(harness: Harness) -> None:
    flow = flow_pb2.Flow(
        name="bad",
        nodes=[
            util_node("a", "set", value=1),
            util_node("a", "set", value=2),
            util_node("c", "nope"),
            flow_pb2.Node(id="bad id\u202e"),
        ],
        edges=[edge("a", "ghost")],
    )
    flow.nodes[0].timeout.FromSeconds(-1)
    exc = await _error(harness.stub.StartRun(run_service_pb2.StartRunRequest(flow=flow)))
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, violations = _details(exc)
    assert info.reason == "FLOW_INVALID"
    fields = [f for f, _ in violations]
    assert fields == [
        "flow.nodes[0].timeout",
        "flow.nodes[1].id",
        "flow.nodes[2].action.action",
        "flow.nodes[3].id",
        "flow.nodes[3].kind",
        "flow.edges[0].target",
    ]
    # Nothing persisted.
    listed = await harness.stub.ListRuns(run_service_pb2.ListRunsRequest())
    assert list(listed.runs) == []


async def test_start_run_checks_params_against_the_action_schema(harness: Harness) -> None:
    node = util_node("wait", "sleep", seconds="soon")
    flow = flow_pb2.Flow(name="schema", nodes=[node, shell_node("sh", "definitely-not-allowed")])
    exc = await _error(harness.stub.StartRun(run_service_pb2.StartRunRequest(flow=flow)))
    _, violations = _details(exc)
    assert [f for f, _ in violations] == [
        "flow.nodes[0].action.params.seconds",
        "flow.nodes[1].action.params.argv[0]",
    ]


async def test_start_run_refuses_shell_when_disabled(harness_factory: Any) -> None:
    h: Harness = await harness_factory(shell_allow=())
    flow = flow_pb2.Flow(name="sh", nodes=[shell_node("a", "echo", "hi")])
    exc = await _error(h.stub.StartRun(run_service_pb2.StartRunRequest(flow=flow)))
    assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
    info, _ = _details(exc)
    assert info.reason == "ADAPTER_DISABLED"
    assert "flow.nodes[0].action.adapter" in exc.details()
    assert list((await h.stub.ListRuns(run_service_pb2.ListRunsRequest())).runs) == []


async def test_start_run_request_id_is_idempotent(harness: Harness) -> None:
    flow = three_node_flow()
    first = await harness.start(flow, request_id="req-1")
    again = await harness.start(flow, request_id="req-1")
    assert again.run_id == first.run_id
    flow.name = "different"
    exc = await _error(
        harness.stub.StartRun(run_service_pb2.StartRunRequest(flow=flow, request_id="req-1"))
    )
    assert exc.code() == grpc.StatusCode.ALREADY_EXISTS
    info, _ = _details(exc)
    assert info.reason == "REQUEST_ID_REUSED"
    assert info.metadata["run_id"] == first.run_id
    await harness.events(first.run_id)


async def test_unknown_run_is_not_found_everywhere(harness: Harness) -> None:
    stub = harness.stub
    for call in (
        stub.GetRun(run_service_pb2.GetRunRequest(run_id="run_missing")),
        stub.PauseRun(run_service_pb2.PauseRunRequest(run_id="run_missing")),
        stub.CancelRun(run_service_pb2.CancelRunRequest(run_id="run_missing")),
        collect(stub, "run_missing"),
    ):
        exc = await _error(call)
        assert exc.code() == grpc.StatusCode.NOT_FOUND
        assert _details(exc)[0].reason == "RUN_NOT_FOUND"


async def test_watch_run_rejects_negative_after_seq(harness: Harness) -> None:
    run = await harness.start(three_node_flow())
    exc = await _error(collect(harness.stub, run.run_id, after_seq=-1))
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _details(exc)[1] == [("after_seq", "must not be negative, got -1")]
    await harness.events(run.run_id)


async def test_list_runs_pages_and_filters(harness: Harness) -> None:
    ids = []
    for i in range(5):
        run = await harness.start(
            three_node_flow(f"flow{i}"), labels={"parity": "even" if i % 2 == 0 else "odd"}
        )
        ids.append(run.run_id)
        await harness.events(run.run_id)
    seen: list[str] = []
    token = ""
    while True:
        page = await harness.stub.ListRuns(
            run_service_pb2.ListRunsRequest(page_size=2, page_token=token)
        )
        assert len(page.runs) <= 2
        seen += [r.run_id for r in page.runs]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(ids))
    even = await harness.stub.ListRuns(
        run_service_pb2.ListRunsRequest(
            filter='labels.parity = "even" AND status = RUN_STATUS_SUCCEEDED'
        )
    )
    assert [r.run_id for r in even.runs] == [ids[4], ids[2], ids[0]]
    none = await harness.stub.ListRuns(run_service_pb2.ListRunsRequest(filter="status = FAILED"))
    assert list(none.runs) == []
    exc = await _error(
        harness.stub.ListRuns(run_service_pb2.ListRunsRequest(filter="colour = blue"))
    )
    assert _details(exc)[0].reason == "FILTER_INVALID"
    exc = await _error(
        harness.stub.ListRuns(run_service_pb2.ListRunsRequest(page_token="garbage!"))
    )
    assert _details(exc)[0].reason == "PAGE_TOKEN_INVALID"
    first = await harness.stub.ListRuns(run_service_pb2.ListRunsRequest(page_size=1))
    exc = await _error(
        harness.stub.ListRuns(
            run_service_pb2.ListRunsRequest(
                page_size=1, page_token=first.next_page_token, filter="status = FAILED"
            )
        )
    )
    assert _details(exc)[1] == [("page_token", "page token was issued for a different filter")]


async def test_validate_flow_checks_without_starting(harness: Harness) -> None:
    response = await harness.stub.ValidateFlow(
        run_service_pb2.ValidateFlowRequest(flow=three_node_flow())
    )
    assert response.node_count == 3
    assert list(response.root_node_ids) == ["build"]
    assert len(response.flow_digest) == 64
    cyclic = three_node_flow()
    cyclic.edges.append(edge("test", "build"))
    exc = await _error(harness.stub.ValidateFlow(run_service_pb2.ValidateFlowRequest(flow=cyclic)))
    assert _details(exc)[1] == [
        (
            "flow.edges[2]",
            "edges form a cycle build -> shape -> test -> build; set max_visits on node 'build' to bound the loop",
        )
    ]
    assert list((await harness.stub.ListRuns(run_service_pb2.ListRunsRequest())).runs) == []


async def test_failure_edges_route_and_unhandled_failure_fails_run(harness: Harness) -> None:
    flow = flow_pb2.Flow(
        name="routing",
        nodes=[
            shell_node("check", "false"),
            util_node("deploy", "set", value="never"),
            util_node("handler", "set", value="handled"),
            util_node("cleanup", "set", value="always"),
        ],
        edges=[
            edge("check", "deploy"),
            edge("check", "handler", FAILURE),
            edge("check", "cleanup", ALWAYS),
        ],
    )
    events = await harness.events((await harness.start(flow)).run_id)
    by_node = {
        e.node_id: cases([e])[0] for e in events if e.node_id and not e.HasField("node_started")
    }
    assert by_node == {
        "check": "node_failed",
        "deploy": "node_skipped",
        "handler": "node_succeeded",
        "cleanup": "node_succeeded",
    }
    skipped = next(e for e in events if e.HasField("node_skipped"))
    assert skipped.node_skipped.reason == "upstream 'check' failed; the edge needs success"
    assert events[-1].run_completed.status == events_pb2.RUN_STATUS_SUCCEEDED

    unhandled = flow_pb2.Flow(
        name="unhandled",
        nodes=[shell_node("check", "false"), util_node("after", "set", value=1)],
        edges=[edge("check", "after")],
    )
    events = await harness.events((await harness.start(unhandled)).run_id)
    final = events[-1].run_completed
    assert final.status == events_pb2.RUN_STATUS_FAILED
    assert final.error.reason == "NODE_FAILED"
    failed = next(e for e in events if e.HasField("node_failed"))
    assert failed.node_failed.error.exit_code == 1
    assert failed.node_failed.error.reason == "EXIT_STATUS"


async def test_independent_branches_run_concurrently_up_to_max_parallel(harness: Harness) -> None:
    flow = flow_pb2.Flow(
        name="fanout",
        nodes=[util_node(f"n{i}", "sleep", seconds=0.3) for i in range(4)],
        settings=flow_pb2.FlowSettings(max_parallel=2),
    )
    events = await harness.events((await harness.start(flow)).run_id)
    running = peak = 0
    for e in events:
        if e.HasField("node_started"):
            running += 1
            peak = max(peak, running)
        elif e.HasField("node_succeeded"):
            running -= 1
    assert peak == 2


async def test_shell_node_timeout_kills_and_fails_attempt(harness: Harness) -> None:
    node = shell_node("slow", "sleep", "30")
    node.timeout.FromMilliseconds(300)
    events = await harness.events(
        (await harness.start(flow_pb2.Flow(name="t", nodes=[node]))).run_id
    )
    failed = next(e for e in events if e.HasField("node_failed")).node_failed
    assert failed.error.reason == "TIMEOUT"
    assert failed.duration.ToTimedelta().total_seconds() < 10


async def test_retries_emit_node_retrying_and_new_attempts(harness: Harness) -> None:
    node = shell_node("flaky", "false")
    node.retry_policy.max_attempts = 3
    node.retry_policy.initial_backoff.FromMilliseconds(10)
    events = await harness.events(
        (await harness.start(flow_pb2.Flow(name="r", nodes=[node]))).run_id
    )
    sequence = [(cases([e])[0], e.attempt) for e in events if e.node_id == "flaky"]
    assert sequence == [
        ("node_started", 1), ("node_failed", 1), ("node_retrying", 1),
        ("node_started", 2), ("node_failed", 2), ("node_retrying", 2),
        ("node_started", 3), ("node_failed", 3),
    ]  # fmt: skip
    assert [e.node_failed.will_retry for e in events if e.HasField("node_failed")] == [
        True,
        True,
        False,
    ]


async def test_heartbeats_report_output_bytes_while_node_runs(harness: Harness) -> None:
    node = shell_node("busy", "sh", "-c", "echo one; sleep 0.7; echo two")
    events = await harness.events(
        (await harness.start(flow_pb2.Flow(name="hb", nodes=[node]))).run_id
    )
    beats = [e.node_heartbeat for e in events if e.HasField("node_heartbeat")]
    assert beats, "a node running longer than the heartbeat interval emits NodeHeartbeat"
    assert beats[0].output_bytes == 4  # "one\n"
    assert all(b.elapsed.ToTimedelta().total_seconds() > 0 for b in beats)


async def test_watch_run_from_every_after_seq_yields_exact_suffix(harness: Harness) -> None:
    flow = flow_pb2.Flow(name="many", nodes=[shell_node("count", "seq", "1", "60")])
    run = await harness.start(flow)
    full = await harness.events(run.run_id)
    assert len(full) >= 50
    for after in range(len(full) + 1):
        suffix = await harness.events(run.run_id, after_seq=after)
        assert suffix == full[after:], f"after_seq={after}"


async def test_watch_run_reconnect_mid_stream_resumes_exactly_once(harness: Harness) -> None:
    flow = flow_pb2.Flow(
        name="live",
        nodes=[shell_node("talk", "seq", "1", "40"), shell_node("wait", "sleep", "1")],
        edges=[edge("talk", "wait")],
    )
    run = await harness.start(flow)
    received: list[events_pb2.RunEvent] = []
    call = harness.stub.WatchRun(run_service_pb2.WatchRunRequest(run_id=run.run_id))
    async for response in call:
        received.extend(response.events)
        if any(e.HasField("node_log") and e.node_log.line == "20" for e in received):
            break
    call.cancel()  # disconnect mid-stream
    received += await collect(harness.stub, run.run_id, after_seq=received[-1].seq)
    assert_grammar(received)
    assert received == await harness.stored(run.run_id)


async def test_slow_watcher_never_slows_run_and_catches_up(harness_factory: Any) -> None:
    """A watcher that stops reading must not hold the run back; its bounded
    queue overflows and it catches up from the store, missing nothing."""
    h: Harness = await harness_factory(watcher_queue_chunks=2)
    # Kilobyte lines over many commits: many chunks, and more bytes than the
    # HTTP/2 window holds, so the unread stream pushes back on the server.
    loop = "i=0; while [ $i -lt 400 ]; do i=$((i+1)); printf '%01000d\\n' $i; sleep 0.002; done"
    flow = flow_pb2.Flow(name="chatty", nodes=[shell_node("spam", "sh", "-c", loop)])
    run = await h.start(flow)
    # No BDP probing: the HTTP/2 window stays small, so an unread stream pushes
    # back on the server quickly instead of buffering megabytes in transit.
    slow_channel = grpc.aio.insecure_channel(h.addr, options=[("grpc.http2.bdp_probe", 0)])
    slow = run_service_pb2_grpc.RunServiceStub(slow_channel).WatchRun(
        run_service_pb2.WatchRunRequest(run_id=run.run_id)
    )
    first = await slow.read()  # the slow watcher is subscribed, then stalls
    # The run completes while the slow watcher reads nothing at all.
    done = await wait_for_event(h.stub, run.run_id, lambda e: e.HasField("run_completed"))
    assert done.run_completed.status == events_pb2.RUN_STATUS_SUCCEEDED
    received = list(first.events)
    while (response := await slow.read()) is not grpc.aio.EOF:
        received.extend(response.events)
    assert_grammar(received)
    stored = await h.stored(run.run_id)
    assert len(stored) > 400
    assert received == stored
    assert h.server.hub.overflows > 0, "the slow watcher's queue should have overflowed"
    await slow_channel.close()


async def test_pause_and_resume_take_effect_at_node_boundaries(harness: Harness) -> None:
    flow = flow_pb2.Flow(
        name="pausable",
        nodes=[shell_node("first", "sleep", "1"), util_node("second", "set", value=2)],
        edges=[edge("first", "second")],
    )
    run = await harness.start(flow)
    await wait_for_event(harness.stub, run.run_id, lambda e: e.HasField("node_started"))
    paused = await harness.stub.PauseRun(
        run_service_pb2.PauseRunRequest(run_id=run.run_id, reason="lunch")
    )
    assert paused.run.run_id == run.run_id
    await harness.stub.PauseRun(run_service_pb2.PauseRunRequest(run_id=run.run_id))  # idempotent
    event = await wait_for_event(harness.stub, run.run_id, lambda e: e.HasField("run_paused"))
    so_far = [e for e in await harness.stored(run.run_id) if e.seq <= event.seq]
    assert [e.node_id for e in so_far if e.HasField("node_succeeded")] == ["first"]
    assert not any(e.node_id == "second" for e in so_far)
    assert event.run_paused.reason == "lunch"
    got = await harness.stub.GetRun(run_service_pb2.GetRunRequest(run_id=run.run_id))
    assert got.run.status == events_pb2.RUN_STATUS_PAUSED
    await harness.stub.ResumeRun(run_service_pb2.ResumeRunRequest(run_id=run.run_id))
    events = await harness.events(run.run_id)
    order = cases(events)
    assert order.index("run_paused") < order.index("run_resumed") < order.index("run_completed")
    transitions = [
        (e.run_status_changed.previous_status, e.run_status_changed.new_status)
        for e in events
        if e.HasField("run_status_changed")
    ]
    assert transitions == [
        (events_pb2.RUN_STATUS_PENDING, events_pb2.RUN_STATUS_RUNNING),
        (events_pb2.RUN_STATUS_RUNNING, events_pb2.RUN_STATUS_PAUSED),
        (events_pb2.RUN_STATUS_PAUSED, events_pb2.RUN_STATUS_RUNNING),
        (events_pb2.RUN_STATUS_RUNNING, events_pb2.RUN_STATUS_SUCCEEDED),
    ]
    exc = await _error(harness.stub.PauseRun(run_service_pb2.PauseRunRequest(run_id=run.run_id)))
    assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _details(exc)[0].reason == "RUN_FINISHED"


def _processes_with(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


async def test_cancel_kills_running_process_group(harness: Harness) -> None:
    # sleep sums its arguments: the second one only makes the processes findable.
    marker = f"0.{os.getpid()}{id(harness) % 1000}"
    node = shell_node("hang", "sh", "-c", f"sleep 300 {marker} & echo ready; sleep 301 {marker}")
    flow = flow_pb2.Flow(
        name="cancel-me",
        nodes=[node, util_node("next", "set", value=1)],
        edges=[edge("hang", "next")],
    )
    run = await harness.start(flow)
    await wait_for_event(
        harness.stub, run.run_id, lambda e: e.HasField("node_log") and e.node_log.line == "ready"
    )
    assert len(_processes_with(marker)) == 3  # sh and its two sleeps
    response = await harness.stub.CancelRun(
        run_service_pb2.CancelRunRequest(run_id=run.run_id, reason="enough")
    )
    assert response.run.run_id == run.run_id
    events = await harness.events(run.run_id)
    final = events[-1].run_completed
    assert final.status == events_pb2.RUN_STATUS_CANCELLED
    assert (
        next(e for e in events if e.HasField("node_failed")).node_failed.error.reason == "CANCELLED"
    )
    assert next(e for e in events if e.node_id == "next").HasField("node_skipped")
    assert _processes_with(marker) == [], "cancel must not leave orphans"
    again = await harness.stub.CancelRun(run_service_pb2.CancelRunRequest(run_id=run.run_id))
    assert again.run.status == events_pb2.RUN_STATUS_CANCELLED


async def test_run_started_on_one_process_is_watched_through_another(
    harness: Harness, tmp_path: Path
) -> None:
    env = {**os.environ, "DATABASE_URL": harness.database_url, "RUNWIRE_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, read from a thread below
        [sys.executable, "-m", "runwire.cli", "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "other"),
         "--shell-allow", "seq", "--shell-allow", "sleep"],
        env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.to_thread(proc.stdout.readline)
        assert line.startswith("runwire listening on "), line
        other = grpc.aio.insecure_channel(line.split()[-1])
        other_stub = run_service_pb2_grpc.RunServiceStub(other)
        flow = flow_pb2.Flow(
            name="elsewhere",
            nodes=[shell_node("wait", "sleep", "0.5"), shell_node("count", "seq", "1", "30")],
            edges=[edge("wait", "count")],
        )
        run = (await other_stub.StartRun(run_service_pb2.StartRunRequest(flow=flow))).run
        # Watched through this process while the other executes it: woken by NOTIFY.
        events = await harness.events(run.run_id)
        assert events[-1].run_completed.status == events_pb2.RUN_STATUS_SUCCEEDED
        assert events == await harness.stored(run.run_id)
        await other.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0


async def test_span_tree_of_three_node_run(harness: Harness) -> None:
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    parent_span = "b7ad6b7169203331"
    response = await harness.stub.StartRun(
        run_service_pb2.StartRunRequest(flow=three_node_flow("traced")),
        metadata=(("traceparent", f"00-{trace_id}-{parent_span}-01"),),
    )
    events = await harness.events(response.run.run_id)
    spans = {s.name: s for s in harness.spans.get_finished_spans()}
    run_span = spans["RunFlow:traced"]
    rpc_span = spans["/runwire.v1.RunService/StartRun"]
    assert format(rpc_span.context.trace_id, "032x") == trace_id
    assert format(rpc_span.parent.span_id, "016x") == parent_span
    assert run_span.parent.span_id == rpc_span.context.span_id
    assert run_span.attributes["runwire.run_id"] == response.run.run_id
    node_spans = {n: spans[f"ExecuteNode:{n}"] for n in ("build", "shape", "test")}
    for node_id, span in node_spans.items():
        assert span.parent.span_id == run_span.context.span_id
        assert span.context.trace_id == run_span.context.trace_id
        assert span.attributes["runwire.node_id"] == node_id
        assert span.attributes["runwire.attempt"] == 1
        node_events = [e for e in events if e.node_id == node_id]
        assert {(e.trace_id, e.span_id) for e in node_events} == {
            (trace_id, format(span.context.span_id, "016x"))
        }
    run_level = [e for e in events if not e.node_id]
    assert {e.span_id for e in run_level} == {format(run_span.context.span_id, "016x")}
    # The whole tree: one run span under the RPC, three node spans under the run.
    children = [
        s.name for s in spans.values() if s.parent and s.parent.span_id == run_span.context.span_id
    ]
    assert sorted(children) == ["ExecuteNode:build", "ExecuteNode:shape", "ExecuteNode:test"]
    watch = spans["/runwire.v1.RunService/WatchRun"]
    assert watch.kind.name == "SERVER"
    assert watch.attributes["runwire.run_id"] == response.run.run_id


async def test_failed_node_span_has_error_status(harness: Harness) -> None:
    flow = flow_pb2.Flow(name="red", nodes=[shell_node("boom", "false")])
    await harness.events((await harness.start(flow)).run_id)
    span = next(s for s in harness.spans.get_finished_spans() if s.name == "ExecuteNode:boom")
    assert span.status.status_code.name == "ERROR"
    assert span.attributes["runwire.error_reason"] == "EXIT_STATUS"


async def test_health_serving_then_drain_refuses_new_runs_and_closes_streams(
    harness: Harness,
) -> None:
    health = health_pb2_grpc.HealthStub(harness.channel)
    ok = await health.Check(health_pb2.HealthCheckRequest(service="runwire.v1.RunService"))
    assert ok.status == health_pb2.HealthCheckResponse.SERVING
    flow = flow_pb2.Flow(name="long", nodes=[shell_node("nap", "sleep", "30")])
    run = await harness.start(flow)
    await wait_for_event(harness.stub, run.run_id, lambda e: e.HasField("node_started"))
    watcher = asyncio.ensure_future(collect(harness.stub, run.run_id))
    assert harness.server.service is not None
    harness.server.service.draining.set()
    exc = await _error(harness.stub.StartRun(run_service_pb2.StartRunRequest(flow=flow)))
    assert exc.code() == grpc.StatusCode.UNAVAILABLE
    assert _details(exc)[0].reason == "SERVER_DRAINING"
    harness.server.service.close_streams()
    exc = await _error(watcher)
    assert exc.code() == grpc.StatusCode.UNAVAILABLE


async def test_bearer_tokens_guard_every_rpc_but_health(harness_factory: Any) -> None:
    h: Harness = await harness_factory(auth_tokens=("s3cret",))
    health = health_pb2_grpc.HealthStub(h.channel)
    assert (
        await health.Check(health_pb2.HealthCheckRequest())
    ).status == health_pb2.HealthCheckResponse.SERVING
    request = run_service_pb2.ListRunsRequest()
    for metadata in ((), (("authorization", "Bearer wrong"),), (("authorization", "s3cret"),)):
        exc = await _error(h.stub.ListRuns(request, metadata=metadata))
        assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
        assert _details(exc)[0].reason == "UNAUTHENTICATED"
    exc = await _error(collect(h.stub, "run_x"))
    assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
    ok = await h.stub.ListRuns(request, metadata=(("authorization", "Bearer s3cret"),))
    assert list(ok.runs) == []


def test_non_loopback_listener_requires_tokens(tmp_path: Path) -> None:
    from runwire.config import Settings
    from runwire.rpc import RunwireServer

    with pytest.raises(ValueError, match="without --auth-token"):
        RunwireServer(Settings(listen="0.0.0.0:0", data_dir=tmp_path))
    RunwireServer(Settings(listen="[::1]:0", data_dir=tmp_path))


def test_bearer_tokens_must_not_be_blank_nor_travel_in_clear(tmp_path: Path) -> None:
    """Regression: `--auth-token ''` started a server open to every interface, and tokens
    on a plain-text non-loopback listener travel readable by anyone on the path."""
    from runwire.config import Settings
    from runwire.rpc import RunwireServer

    for blank in ("", "  "):
        with pytest.raises(ValueError, match="must not be empty or blank"):
            RunwireServer(Settings(listen="0.0.0.0:0", data_dir=tmp_path, auth_tokens=(blank,)))
        with pytest.raises(ValueError, match="must not be empty or blank"):
            RunwireServer(Settings(data_dir=tmp_path, auth_tokens=("ok", blank)))
    with pytest.raises(ValueError, match="--trusted-network"):
        RunwireServer(Settings(listen="0.0.0.0:0", data_dir=tmp_path, auth_tokens=("t",)))
    RunwireServer(
        Settings(listen="0.0.0.0:0", data_dir=tmp_path, auth_tokens=("t",), trusted_network=True)
    )
    RunwireServer(Settings(listen="127.0.0.1:0", data_dir=tmp_path, auth_tokens=("t",)))


async def test_live_watchers_get_shared_chunks_not_store_reads(harness: Harness) -> None:
    """Regression: the process's own NOTIFY used to arrive before its local
    chunk and send every watcher to the store on every commit."""
    flow = flow_pb2.Flow(
        name="ticks",
        nodes=[
            shell_node(
                "tick", "sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do echo $i; sleep 0.02; done"
            )
        ],
    )
    run = await harness.start(flow)
    assert harness.server.store is not None
    watchers = [asyncio.ensure_future(collect(harness.stub, run.run_id)) for _ in range(5)]
    results = await asyncio.gather(*watchers)
    stored = await harness.stored(run.run_id)
    assert all(r == stored for r in results)
    commits = len({e.event_time.ToNanoseconds() // 1_000_000 for e in stored})
    assert commits > 5  # the run really was spread over many commits
    # One replay per watcher at subscription time, not one per commit per watcher.
    assert harness.server.store.event_reads <= 2 * len(watchers) + 1


async def test_watchers_woken_by_a_listen_reconnect_go_back_to_shared_chunks(
    harness: Harness,
) -> None:
    """Regression: the wake-everyone marker of a LISTEN (re)connect stayed set,
    and every later commit sent each watcher to the store. Seen under load,
    when a server's first LISTEN connect completed after its first watchers
    subscribed: 71 store reads where 11 were expected."""
    flow = flow_pb2.Flow(
        name="ticks",
        nodes=[
            shell_node(
                "tick", "sh", "-c",
                "while [ ! -e go ]; do sleep 0.02; done;"
                " for i in 1 2 3 4 5 6 7 8 9 10; do echo $i; sleep 0.02; done",
            )
        ],
    )  # fmt: skip
    run = await harness.start(flow)
    store = harness.server.store
    assert store is not None
    await wait_for_event(harness.stub, run.run_id, lambda e: e.HasField("node_started"))
    streams = [
        harness.stub.WatchRun(run_service_pb2.WatchRunRequest(run_id=run.run_id)) for _ in range(5)
    ]
    received: list[list[events_pb2.RunEvent]] = []
    for stream in streams:  # each has subscribed and replayed what was stored
        received.append(list((await stream.read()).events))
    reads = store.event_reads
    # Every watcher of the run: these five, and wait_for_event's if its
    # handler has not yet seen that the client left.
    woken = harness.server.hub.watcher_count(run.run_id)
    harness.server.hub.wake_all()  # what the hub does after a LISTEN reconnect
    (harness.data_dir / "workspaces" / run.run_id / "go").touch()
    for stream, events in zip(streams, received, strict=True):
        while (response := await stream.read()) is not grpc.aio.EOF:
            events.extend(response.events)
    # One store read per watcher for the wake-up, then shared chunks only.
    assert store.event_reads - reads <= woken
    stored = await harness.stored(run.run_id)
    assert len({e.event_time.ToNanoseconds() // 1_000_000 for e in stored}) > 5
    assert all(events == stored for events in received)


async def test_watch_run_responses_stay_under_the_size_budget(harness: Harness) -> None:
    flow = flow_pb2.Flow(name="firehose", nodes=[shell_node("spam", "seq", "1", "80000")])
    run = await harness.start(flow)
    for _ in ("live", "replay"):
        sizes: list[int] = []
        count = 0
        request = run_service_pb2.WatchRunRequest(run_id=run.run_id)
        async for response in harness.stub.WatchRun(request):
            sizes.append(response.ByteSize())
            count += len(response.events)
        assert count == len(await harness.stored(run.run_id))
        assert max(sizes) <= (1 << 20) + 64 * 1024, max(sizes)
        assert sum(sizes) > 4 << 20  # more than one gRPC-default message's worth in total
