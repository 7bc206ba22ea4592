"""Flow semantics end to end: data between nodes, bounded loops, human gates, takeover."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import asyncpg
import grpc
import pytest
from conftest import Harness, cases, edge, error_reason, shell_node, util_node, wait_for_event
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from runwire.v1 import events_pb2, flow_pb2, run_service_pb2

FAILURE = flow_pb2.EDGE_CONDITION_FAILURE
ALWAYS = flow_pb2.EDGE_CONDITION_ALWAYS


def _inputs(**values: Any) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


def _violations(exc: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(exc)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    next(d for d in status.details if d.Is(bad.DESCRIPTOR)).Unpack(bad)
    return [(v.field, v.description) for v in bad.field_violations]


def _outputs(events: list[events_pb2.RunEvent]) -> dict[str, Any]:
    return {
        e.node_id: json.loads(e.node_succeeded.output_json)
        for e in events
        if e.HasField("node_succeeded")
    }


async def test_params_reference_inputs_and_upstream_outputs(harness: Harness) -> None:
    flow = flow_pb2.Flow(
        name="data",
        nodes=[
            shell_node("greet", "echo", "branch={{ inputs.branch }}"),
            util_node(
                "shape",
                "set",
                value={"code": "{{ nodes.greet.output.exit_code }}", "n": "{{ inputs.n + 1 }}"},
            ),
            shell_node(
                "use", "echo", "code={{ nodes.shape.output.code }}", "; rm -rf /", "{{ inputs.n }}"
            ),
        ],
        edges=[edge("greet", "shape"), edge("shape", "use")],
    )
    run = await harness.start(flow, inputs=_inputs(branch="main; echo pwned", n=41))
    events = await harness.events(run.run_id)
    logs = [e.node_log.line for e in events if e.HasField("node_log")]
    # Rendered values are argv elements, never shell text.
    assert logs == ["branch=main; echo pwned", "code=0 ; rm -rf / 41"]
    assert _outputs(events)["shape"] == {"code": 0, "n": 42}
    started = next(e for e in events if e.node_id == "use" and e.HasField("node_started"))
    assert json.loads(started.node_started.params_json) == {
        "argv": ["echo", "code=0", "; rm -rf /", 41]
    }


@pytest.mark.parametrize(
    ("value", "field", "description"),
    [
        ("{{ nodes.ghost.output }}", "flow.nodes[1].action.params.value", "no node has id 'ghost'"),
        ("{{ nodes.b.output }}", "flow.nodes[1].action.params.value", "node 'b' is not upstream of 'a', so its output is not available"),
        ("{{ inputs.missing }}", "flow.nodes[1].action.params.value", "run input 'missing' is not given"),
        ("{{ inputs. }}", "flow.nodes[1].action.params.value", "template syntax error: expected name or number"),
        ("{{ secrets.token }}", "flow.nodes[1].action.params.value", "unknown variable 'secrets'; use inputs.<key> or nodes.<id>.output"),
    ],
)  # fmt: skip
async def test_start_run_rejects_bad_template_references(
    harness: Harness, value: str, field: str, description: str
) -> None:
    flow = flow_pb2.Flow(
        name="refs",
        nodes=[util_node("b", "set", value=1), util_node("a", "set", value=value)],
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.StartRun(
            run_service_pb2.StartRunRequest(flow=flow, inputs=_inputs(given=1))
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(caught.value) == [(field, description)]


def _loop_flow(passes_at: int, max_visits: int) -> flow_pb2.Flow:
    # `check` counts its visits in a workspace file and passes from the Nth on.
    script = f'n=$(cat visits 2>/dev/null || echo 0); n=$((n+1)); echo $n > visits; echo "visit $n"; [ "$n" -ge {passes_at} ]'
    check = shell_node("check", "sh", "-c", script, max_visits=max_visits)
    return flow_pb2.Flow(
        name="until-green",
        nodes=[
            util_node("setup", "set", value="ready"),
            check,
            util_node("fix", "set", value="tried a fix"),
            util_node("done", "set", value="{{ nodes.check.output.stdout_tail }}"),
        ],
        edges=[
            edge("setup", "check"),
            edge("check", "fix", FAILURE),
            edge("fix", "check"),  # the loop
            edge("check", "done"),
        ],
    )


async def test_loop_runs_until_check_passes(harness: Harness) -> None:
    events = await harness.events(
        (await harness.start(_loop_flow(passes_at=3, max_visits=5))).run_id
    )
    visits = [
        (e.iteration, cases([e])[0])
        for e in events
        if e.node_id == "check" and not e.HasField("node_log")
    ]
    assert visits == [
        (1, "node_started"), (1, "node_failed"),
        (2, "node_started"), (2, "node_failed"),
        (3, "node_started"), (3, "node_succeeded"),
    ]  # fmt: skip
    assert [e.iteration for e in events if e.node_id == "fix" and e.HasField("node_succeeded")] == [
        1,
        2,
    ]
    assert _outputs(events)["done"] == "visit 3\n"
    final = events[-1].run_completed
    assert final.status == events_pb2.RUN_STATUS_SUCCEEDED


async def test_loop_capped_by_max_visits_ends_partial(harness: Harness) -> None:
    events = await harness.events(
        (await harness.start(_loop_flow(passes_at=99, max_visits=3))).run_id
    )
    capped = [e for e in events if e.HasField("iteration_capped")]
    assert len(capped) == 1
    assert capped[0].node_id == "check"
    assert capped[0].iteration_capped.max_visits == 3
    assert capped[0].iteration_capped.source_node_id == "fix"
    assert [e.iteration for e in events if e.node_id == "check" and e.HasField("node_started")] == [
        1,
        2,
        3,
    ]
    # Earlier outputs are kept: fix succeeded on every visit.
    assert [e.iteration for e in events if e.node_id == "fix" and e.HasField("node_succeeded")] == [
        1,
        2,
        3,
    ]
    final = events[-1].run_completed
    assert final.status == events_pb2.RUN_STATUS_PARTIAL
    assert final.error.reason == "ITERATION_CAPPED"


def _approval_flow(timeout_ms: int = 0) -> flow_pb2.Flow:
    gate = flow_pb2.Node(
        id="ship", approval=flow_pb2.ApprovalNode(message="Ship {{ inputs.version }}?")
    )
    if timeout_ms:
        gate.approval.timeout.FromMilliseconds(timeout_ms)
    return flow_pb2.Flow(
        name="approve",
        nodes=[
            gate,
            util_node("deploy", "set", value="shipped"),
            util_node("rollback", "set", value="kept"),
        ],
        edges=[edge("ship", "deploy"), edge("ship", "rollback", FAILURE)],
    )


async def test_approval_approved_takes_success_edges(harness: Harness) -> None:
    run = await harness.start(_approval_flow(), inputs=_inputs(version="1.4.2"))
    requested = await wait_for_event(
        harness.stub, run.run_id, lambda e: e.HasField("approval_requested")
    )
    assert requested.approval_requested.message == "Ship 1.4.2?"
    got = (await harness.stub.GetRun(run_service_pb2.GetRunRequest(run_id=run.run_id))).run
    assert [(g.node_id, g.kind, g.message) for g in got.pending_gates] == [
        ("ship", run_service_pb2.GATE_KIND_APPROVAL, "Ship 1.4.2?")
    ]
    request = run_service_pb2.ResolveApprovalRequest(
        run_id=run.run_id, node_id="ship", approve=True, comment="go"
    )
    answered = (
        await harness.stub.ResolveApproval(
            request, metadata=(("x-runwire-principal", "user:alice"),)
        )
    ).run
    assert list(answered.pending_gates) == []
    await harness.stub.ResolveApproval(request)  # the same decision again is fine
    events = await harness.events(run.run_id)
    resolved = next(e for e in events if e.HasField("approval_resolved")).approval_resolved
    assert (resolved.decision, resolved.principal, resolved.comment) == (
        events_pb2.GATE_DECISION_APPROVED,
        "user:alice",
        "go",
    )
    assert [e.node_id for e in events if e.HasField("node_skipped")] == ["rollback"]
    assert events[-1].run_completed.status == events_pb2.RUN_STATUS_SUCCEEDED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.ResolveApproval(
            run_service_pb2.ResolveApprovalRequest(run_id=run.run_id, node_id="ship", approve=False)
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(caught.value) == "GATE_ALREADY_RESOLVED"


async def test_approval_rejected_takes_failure_edges(harness: Harness) -> None:
    run = await harness.start(_approval_flow(), inputs=_inputs(version="2"))
    await wait_for_event(harness.stub, run.run_id, lambda e: e.HasField("approval_requested"))
    await harness.stub.ResolveApproval(
        run_service_pb2.ResolveApprovalRequest(
            run_id=run.run_id, node_id="ship", approve=False, comment="not today"
        )
    )
    events = await harness.events(run.run_id)
    failed = next(e for e in events if e.HasField("node_failed")).node_failed
    assert failed.error.reason == "REJECTED"
    assert [e.node_id for e in events if e.HasField("node_skipped")] == ["deploy"]
    assert events[-1].run_completed.status == events_pb2.RUN_STATUS_SUCCEEDED


async def test_approval_timeout_expires_as_rejected(harness: Harness) -> None:
    run = await harness.start(_approval_flow(timeout_ms=200), inputs=_inputs(version="3"))
    events = await harness.events(run.run_id)
    requested = next(e for e in events if e.HasField("approval_requested")).approval_requested
    assert requested.HasField("expire_time")
    resolved = next(e for e in events if e.HasField("approval_resolved")).approval_resolved
    assert (resolved.decision, resolved.principal) == (events_pb2.GATE_DECISION_EXPIRED, "system")
    assert _outputs(events)["rollback"] == "kept"


async def test_gate_rpcs_reject_nodes_without_a_pending_gate(harness: Harness) -> None:
    run = await harness.start(_approval_flow(), inputs=_inputs(version="4"))
    await wait_for_event(harness.stub, run.run_id, lambda e: e.HasField("approval_requested"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.ConfirmAction(
            run_service_pb2.ConfirmActionRequest(run_id=run.run_id, node_id="ship", approve=True)
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(caught.value) == "GATE_NOT_PENDING"
    await harness.stub.CancelRun(run_service_pb2.CancelRunRequest(run_id=run.run_id))
    events = await harness.events(run.run_id)
    resolved = next(e for e in events if e.HasField("approval_resolved")).approval_resolved
    assert resolved.decision == events_pb2.GATE_DECISION_CANCELLED
    assert events[-1].run_completed.status == events_pb2.RUN_STATUS_CANCELLED


async def test_waiting_gate_survives_server_restart(harness_factory: Any) -> None:
    """A run waiting for approval is left by a stopping server and continued by
    the next one: the gate is in Postgres, the events go on from the same seq."""
    first: Harness = await harness_factory(lease_seconds=0.5)
    run = await first.start(_approval_flow(), inputs=_inputs(version="5"))
    await wait_for_event(first.stub, run.run_id, lambda e: e.HasField("approval_requested"))
    await first.server.stop(grace=0.5)
    second: Harness = await harness_factory(lease_seconds=0.5)
    got = (await second.stub.GetRun(run_service_pb2.GetRunRequest(run_id=run.run_id))).run
    assert [g.node_id for g in got.pending_gates] == ["ship"]
    await second.stub.ResolveApproval(
        run_service_pb2.ResolveApprovalRequest(run_id=run.run_id, node_id="ship", approve=True)
    )
    events = await second.events(run.run_id)
    assert cases(events).count("approval_requested") == 1
    assert cases(events).count("run_started") == 1
    assert events[-1].run_completed.status == events_pb2.RUN_STATUS_SUCCEEDED
    assert _outputs(events)["deploy"] == "shipped"


async def test_interrupted_node_is_rerun_and_finished_nodes_are_not(harness_factory: Any) -> None:
    first: Harness = await harness_factory(lease_seconds=0.5)
    flow = flow_pb2.Flow(
        name="takeover",
        nodes=[
            shell_node("once", "echo", "only once"),
            shell_node("long", "sleep", "2"),
            util_node("after", "set", value=1),
        ],
        edges=[edge("once", "long"), edge("long", "after")],
    )
    run = await first.start(flow)
    await wait_for_event(
        first.stub, run.run_id, lambda e: e.node_id == "long" and e.HasField("node_started")
    )
    await first.server.stop(grace=0.5)
    second: Harness = await harness_factory(lease_seconds=0.5)
    events = await second.events(run.run_id)
    assert [e.node_id for e in events if e.HasField("node_started")] == [
        "once",
        "long",
        "long",
        "after",
    ]
    interrupted = next(e for e in events if e.HasField("node_failed"))
    assert interrupted.node_failed.error.reason == "INTERRUPTED"
    assert interrupted.node_failed.will_retry
    assert events[-1].run_completed.status == events_pb2.RUN_STATUS_SUCCEEDED


async def test_drain_releases_leases_of_unfinished_runs(harness_factory: Any) -> None:
    """Regression: the drain's grace timeout cancelled the runs through gather,
    so stop() found none to release and a successor waited a whole lease."""
    first: Harness = await harness_factory(drain_grace=0.2)
    flow = flow_pb2.Flow(name="slow", nodes=[shell_node("nap", "sleep", "5")])
    run = await first.start(flow)
    await wait_for_event(first.stub, run.run_id, lambda e: e.HasField("node_started"))
    await first.server.drain()
    conn = await asyncpg.connect(first.database_url)
    try:
        row = await conn.fetchrow(
            "SELECT owner_id, lease_expire_time <= now() AS expired FROM runs WHERE run_id = $1",
            run.run_id,
        )
    finally:
        await conn.close()
    assert row is not None
    assert (row["owner_id"], row["expired"]) == (None, True)
    second: Harness = await harness_factory()
    events = await second.events(run.run_id)
    assert events[-1].run_completed.status == events_pb2.RUN_STATUS_SUCCEEDED


async def test_template_keys_win_over_dict_methods(harness: Harness) -> None:
    """Regression: `nodes.get` resolved to dict.get and `output.items` to dict.items."""
    flow = flow_pb2.Flow(
        name="keys",
        nodes=[
            util_node("get", "set", value={"items": [1, 2], "keys": "k"}),
            util_node(
                "use",
                "set",
                value={"items": "{{ nodes.get.output.items }}", "k": "{{ nodes.get.output.keys }}"},
            ),
        ],
        edges=[edge("get", "use")],
    )
    events = await harness.events((await harness.start(flow)).run_id)
    assert _outputs(events)["use"] == {"items": [1, 2], "k": "k"}


async def test_server_that_lost_its_lease_is_fenced_and_stops(harness_factory: Any) -> None:
    """A server that lost a run's lease (a pause, a partition) must not write
    into the stream its new owner now extends, and must stop executing it."""
    h: Harness = await harness_factory(lease_seconds=0.6, heartbeat_interval=0.05)
    run = await h.start(flow_pb2.Flow(name="stolen", nodes=[shell_node("nap", "sleep", "30")]))
    await wait_for_event(h.stub, run.run_id, lambda e: e.HasField("node_heartbeat"))
    assert h.server.engine is not None
    task = h.server.engine.task_of(run.run_id)
    assert task is not None
    conn = await asyncpg.connect(h.database_url)
    try:
        stolen_at = await conn.fetchval(
            """UPDATE runs SET owner_id = 'another-server', lease_expire_time = now() + interval '1 hour'
               WHERE run_id = $1 RETURNING last_seq""",
            run.run_id,
        )
        # Stopped here either by the lease loop (cancelled) or by the executor
        # itself, once the writer reports the run's events fenced (LeaseLost).
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        last = await conn.fetchval("SELECT max(seq) FROM events WHERE run_id = $1", run.run_id)
    finally:
        await conn.close()
    assert last == stolen_at, "no event may be committed after the lease was lost"
    assert h.server.engine.task_of(run.run_id) is None


async def test_takeover_follows_a_loop_edge_cut_off_by_the_stop(harness_factory: Any) -> None:
    """Regression: when the stop came after a loop's last body node finished
    but before the loop head started again, the successor finished the run
    without looping. Pausing during the body produces exactly that history."""
    first: Harness = await harness_factory(lease_seconds=0.5)
    flow = _loop_flow(passes_at=2, max_visits=4)
    flow.nodes[2].CopyFrom(util_node("fix", "sleep", seconds=0.5))
    run = await first.start(flow)
    await wait_for_event(
        first.stub, run.run_id, lambda e: e.node_id == "fix" and e.HasField("node_started")
    )
    await first.stub.PauseRun(run_service_pb2.PauseRunRequest(run_id=run.run_id))
    await wait_for_event(first.stub, run.run_id, lambda e: e.HasField("run_paused"))
    await first.server.stop(grace=0.5)
    second: Harness = await harness_factory(lease_seconds=0.5)
    await second.stub.ResumeRun(run_service_pb2.ResumeRunRequest(run_id=run.run_id))
    events = await second.events(run.run_id)
    assert [e.iteration for e in events if e.node_id == "check" and e.HasField("node_started")][
        :2
    ] == [1, 2]
    assert events[-1].run_completed.status == events_pb2.RUN_STATUS_SUCCEEDED
