"""runwire.replica and the fences: a server that cannot prove it holds a run's
lease writes nothing for it (events, gates), and control takes one route."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from conftest import Harness, shell_node, wait_for_event

from runwire.engine import Decision, LeaseLost
from runwire.store import DurableGates, NewRun, Store
from runwire.v1 import events_pb2, flow_pb2, run_service_pb2


async def until(
    what: str, check: Callable[[], Awaitable[bool] | bool], deadline: float = 60
) -> None:
    """Poll a condition (not a timer) until it holds or the deadline passes."""
    end = time.monotonic() + deadline
    while True:
        got = check()
        if not isinstance(got, bool):
            got = await got
        if got:
            return
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_engine_gates_are_fenced_by_the_lease(database_url: str) -> None:
    """The engine's own gate opens and decisions need the run's unexpired lease;
    a person's decision through the API is taken on any replica."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        store = Store(pool)
        run_id = f"run_{uuid.uuid4().hex}"
        await store.create_run(
            NewRun(
                run_id=run_id,
                flow_name="gated",
                flow_digest="0" * 64,
                flow_json={},
                inputs={},
                labels={},
                request_id=None,
                request_digest="",
                principal="tester",
                status=events_pb2.RUN_STATUS_RUNNING,
                node_count=1,
            ),
            owner_id="me",
            lease_seconds=30,
        )
        mine = DurableGates(store, owner_id="me")
        theirs = DurableGates(store, owner_id="other")
        kind = run_service_pb2.GATE_KIND_APPROVAL
        expired = Decision(events_pb2.GATE_DECISION_EXPIRED, "system", "timed out")
        with pytest.raises(LeaseLost):
            await theirs.open_gate(run_id, "ship", 1, kind, "ship it?", None)
        assert await store.gates(run_id) == []
        assert await mine.open_gate(run_id, "ship", 1, kind, "ship it?", None) is None
        with pytest.raises(LeaseLost):
            await theirs.decide_gate(run_id, "ship", 1, kind, expired)
        await pool.execute(
            "UPDATE runs SET lease_expire_time = now() - interval '1 second' WHERE run_id = $1",
            run_id,
        )
        with pytest.raises(LeaseLost):
            await mine.decide_gate(run_id, "ship", 1, kind, expired)
        with pytest.raises(LeaseLost):
            await mine.open_gate(run_id, "ship", 1, kind, "ship it?", None)
        gate, changed = await store.decide_gate(
            run_id,
            "ship",
            kind,
            decision=events_pb2.GATE_DECISION_APPROVED,
            principal="alice",
            comment="",
        )
        assert changed
        assert gate is not None
        assert gate.decision == events_pb2.GATE_DECISION_APPROVED
    finally:
        await pool.close()


async def test_control_request_reaches_the_run_once(harness: Harness) -> None:
    """Regression: the replica that served PauseRun applied it directly and again
    when its own NOTIFY came back. One route now: store, NOTIFY, the owner."""
    flow = flow_pb2.Flow(name="ctl", nodes=[shell_node("nap", "sleep", "30")])
    run = await harness.start(flow)
    await wait_for_event(harness.stub, run.run_id, lambda e: e.HasField("node_started"))
    engine = harness.server.engine
    replica = harness.server.replica
    assert engine is not None
    assert replica is not None
    calls: list[dict[str, Any]] = []
    original = engine.control

    def counting(run_id: str, **kwargs: Any) -> bool:
        calls.append(kwargs)
        return original(run_id, **kwargs)

    engine.control = counting  # type: ignore[method-assign]  # a spy, the engine still acts
    await harness.stub.PauseRun(run_service_pb2.PauseRunRequest(run_id=run.run_id))
    await until("the pause to be applied", lambda: len(calls) >= 1)
    await harness.stub.CancelRun(run_service_pb2.CancelRunRequest(run_id=run.run_id))
    events = await harness.events(run.run_id)
    assert events[-1].run_completed.status == events_pb2.RUN_STATUS_CANCELLED
    await until("control tasks to settle", lambda: not replica._control_tasks)
    assert [c for c in calls if c["pause"] and not c["cancel"]] == [
        {"pause": True, "cancel": False, "principal": "anonymous", "reason": ""}
    ]
    assert len([c for c in calls if c["cancel"]]) == 1


async def test_writer_commits_nothing_once_the_lease_expired(harness_factory: Any) -> None:
    """A server whose lease expired cannot prove it still holds the run, even if
    nobody claimed it yet: its events are fenced and holds() turns False."""
    h: Harness = await harness_factory(lease_seconds=30, heartbeat_interval=0.05)
    run = await h.start(flow_pb2.Flow(name="late", nodes=[shell_node("nap", "sleep", "30")]))
    await wait_for_event(h.stub, run.run_id, lambda e: e.HasField("node_heartbeat"))
    writer = h.server._writer
    assert writer is not None
    conn = await asyncpg.connect(h.database_url)
    try:
        expired_at = await conn.fetchval(
            """UPDATE runs SET lease_expire_time = now() - interval '1 second'
               WHERE run_id = $1 RETURNING last_seq""",
            run.run_id,
        )
        await until("the writer to fence the run", lambda: not writer.holds(run.run_id))
        last = await conn.fetchval("SELECT max(seq) FROM events WHERE run_id = $1", run.run_id)
    finally:
        await conn.close()
    assert last == expired_at, "no event may be committed once the lease expired"
