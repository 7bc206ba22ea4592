"""The executor without a server: control, exact takeover timing, and fencing."""

from __future__ import annotations

import asyncio
from pathlib import Path

from _engine_kit import (
    APPROVED,
    MemoryGates,
    MemoryJournal,
    flow_of,
    fold,
    make_executor,
    run_engine,
    summary,
)
from conftest import assert_grammar, cases
from google.protobuf.timestamp_pb2 import Timestamp

from runwire.v1 import events_pb2

CHAIN = flow_of(
    {
        "name": "chain",
        "nodes": [
            {"id": n, "action": {"adapter": "util", "action": "set", "params": {"value": n}}}
            for n in ("a", "b", "c")
        ],
        "edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "c"}],
    }
)


async def test_executor_pause_and_resume_at_node_boundaries_replay_exactly(tmp_path: Path) -> None:
    """Pause when `a` succeeds, resume once RunPaused is journaled: the fold of the stream agrees."""
    journal = MemoryJournal()
    run = make_executor(CHAIN, tmp_path, journal=journal)

    def control(e: events_pb2.RunEvent) -> None:
        if e.WhichOneof("event") == "node_succeeded" and e.node_id == "a":
            run.executor.control(pause=True, cancel=False, principal="ops", reason="look")
        elif e.WhichOneof("event") == "run_paused":
            run.executor.control(pause=False, cancel=False, principal="ops", reason="go on")

    journal.on_append = control
    await asyncio.wait_for(run.executor.run(), 10)
    kinds = cases(run.events)
    assert kinds.index("run_paused") > kinds.index("node_succeeded")
    assert kinds.index("run_resumed") > kinds.index("run_paused")
    assert run.events[kinds.index("run_paused")].run_paused.principal == "ops"
    assert_grammar(run.events)
    assert summary(fold(CHAIN, run.events)) == summary(run.executor.state)
    assert run.events[-1].run_completed.status == events_pb2.RUN_STATUS_SUCCEEDED


async def test_executor_cancel_skips_what_did_not_run_and_replays_exactly(tmp_path: Path) -> None:
    journal = MemoryJournal()
    run = make_executor(CHAIN, tmp_path, journal=journal)

    def cancel(e: events_pb2.RunEvent) -> None:
        if e.WhichOneof("event") == "node_started" and e.node_id == "b":
            run.executor.control(pause=None, cancel=True, principal="ops", reason="stop it")

    journal.on_append = cancel
    await asyncio.wait_for(run.executor.run(), 10)
    done = run.events[-1].run_completed
    assert done.status == events_pb2.RUN_STATUS_CANCELLED
    assert done.error.message == "stop it"
    skipped = [e.node_id for e in run.events if e.WhichOneof("event") == "node_skipped"]
    assert skipped == ["c"]
    assert_grammar(run.events)
    assert summary(fold(CHAIN, run.events)) == summary(run.executor.state)


async def test_executor_cancel_during_retry_backoff_closes_the_visit(tmp_path: Path) -> None:
    """A retry that was announced but will not run ends the visit with NodeSkipped."""
    flow = flow_of(
        {
            "name": "retry",
            "nodes": [
                {
                    "id": "r",
                    "action": {"adapter": "util", "action": "fail", "params": {"message": "x"}},
                    "retryPolicy": {"maxAttempts": 3, "initialBackoff": "60s"},
                }
            ],
        }
    )
    journal = MemoryJournal()
    run = make_executor(flow, tmp_path, journal=journal)

    def cancel(e: events_pb2.RunEvent) -> None:
        if e.WhichOneof("event") == "node_retrying":
            run.executor.control(pause=None, cancel=True, principal="ops", reason="enough")

    journal.on_append = cancel
    await asyncio.wait_for(run.executor.run(), 10)
    kinds = cases(run.events)
    assert kinds[-4:] == ["node_retrying", "node_skipped", "run_status_changed", "run_completed"]
    assert run.events[-3].node_skipped.reason == "retry not started: run cancelled"
    assert_grammar(run.events)


async def test_takeover_counts_run_duration_from_run_started(tmp_path: Path) -> None:
    """A run started 40 s before its takeover reports at least 40 s, not the takeover's share."""
    whole = await run_engine(CHAIN, tmp_path)
    prefix = whole.events[:4]
    started = prefix[0].event_time.ToNanoseconds() - 40 * 10**9
    prefix[0].event_time.CopyFrom(Timestamp(seconds=started // 10**9, nanos=started % 10**9))
    rest = await run_engine(CHAIN, tmp_path, history=prefix)
    duration = rest.events[-1].run_completed.duration
    assert 40 <= duration.seconds < 60


async def test_server_that_lost_the_lease_starts_no_side_effect(tmp_path: Path) -> None:
    """NodeStarted is committed before the action runs; fenced at that commit, the action never runs."""
    flow = flow_of(
        {
            "name": "zap",
            "nodes": [
                {"id": "a", "action": {"adapter": "util", "action": "set", "params": {"value": 1}}},
                {
                    "id": "z",
                    "action": {"adapter": "test", "action": "zap", "params": {"target": "t"}},
                },
            ],
            "edges": [{"source": "a", "target": "z"}],
            "settings": {"confirmDestructive": False},
        }
    )
    rehearsal = await run_engine(flow, tmp_path)
    z_started = next(
        e.seq
        for e in rehearsal.events
        if e.WhichOneof("event") == "node_started" and e.node_id == "z"
    )
    assert rehearsal.zap.calls == ["z:t"]
    fenced = await run_engine(flow, tmp_path, journal=MemoryJournal(fence_from=z_started))
    assert fenced.zap.calls == []
    assert cases(fenced.events)[-1] == "node_started"
    assert "run_completed" not in cases(fenced.events)


async def test_server_that_lost_the_lease_neither_opens_nor_decides_a_gate(tmp_path: Path) -> None:
    flow = flow_of({"name": "gate", "nodes": [{"id": "ok", "approval": {"message": "go?"}}]})
    gates = MemoryGates({"ok": APPROVED}, lost=True)
    run = await run_engine(flow, tmp_path, gates=gates)
    assert cases(run.events)[-1] == "node_started"
    assert gates.decided == {}
    assert "approval_requested" not in cases(run.events)
