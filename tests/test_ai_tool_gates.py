"""Destructive tool calls at their own confirmation gates: a real server, real Postgres, the fake model.

One AI visit asks to delete two files in one turn. Each call waits at its own
gate (AwaitingConfirmation naming the tool call), ConfirmAction decides one
call by its id or the pending one without, a rejection reaches the model as
the call's error result, and a server taking the run over while a call is held
waits at that gate again without asking the model for that turn again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from _fake_openai import FakeOpenAI, text_reply, tool_reply
from conftest import Harness, cases, edge, error_reason, wait_for_event
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from test_ai import _server, ai_node
from test_cli import _cli

from runwire.v1 import events_pb2, flow_pb2, run_service_pb2

APPROVED = events_pb2.GATE_DECISION_APPROVED
REJECTED = events_pb2.GATE_DECISION_REJECTED


def _write(node_id: str, path: str) -> flow_pb2.Node:
    node = flow_pb2.Node(id=node_id)
    node.action.adapter, node.action.action = "fs", "write-file"
    node.action.params.update({"path": path, "content": "x"})
    return node


def _flow() -> flow_pb2.Flow:
    return flow_pb2.Flow(
        name="ai-deletes",
        nodes=[
            _write("make_a", "a.txt"),
            _write("make_b", "b.txt"),
            ai_node("agent", "clean up a.txt and b.txt", tools=["fs.delete-file"]),
        ],
        edges=[edge("make_a", "make_b"), edge("make_b", "agent")],
    )


def _script() -> list[Any]:
    return [
        tool_reply(
            ("call_a", "fs__delete-file", json.dumps({"path": "a.txt"})),
            ("call_b", "fs__delete-file", json.dumps({"path": "b.txt"})),
        ),
        text_reply("Deleted a.txt; b.txt was kept."),
    ]


def _held(call_id: str) -> Any:
    return lambda e: (
        e.HasField("awaiting_confirmation") and e.awaiting_confirmation.tool_call_id == call_id
    )


def _confirm(run_id: str, approve: bool, tool_call_id: str = "") -> Any:
    return run_service_pb2.ConfirmActionRequest(
        run_id=run_id, node_id="agent", approve=approve, tool_call_id=tool_call_id
    )


def _workspace(h: Harness, run_id: str) -> Path:
    return h.data_dir / "workspaces" / run_id


def _tool_results(request: dict[str, Any]) -> dict[str, str]:
    return {m["tool_call_id"]: m["content"] for m in request["messages"] if m["role"] == "tool"}


def _check_trail(events: list[events_pb2.RunEvent]) -> None:
    """ToolCall, then its gate opened and decided, per call in the model's order."""
    agent = [e for e in events if e.node_id == "agent"]
    trail = [
        (e.WhichOneof("event"), e.tool_call.tool_call_id)
        if e.HasField("tool_call")
        else (e.WhichOneof("event"), getattr(e, e.WhichOneof("event") or "").tool_call_id)
        for e in agent
        if e.WhichOneof("event") in ("tool_call", "awaiting_confirmation", "confirmation_resolved")
    ]
    assert trail == [
        ("tool_call", "call_a"), ("awaiting_confirmation", "call_a"),
        ("confirmation_resolved", "call_a"),
        ("tool_call", "call_b"), ("awaiting_confirmation", "call_b"),
        ("confirmation_resolved", "call_b"),
    ]  # fmt: skip
    held = [e.awaiting_confirmation for e in agent if e.HasField("awaiting_confirmation")]
    assert [h.action_summary for h in held] == ["Delete file: a.txt", "Delete file: b.txt"]
    assert [(h.adapter, h.action) for h in held] == [("fs", "delete-file")] * 2
    assert json.loads(held[1].params_json) == {"path": "b.txt"}
    decided = [e.confirmation_resolved for e in agent if e.HasField("confirmation_resolved")]
    assert [d.decision for d in decided] == [APPROVED, REJECTED]
    # The node goes on after a rejected call: the model answered with both results.
    assert cases(agent)[-1] == "node_succeeded"
    output = json.loads(agent[-1].node_succeeded.output_json)
    assert (output["turns"], output["tool_calls"]) == (2, 2)


async def test_ai_two_destructive_calls_in_one_visit_are_each_confirmed_on_their_own(
    harness_factory: Any, tmp_path: Path
) -> None:
    async with FakeOpenAI(_script()) as fake:
        h = await _server(harness_factory, tmp_path, fake)
        run = await h.start(_flow())
        await wait_for_event(h.stub, run.run_id, _held("call_a"))
        got = (await h.stub.GetRun(run_service_pb2.GetRunRequest(run_id=run.run_id))).run
        assert [(g.node_id, g.tool_call_id, g.message) for g in got.pending_gates] == [
            ("agent", "call_a", "Delete file: a.txt")
        ]
        # call_b is not held yet: naming it decides nothing.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.stub.ConfirmAction(_confirm(run.run_id, True, "call_b"))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(err.value) == "GATE_NOT_PENDING"
        assert "call_b" in (err.value.details() or "")
        await h.stub.ConfirmAction(_confirm(run.run_id, True, "call_a"))
        await wait_for_event(h.stub, run.run_id, _held("call_b"))
        # The same decision again is fine; another one on the decided call is not.
        await h.stub.ConfirmAction(_confirm(run.run_id, True, "call_a"))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.stub.ConfirmAction(_confirm(run.run_id, False, "call_a"))
        assert error_reason(err.value) == "GATE_ALREADY_RESOLVED"
        # Without an id, ConfirmAction decides the pending call: call_b, not call_a.
        decided = await h.stub.ConfirmAction(_confirm(run.run_id, False))
        assert not any(g.tool_call_id == "call_b" for g in decided.run.pending_gates)
        events = await h.events(run.run_id)
        sent = fake.requests
        workspace = _workspace(h, run.run_id)
    _check_trail(events)
    assert events[-1].run_completed.status == events_pb2.RUN_STATUS_SUCCEEDED
    # The side effects: a.txt deleted (approved), b.txt kept (rejected).
    assert not (workspace / "a.txt").exists()
    assert (workspace / "b.txt").exists()
    # What the model read back: the approved call's result, the rejection as an error.
    assert len(sent) == 2
    results = _tool_results(sent[1])
    assert json.loads(results["call_a"]) == {"path": "a.txt", "deleted": True}
    assert results["call_b"].startswith("Error: rejected by anonymous")


async def test_ai_confirm_action_bad_tool_call_gets_a_precise_status(
    harness_factory: Any, tmp_path: Path
) -> None:
    async with FakeOpenAI(_script()) as fake:
        h = await _server(harness_factory, tmp_path, fake)
        run = await h.start(_flow())
        await wait_for_event(h.stub, run.run_id, _held("call_a"))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.stub.ConfirmAction(_confirm(run.run_id, True, "x" * 257))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(err.value)
        assert status is not None
        bad = error_details_pb2.BadRequest()
        next(d for d in status.details if d.Is(bad.DESCRIPTOR)).Unpack(bad)
        assert [v.field for v in bad.field_violations] == ["tool_call_id"]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.stub.ConfirmAction(_confirm(run.run_id, True, "no_such_call"))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(err.value) == "GATE_NOT_PENDING"
        # Nothing was decided by the bad requests: call_a still waits.
        got = (await h.stub.GetRun(run_service_pb2.GetRunRequest(run_id=run.run_id))).run
        assert [g.tool_call_id for g in got.pending_gates] == ["call_a"]
        await h.stub.CancelRun(run_service_pb2.CancelRunRequest(run_id=run.run_id))
        events = await h.events(run.run_id)
        workspace = _workspace(h, run.run_id)
    # Cancelled while held: the gate closes as CANCELLED and nothing was deleted.
    decided = [e.confirmation_resolved for e in events if e.HasField("confirmation_resolved")]
    assert [(d.tool_call_id, d.decision) for d in decided] == [
        ("call_a", events_pb2.GATE_DECISION_CANCELLED)
    ]
    assert (workspace / "a.txt").exists()
    assert (workspace / "b.txt").exists()
    assert events[-1].run_completed.status == events_pb2.RUN_STATUS_CANCELLED


async def test_ai_takeover_while_a_tool_call_is_held_waits_there_without_a_new_model_call(
    harness_factory: Any, tmp_path: Path
) -> None:
    """The server holding call_b (call_a approved and run) stops; the next one waits at
    call_b's gate (announced once), and after the decision asks the model only for the
    turn after the tool results, which carry call_a's result from the first server."""
    async with FakeOpenAI(_script()) as fake:
        first = await _server(harness_factory, tmp_path, fake, lease_seconds=0.5)
        run = await first.start(_flow())
        await wait_for_event(first.stub, run.run_id, _held("call_a"))
        await first.stub.ConfirmAction(_confirm(run.run_id, True, "call_a"))
        await wait_for_event(first.stub, run.run_id, _held("call_b"))
        await first.server.stop(grace=0.5)
        assert len(fake.requests) == 1
        second = await _server(harness_factory, tmp_path, fake, lease_seconds=0.5)
        got = (await second.stub.GetRun(run_service_pb2.GetRunRequest(run_id=run.run_id))).run
        assert [(g.node_id, g.tool_call_id) for g in got.pending_gates] == [("agent", "call_b")]
        await second.stub.ConfirmAction(_confirm(run.run_id, False, "call_b"))
        events = await second.events(run.run_id)
        sent = fake.requests
        workspace = second.data_dir.parent / first.data_dir.name / "workspaces" / run.run_id
    _check_trail(events)
    assert cases(events).count("node_started") == 3  # no new attempt of the agent
    assert len(sent) == 2
    results = _tool_results(sent[1])
    assert json.loads(results["call_a"]) == {"path": "a.txt", "deleted": True}
    assert results["call_b"].startswith("Error: rejected by anonymous")
    assert not (workspace / "a.txt").exists()
    assert (workspace / "b.txt").exists()
    assert events[-1].run_completed.status == events_pb2.RUN_STATUS_SUCCEEDED


async def test_ai_cli_names_and_resolves_held_tool_calls(
    harness_factory: Any, tmp_path: Path
) -> None:
    """`get` lists the held call with the flag that resolves it; `confirm`/`reject
    --tool-call` decide one call; the watch view prints the command per held call."""
    async with FakeOpenAI(_script()) as fake:
        h = await _server(harness_factory, tmp_path, fake)
        run = await h.start(_flow())
        await wait_for_event(h.stub, run.run_id, _held("call_a"))
        code, out, err = await _cli(h, "get", run.run_id)
        assert code == 0, err
        assert "waiting:  agent --tool-call call_a (confirmation) Delete file: a.txt" in out
        code, out, err = await _cli(h, "confirm", run.run_id, "agent", "--tool-call", "call_a")
        assert code == 0, err
        assert "agent tool call call_a: approved" in out
        await wait_for_event(h.stub, run.run_id, _held("call_b"))
        code, _, err = await _cli(h, "reject", run.run_id, "agent", "--tool-call", "call_b")
        assert code == 0, err
        await h.events(run.run_id)
        code, out, err = await _cli(h, "watch", run.run_id, "--plain")
        workspace = _workspace(h, run.run_id)
    assert code == 0, err
    assert f"runwire confirm|reject {run.run_id} agent --tool-call call_a" in out
    assert f"runwire confirm|reject {run.run_id} agent --tool-call call_b" in out
    assert 'tool_call_id: "call_b"' in out
    assert not (workspace / "a.txt").exists()
    assert (workspace / "b.txt").exists()
