"""Fan-out nodes in the engine: items, their outputs, failure policies, retries, limits, parallelism."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from _engine_flows import FLOWS
from _engine_kit import MemoryJournal, flow_of, make_executor, run_engine
from conftest import assert_grammar

from runwire.engine import MAX_FAN_OUT_ITEMS
from runwire.v1 import events_pb2

FAST_RETRY = {"maxAttempts": 3, "initialBackoff": "0.001s", "maxBackoff": "0.002s"}


def _zap_fan(for_each: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "name": "zaps",
        "nodes": [
            {
                "id": "fan",
                "action": {
                    "adapter": "test",
                    "action": "zap",
                    "params": {
                        "target": "{{ item.t }}",
                        "fail": "{{ item.fail }}",
                        "flaky": "{{ item.flaky }}",
                    },
                },
                "forEach": for_each,
                **extra,
            },
        ],
        "settings": {"confirmDestructive": False},
    }


def _targets(*names: str, fail: str = "", flaky: str = "") -> list[dict[str, Any]]:
    return [{"t": n, "fail": n == fail, "flaky": n == flaky} for n in names]


def _node_end(events: list[events_pb2.RunEvent], node_id: str) -> events_pb2.RunEvent:
    """The node's own terminal event (not an item's)."""
    return next(
        e
        for e in events
        if e.node_id == node_id
        and not e.HasField("item_index")
        and e.WhichOneof("event") in ("node_succeeded", "node_failed")
    )


def _items(events: list[events_pb2.RunEvent]) -> list[events_pb2.RunEvent]:
    return [e for e in events if e.HasField("item_index")]


async def test_fan_out_runs_each_item_with_item_and_index_and_outputs_them_in_order(
    tmp_path: Path,
) -> None:
    flow = flow_of(
        {
            "name": "fan",
            "nodes": [
                {
                    "id": "list",
                    "action": {
                        "adapter": "util",
                        "action": "set",
                        "params": {"value": ["a", "b", "c"]},
                    },
                },
                {
                    "id": "fan",
                    "action": {
                        "adapter": "util",
                        "action": "set",
                        "params": {"value": {"name": "{{ item }}", "at": "{{ item_index }}"}},
                    },
                    "forEach": {"items": "{{ nodes.list.output }}"},
                },
                {
                    "id": "end",
                    "action": {
                        "adapter": "util",
                        "action": "set",
                        "params": {"value": "{{ nodes.fan.output }}"},
                    },
                },
            ],
            "edges": [{"source": "list", "target": "fan"}, {"source": "fan", "target": "end"}],
        }
    )
    run = await run_engine(flow, tmp_path)
    assert_grammar(run.events)
    want = [{"name": "a", "at": 0}, {"name": "b", "at": 1}, {"name": "c", "at": 2}]
    assert json.loads(_node_end(run.events, "fan").node_succeeded.output_json) == want
    assert json.loads(_node_end(run.events, "end").node_succeeded.output_json) == want
    started = [e.item_index for e in _items(run.events) if e.WhichOneof("event") == "node_started"]
    assert sorted(started) == [0, 1, 2]
    assert run.events[-1].run_completed.status == events_pb2.RUN_STATUS_SUCCEEDED


@pytest.mark.parametrize(
    ("policy", "calls", "node_status", "run_status"),
    [
        (
            "ITEM_FAILURE_POLICY_FAIL_FAST",
            ["fan:a", "fan:b"],
            "node_failed",
            events_pb2.RUN_STATUS_FAILED,
        ),
        (
            "ITEM_FAILURE_POLICY_FAIL_AT_END",
            ["fan:a", "fan:b", "fan:c"],
            "node_failed",
            events_pb2.RUN_STATUS_FAILED,
        ),
        (
            "ITEM_FAILURE_POLICY_CONTINUE",
            ["fan:a", "fan:b", "fan:c"],
            "node_succeeded",
            events_pb2.RUN_STATUS_SUCCEEDED,
        ),
    ],
)
async def test_fan_out_failed_item_follows_the_failure_policy(
    policy: str, calls: list[str], node_status: str, run_status: int, tmp_path: Path
) -> None:
    flow = flow_of(
        _zap_fan(
            {
                "items": "{{ inputs.targets }}",
                "maxParallel": 1,
                "failurePolicy": policy,
                "keyField": "t",
            }
        )
    )
    run = await run_engine(flow, tmp_path, inputs={"targets": _targets("a", "b", "c", fail="b")})
    assert_grammar(run.events)
    assert run.zap.calls == calls
    end = _node_end(run.events, "fan")
    assert end.WhichOneof("event") == node_status
    payload = getattr(end, node_status)
    output = json.loads(payload.output_json)
    assert output[0] == {"zapped": "a"}
    assert output[1] == {"error": {"reason": "ZAP_FAILED", "message": "zap failed on purpose"}}
    assert output[2] == (None if policy.endswith("FAIL_FAST") else {"zapped": "c"})
    if node_status == "node_failed":
        assert payload.error.reason == "ITEM_FAILED"
        assert "item 1" in payload.error.message
    assert {e.item_key for e in _items(run.events)} == {n.split(":")[1] for n in calls}
    assert run.events[-1].run_completed.status == run_status


async def test_fan_out_item_retries_on_its_own(tmp_path: Path) -> None:
    flow = flow_of(_zap_fan({"items": "{{ inputs.targets }}"}, retryPolicy=FAST_RETRY))
    run = await run_engine(flow, tmp_path, inputs={"targets": _targets("a", "b", flaky="b")})
    assert_grammar(run.events)
    attempts = {
        (e.item_index, e.attempt)
        for e in _items(run.events)
        if e.WhichOneof("event") == "node_started"
    }
    assert attempts == {(0, 1), (1, 1), (1, 2)}
    retrying = [e for e in run.events if e.WhichOneof("event") == "node_retrying"]
    assert [(e.item_index, e.node_retrying.next_attempt) for e in retrying] == [(1, 2)]
    assert sorted(run.zap.calls) == ["fan:a", "fan:b", "fan:b"]
    end = _node_end(run.events, "fan")
    assert json.loads(end.node_succeeded.output_json) == [{"zapped": "a"}, {"zapped": "b"}]


async def test_fan_out_empty_array_succeeds_with_an_empty_list_and_no_item_events(
    tmp_path: Path,
) -> None:
    flow = flow_of(_zap_fan({"items": "{{ inputs.targets }}"}))
    run = await run_engine(flow, tmp_path, inputs={"targets": []})
    assert_grammar(run.events)
    assert _items(run.events) == []
    assert run.zap.calls == []
    assert _node_end(run.events, "fan").node_succeeded.output_json == "[]"


@pytest.mark.parametrize(
    ("items", "reason", "words"),
    [
        (
            list(range(MAX_FAN_OUT_ITEMS + 1)),
            "FOR_EACH_TOO_LARGE",
            [f"{MAX_FAN_OUT_ITEMS + 1} items", f"limit is {MAX_FAN_OUT_ITEMS}"],
        ),
        ({"not": "a list"}, "FOR_EACH_NOT_ARRAY", ["dict", "not a JSON array"]),
        ("text", "FOR_EACH_NOT_ARRAY", ["str", "not a JSON array"]),
    ],
    ids=["oversized", "object", "string"],
)
async def test_fan_out_refuses_what_it_cannot_run_clearly_at_run_time(
    items: Any, reason: str, words: list[str], tmp_path: Path
) -> None:
    flow = flow_of(_zap_fan({"items": "{{ inputs.targets }}"}))
    run = await run_engine(flow, tmp_path, inputs={"targets": items})
    assert_grammar(run.events)
    assert _items(run.events) == []
    assert run.zap.calls == []
    failed = _node_end(run.events, "fan").node_failed
    assert failed.error.reason == reason
    for word in words:
        assert word in failed.error.message
    assert run.events[-1].run_completed.status == events_pb2.RUN_STATUS_FAILED


@pytest.mark.parametrize(
    ("for_each_parallel", "flow_parallel", "peak"), [(2, 0, 2), (0, 3, 3), (5, 2, 2)]
)
async def test_fan_out_items_in_flight_are_bounded_by_the_node_and_the_flow(
    for_each_parallel: int, flow_parallel: int, peak: int, tmp_path: Path
) -> None:
    spec = _zap_fan({"items": "{{ inputs.targets }}", "maxParallel": for_each_parallel})
    spec["settings"]["maxParallel"] = flow_parallel
    run = await run_engine(flow_of(spec), tmp_path, inputs={"targets": _targets(*"abcdefgh")})
    assert_grammar(run.events)
    assert len(run.zap.calls) == 8
    assert run.zap.peak == peak


async def test_fan_out_inside_a_loop_runs_every_item_again_on_each_visit(tmp_path: Path) -> None:

    run = await run_engine(flow_of(FLOWS["fan-out inside a loop"][0]), tmp_path)
    assert_grammar(run.events)
    items = {
        (e.iteration, e.item_index)
        for e in _items(run.events)
        if e.WhichOneof("event") == "node_succeeded"
    }
    assert items == {(1, 0), (1, 1), (2, 0), (2, 1)}
    outputs = [
        json.loads(e.node_succeeded.output_json)
        for e in run.events
        if e.node_id == "fan" and e.HasField("node_succeeded") and not e.HasField("item_index")
    ]
    assert outputs == [["x-0", "y-0"], ["x-1", "y-1"]]


async def test_fan_out_cancelled_while_items_wait_at_their_gates_closes_the_visit(
    tmp_path: Path,
) -> None:
    """Two items hold for confirmation, a third has not started: a cancel decides
    both gates as CANCELLED, skips those items, starts nothing new, and the
    node's own NodeFailed closes the visit, so the stream stays grammatical."""
    spec = _zap_fan({"items": "{{ inputs.targets }}", "maxParallel": 2})
    spec["settings"] = {}  # the gate is on
    journal = MemoryJournal()
    run = make_executor(
        flow_of(spec), tmp_path, journal=journal, inputs={"targets": _targets("a", "b", "c")}
    )
    held: set[int] = set()

    def cancel_when_both_held(e: events_pb2.RunEvent) -> None:
        if e.WhichOneof("event") == "awaiting_confirmation":
            held.add(e.item_index)
            if held == {0, 1}:
                run.executor.control(pause=None, cancel=True, principal="ops", reason="stop")

    journal.on_append = cancel_when_both_held
    await asyncio.wait_for(run.executor.run(), 10)
    assert_grammar(run.events)
    assert run.zap.calls == []
    resolved = {
        e.item_index: e.confirmation_resolved.decision
        for e in run.events
        if e.WhichOneof("event") == "confirmation_resolved"
    }
    assert resolved == {
        0: events_pb2.GATE_DECISION_CANCELLED,
        1: events_pb2.GATE_DECISION_CANCELLED,
    }
    assert 2 not in {e.item_index for e in _items(run.events)}
    end = _node_end(run.events, "fan")
    assert end.node_failed.error.reason == "CANCELLED"
    assert run.events[-1].run_completed.status == events_pb2.RUN_STATUS_CANCELLED
