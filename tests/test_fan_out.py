"""Fan-out nodes end to end: real gRPC, real Postgres, real files; items confirmed one by one."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from conftest import Harness, edge, wait_for_event
from google.protobuf import json_format, struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from runwire.v1 import events_pb2, flow_pb2, run_service_pb2


def _node(spec: dict[str, Any]) -> flow_pb2.Node:
    return json_format.ParseDict(spec, flow_pb2.Node())


def _fs(node_id: str, action: str, params: dict[str, Any], **extra: Any) -> flow_pb2.Node:
    return _node(
        {"id": node_id, "action": {"adapter": "fs", "action": action, "params": params}, **extra}
    )


def _inputs(**values: Any) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


def _files() -> list[dict[str, str]]:
    return [{"name": "a.txt", "text": "alpha"}, {"name": "b.txt", "text": "beta"}]


def _write_all() -> flow_pb2.Node:
    return _fs(
        "write",
        "write-file",
        {"path": "{{ item.name }}", "content": "{{ item.text }}"},
        forEach={"items": "{{ inputs.files }}", "keyField": "name"},
    )


def _node_end(events: list[events_pb2.RunEvent], node_id: str) -> events_pb2.RunEvent:
    return next(
        e
        for e in events
        if e.node_id == node_id
        and not e.HasField("item_index")
        and e.WhichOneof("event") in ("node_succeeded", "node_failed")
    )


async def test_fan_out_reads_every_file_a_listing_returned(harness: Harness) -> None:
    flow = flow_pb2.Flow(
        name="listing",
        nodes=[
            _write_all(),
            _fs("list", "list-dir", {"path": "."}),
            _fs(
                "read",
                "read-file",
                {"path": "{{ item.name }}"},
                forEach={"items": "{{ nodes.list.output.entries }}", "keyField": "name"},
            ),
        ],
        edges=[edge("write", "list"), edge("list", "read")],
    )
    run = await harness.start(flow, inputs=_inputs(files=_files()))
    events = await harness.events(run.run_id)
    assert events[-1].run_completed.status == events_pb2.RUN_STATUS_SUCCEEDED
    read = json.loads(_node_end(events, "read").node_succeeded.output_json)
    assert sorted((r["path"], r["content"]) for r in read) == [
        ("a.txt", "alpha"),
        ("b.txt", "beta"),
    ]
    keys = {
        (e.item_index, e.item_key)
        for e in events
        if e.node_id == "read" and e.HasField("item_index") and e.HasField("node_started")
    }
    assert {k for _, k in keys} == {"a.txt", "b.txt"}
    assert {i for i, _ in keys} == {0, 1}
    # Each item's attempt is a span of its own, naming the item.
    spans = [s for s in harness.spans.get_finished_spans() if s.name == "ExecuteNode:read"]
    assert sorted((s.attributes or {}).get("runwire.item_index", -1) for s in spans) == [0, 1]


async def test_fan_out_destructive_items_wait_for_their_own_confirmations(harness: Harness) -> None:
    flow = flow_pb2.Flow(
        name="cleanup",
        nodes=[
            _write_all(),
            _fs(
                "delete",
                "delete-file",
                {"path": "{{ item.name }}"},
                forEach={"items": "{{ inputs.files }}", "keyField": "name", "maxParallel": 2},
            ),
        ],
        edges=[edge("write", "delete")],
    )
    run = await harness.start(flow, inputs=_inputs(files=_files()))
    seen: set[int] = set()

    def both_held(e: events_pb2.RunEvent) -> bool:
        if e.HasField("awaiting_confirmation"):
            seen.add(e.item_index)
        return seen == {0, 1}

    await wait_for_event(harness.stub, run.run_id, both_held)
    got = (await harness.stub.GetRun(run_service_pb2.GetRunRequest(run_id=run.run_id))).run
    assert sorted((g.node_id, g.item_index) for g in got.pending_gates) == [
        ("delete", 0),
        ("delete", 1),
    ]
    await harness.stub.ConfirmAction(
        run_service_pb2.ConfirmActionRequest(
            run_id=run.run_id, node_id="delete", item_index=1, approve=False
        )
    )
    await harness.stub.ConfirmAction(
        run_service_pb2.ConfirmActionRequest(
            run_id=run.run_id, node_id="delete", item_index=0, approve=True
        )
    )
    events = await harness.events(run.run_id)
    resolved = {
        e.item_index: e.confirmation_resolved.decision
        for e in events
        if e.HasField("confirmation_resolved")
    }
    assert resolved == {0: events_pb2.GATE_DECISION_APPROVED, 1: events_pb2.GATE_DECISION_REJECTED}
    skipped = [(e.node_id, e.item_index) for e in events if e.HasField("node_skipped")]
    assert skipped == [("delete", 1)]
    output = json.loads(_node_end(events, "delete").node_succeeded.output_json)
    assert output == [{"path": "a.txt", "deleted": True}, None]
    assert events[-1].run_completed.status == events_pb2.RUN_STATUS_SUCCEEDED


async def _violations(harness: Harness, flow: flow_pb2.Flow) -> set[str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.StartRun(run_service_pb2.StartRunRequest(flow=flow))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    next(d for d in status.details if d.Is(bad.DESCRIPTOR)).Unpack(bad)
    return {v.field for v in bad.field_violations}


async def test_start_run_rejects_bad_fan_out_fields_by_path(harness: Harness) -> None:
    bad = flow_pb2.Flow(
        name="bad-fan",
        nodes=[
            _node(
                {"id": "gate", "approval": {"message": "ok?"}, "forEach": {"items": "{{ [1] }}"}}
            ),
            _fs(
                "read",
                "read-file",
                {"path": "{{ item }}"},
                forEach={"items": " ", "maxParallel": -1, "keyField": "a b"},
            ),
        ],
    )
    assert await _violations(harness, bad) == {
        "flow.nodes[0].for_each",
        "flow.nodes[1].for_each.items",
        "flow.nodes[1].for_each.max_parallel",
        "flow.nodes[1].for_each.key_field",
    }
    # `item` exists only in a fan-out node's params.
    plain = flow_pb2.Flow(name="plain", nodes=[_fs("plain", "read-file", {"path": "{{ item }}"})])
    assert await _violations(harness, plain) == {"flow.nodes[0].action.params.path"}


async def test_fan_out_taken_over_mid_way_keeps_finished_items_and_pending_gates(
    harness_factory: Any,
) -> None:
    """Three items wait for confirmation; item 0 is confirmed and finishes,
    then the server stops. The next server takes the run over: item 0 is not
    run again, items 1 and 2 still wait at the gates stored in Postgres (not
    announced twice) and finish once confirmed there."""
    first: Harness = await harness_factory(lease_seconds=0.5)
    flow = flow_pb2.Flow(
        name="cleanup-takeover",
        nodes=[
            _write_all(),
            _fs(
                "delete",
                "delete-file",
                {"path": "{{ item }}", "missing_ok": True},
                forEach={"items": '{{ ["a.txt", "b.txt", "c.txt"] }}', "maxParallel": 3},
            ),
        ],
        edges=[edge("write", "delete")],
    )
    run = await first.start(flow, inputs=_inputs(files=_files()))
    held: set[int] = set()

    def all_held(e: events_pb2.RunEvent) -> bool:
        if e.HasField("awaiting_confirmation"):
            held.add(e.item_index)
        return held == {0, 1, 2}

    await wait_for_event(first.stub, run.run_id, all_held)
    await first.stub.ConfirmAction(
        run_service_pb2.ConfirmActionRequest(
            run_id=run.run_id, node_id="delete", item_index=0, approve=True
        )
    )
    await wait_for_event(
        first.stub,
        run.run_id,
        lambda e: (
            e.node_id == "delete"
            and e.HasField("item_index")
            and e.item_index == 0
            and e.HasField("node_succeeded")
        ),
    )
    await first.server.stop(grace=0.5)
    second: Harness = await harness_factory(lease_seconds=0.5)
    got = (await second.stub.GetRun(run_service_pb2.GetRunRequest(run_id=run.run_id))).run
    assert sorted(g.item_index for g in got.pending_gates) == [1, 2]
    for item in (1, 2):
        await second.stub.ConfirmAction(
            run_service_pb2.ConfirmActionRequest(
                run_id=run.run_id, node_id="delete", item_index=item, approve=True
            )
        )
    events = await second.events(run.run_id)
    items = [e for e in events if e.node_id == "delete" and e.HasField("item_index")]
    assert sorted(e.item_index for e in items if e.HasField("awaiting_confirmation")) == [0, 1, 2]
    assert sorted(e.item_index for e in items if e.HasField("node_started")) == [0, 1, 2]
    output = json.loads(_node_end(events, "delete").node_succeeded.output_json)
    assert output[0] == {"path": "a.txt", "deleted": True}
    assert [o["path"] for o in output] == ["a.txt", "b.txt", "c.txt"]
    assert events[-1].run_completed.status == events_pb2.RUN_STATUS_SUCCEEDED
