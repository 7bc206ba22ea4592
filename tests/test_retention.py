"""Retention: finished runs older than an age are deleted with their events,
gates and workspaces, in batches, while other runs and watchers go on; the
events table's day partitions are made ahead and dropped once their runs are
gone; a watcher of a deleted run ends with NOT_FOUND, never a partial stream.

Real server over loopback gRPC, real Postgres. A run is made "old" by moving
its end back in the database (retention compares ends with the database's
clock), or by giving it the id a run created on an old day gets.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from conftest import Harness, assert_grammar, collect, edge, shell_node, util_node, wait_for_event
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from runwire.config import parse_duration
from runwire.replica import Retention
from runwire.store import Store, encode_cursor, new_run_id
from runwire.store._partitions import bounds, ensure_partitions, partition_days
from runwire.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    events_pb2,
    flow_pb2,
    run_service_pb2,
)

DAY = 86_400.0
_HOLD = "while [ ! -e {name} ]; do sleep 0.02; done; echo released {name}"


def _approval_flow() -> flow_pb2.Flow:
    gate = flow_pb2.Node(id="ship", approval=flow_pb2.ApprovalNode(message="Ship?"))
    return flow_pb2.Flow(
        name="approve",
        nodes=[gate, util_node("deploy", "set", value="shipped")],
        edges=[edge("ship", "deploy")],
    )


def _shell_flow(name: str = "talk") -> flow_pb2.Flow:
    return flow_pb2.Flow(name=name, nodes=[shell_node("say", "sh", "-c", "echo one; echo two")])


def _hold_flow() -> flow_pb2.Flow:
    """A run that keeps running (heartbeats) until the test touches `go` in its workspace."""
    return flow_pb2.Flow(
        name="hold",
        nodes=[shell_node("wait", "sh", "-c", _HOLD.format(name="go")), shell_node("after", "echo", "done")],
        edges=[edge("wait", "after")],
    )  # fmt: skip


async def _finish(h: Harness, flow: flow_pb2.Flow) -> str:
    run = await h.start(flow)
    await h.events(run.run_id)  # to its end
    return run.run_id


async def _age(url: str, run_ids: list[str], days: float) -> None:
    """Move the runs' end back by `days` (as if they had finished then)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "UPDATE runs SET end_time = end_time - make_interval(secs => $2) "
            "WHERE run_id = ANY($1) AND end_time IS NOT NULL",
            run_ids,
            days * DAY,
        )
    finally:
        await conn.close()


def _admin(h: Harness) -> admin_service_pb2_grpc.AdminServiceStub:
    return admin_service_pb2_grpc.AdminServiceStub(h.channel)


def _prune_request(days: float, dry_run: bool = False) -> admin_service_pb2.PruneRunsRequest:
    request = admin_service_pb2.PruneRunsRequest(dry_run=dry_run)
    request.older_than.seconds = int(days * DAY)
    return request


async def _not_found(h: Harness, run_id: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as got:
        await h.stub.GetRun(run_service_pb2.GetRunRequest(run_id=run_id))
    assert got.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as watched:
        await collect(h.stub, run_id)
    assert watched.value.code() == grpc.StatusCode.NOT_FOUND


async def test_retention_prunes_while_runs_and_watchers_are_active_and_keeps_the_rest(
    harness_factory: Any, database_url: str
) -> None:
    h: Harness = await harness_factory(retention_batch=2)  # several batches per prune
    # Old finished runs, with a decided gate and a workspace each.
    old: list[str] = []
    for _ in range(3):
        run = await h.start(_approval_flow())
        await wait_for_event(h.stub, run.run_id, lambda e: e.HasField("approval_requested"))
        await h.stub.ResolveApproval(
            run_service_pb2.ResolveApprovalRequest(run_id=run.run_id, node_id="ship", approve=True)
        )
        await h.events(run.run_id)
        old.append(run.run_id)
    old += [await _finish(h, _shell_flow()) for _ in range(3)]
    with_workspace = [r for r in old if (h.data_dir / "workspaces" / r).is_dir()]
    assert old[3:] == with_workspace  # shell nodes ran in one; util and approval nodes need none
    # Recent finished runs, and runs that will still be going when the prune runs:
    # one waiting at an approval gate, one executing a node.
    recent = [await _finish(h, _shell_flow("recent")) for _ in range(2)]
    gated = (await h.start(_approval_flow())).run_id
    await wait_for_event(h.stub, gated, lambda e: e.HasField("approval_requested"))
    held = (await h.start(_hold_flow())).run_id
    await wait_for_event(h.stub, held, lambda e: e.HasField("node_started"))
    # An unfinished run is never deleted, however old: age the gated one's start too.
    await _age(database_url, old, 40)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "UPDATE runs SET create_time = now() - interval '90 days' WHERE run_id = $1", gated
        )
    finally:
        await conn.close()
    kept_before = {r: await h.stored(r) for r in [*recent, gated, held]}

    # Live watchers of the unfinished runs, and replays of the recent ones,
    # all going while the prune deletes.
    watchers = [asyncio.ensure_future(collect(h.stub, r)) for r in [gated, held, *recent]]
    pruned = asyncio.ensure_future(_admin(h).PruneRuns(_prune_request(30)))
    answer = await pruned
    assert answer.run_count == len(old)
    assert answer.removed_workspace_count == len(with_workspace)

    # The unfinished runs go on and finish, their watchers see every event.
    (h.data_dir / "workspaces" / held / "go").touch()
    await h.stub.ResolveApproval(
        run_service_pb2.ResolveApprovalRequest(run_id=gated, node_id="ship", approve=True)
    )
    streams = await asyncio.gather(*watchers)
    for run_id, events in zip([gated, held, *recent], streams, strict=True):
        assert_grammar(events)
        assert events[-1].run_completed.status == events_pb2.RUN_STATUS_SUCCEEDED
        stored = await h.stored(run_id)
        assert events == stored
        assert stored[: len(kept_before[run_id])] == kept_before[run_id]
    for run_id in recent:
        assert (await h.events(run_id)) == kept_before[run_id]

    # The old runs are gone: the API says NOT_FOUND, and nothing of theirs is
    # left to read (events, gates, workspaces).
    for run_id in old:
        await _not_found(h, run_id)
        assert not (h.data_dir / "workspaces" / run_id).exists()
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM gates WHERE run_id = ANY($1)", old) == 0
        assert await conn.fetchval("SELECT count(*) FROM runs WHERE run_id = ANY($1)", old) == 0
        assert await conn.fetchval("SELECT count(*) FROM gates WHERE run_id = $1", gated) == 1
    finally:
        await conn.close()
    # A dry run after the prune finds nothing more; the next prune deletes nothing.
    assert (await _admin(h).PruneRuns(_prune_request(30, dry_run=True))).run_count == 0


async def test_retention_dry_run_counts_and_deletes_nothing(
    harness: Harness, database_url: str
) -> None:
    runs = [await _finish(harness, _shell_flow()) for _ in range(2)]
    await _age(database_url, runs[:1], 10)
    answer = await _admin(harness).PruneRuns(_prune_request(7, dry_run=True))
    assert answer.run_count == 1
    for run_id in runs:
        assert (await harness.stub.GetRun(run_service_pb2.GetRunRequest(run_id=run_id))).run


async def _positions(conn: asyncpg.Connection, count: int) -> range:
    """Log positions for `count` events, taken from the counter as the writer takes them."""
    head = int(await conn.fetchval("UPDATE event_log_head SET pos = pos + $1 RETURNING pos", count))
    return range(head - count + 1, head + 1)


async def _big_finished_run(url: str, run_id: str, count: int, line_bytes: int) -> None:
    """A finished run of `count` events, stored as the writer would store them."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            """INSERT INTO runs (run_id, flow_name, flow_digest, flow, inputs, status, node_count,
                                last_seq, end_time)
               VALUES ($1, 'big', 'd', '{}', '{}', $2, 1, $3, now() - interval '40 days')""",
            run_id,
            events_pb2.RUN_STATUS_SUCCEEDED,
            count,
        )
        line = "x" * line_bytes
        rows: list[tuple[str, int, str, bytes, int]] = []
        pos = await _positions(conn, count)
        for seq in range(1, count):
            event = events_pb2.RunEvent(
                run_id=run_id, seq=seq, node_log=events_pb2.NodeLog(line=line, line_number=seq)
            )
            rows.append(
                (run_id, seq, "node_log", event.SerializeToString(deterministic=True), pos[seq - 1])
            )
        done = events_pb2.RunEvent(
            run_id=run_id,
            seq=count,
            run_completed=events_pb2.RunCompleted(status=events_pb2.RUN_STATUS_SUCCEEDED),
        )
        rows.append(
            (run_id, count, "run_completed", done.SerializeToString(deterministic=True), pos[-1])
        )
        await conn.copy_records_to_table(
            "events", records=rows, columns=["run_id", "seq", "kind", "event", "pos"]
        )
    finally:
        await conn.close()


@pytest.mark.parametrize("created", ["today", "long ago"])
async def test_retention_watcher_mid_replay_of_a_pruned_run_ends_not_found(
    harness: Harness, database_url: str, created: str
) -> None:
    # Today's id puts the events in today's partition (they stay until it is
    # dropped); an old day's id, with no partition, in the default one (the
    # prune deletes them). Either way the replay must not end OK.
    run_id = new_run_id(time.time() - (0 if created == "today" else 45 * DAY))
    count = 10_000  # 5 replay pages of ~8 MB each: far more than gRPC buffers
    await _big_finished_run(database_url, run_id, count, 4000)
    call = harness.stub.WatchRun(run_service_pb2.WatchRunRequest(run_id=run_id))
    first = await call.read()
    assert first.events[0].seq == 1
    got = len(first.events)
    answer = await _admin(harness).PruneRuns(_prune_request(30))
    assert answer.run_count == 1
    code = grpc.StatusCode.OK
    try:
        while (response := await call.read()) is not grpc.aio.EOF:
            assert not response.HasField("stream_end")
            got += len(response.events)
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
    assert code == grpc.StatusCode.NOT_FOUND  # not OK: the stream did not end
    assert got < count
    await _not_found(harness, run_id)


async def _store(url: str) -> tuple[asyncpg.Pool, Store]:
    pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
    return pool, Store(pool)


async def _insert_run(
    conn: asyncpg.Connection, run_id: str, *, finished_days_ago: float | None, events: int = 3
) -> None:
    await conn.execute(
        """INSERT INTO runs (run_id, flow_name, flow_digest, flow, inputs, status, node_count,
                            last_seq, end_time)
           VALUES ($1, 'f', 'd', '{}', '{}', 2, 1, $2,
                   CASE WHEN $3::float8 IS NULL THEN NULL
                        ELSE now() - make_interval(secs => $3::float8) END)""",
        run_id,
        events,
        None if finished_days_ago is None else finished_days_ago * DAY,
    )
    for seq, pos in zip(range(1, events + 1), await _positions(conn, events), strict=True):
        event = events_pb2.RunEvent(
            run_id=run_id, seq=seq, node_log=events_pb2.NodeLog(line=f"l{seq}", line_number=seq)
        )
        await conn.execute(
            "INSERT INTO events (run_id, seq, kind, event, pos) VALUES ($1, $2, 'node_log', $3, $4)",
            run_id,
            seq,
            event.SerializeToString(deterministic=True),
            pos,
        )


async def _where(conn: asyncpg.Connection, run_id: str) -> set[str]:
    rows = await conn.fetch(
        "SELECT DISTINCT tableoid::regclass::text AS t FROM events WHERE run_id = $1", run_id
    )
    return {r["t"] for r in rows}


async def test_retention_drops_a_partition_once_its_runs_are_pruned(
    database_url: str, tmp_path: Path
) -> None:
    pool, store = await _store(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        now = time.time()
        day_a, day_b = int(now // DAY) - 60, int(now // DAY) - 50
        # Partitions of two past days (as the server made them back then).
        await ensure_partitions(pool, ahead_days=0, now=day_a * DAY + 1)
        await ensure_partitions(pool, ahead_days=0, now=day_b * DAY + 1)
        names = await partition_days(pool)
        assert {day_a, day_b} <= set(names)
        # Day A: two runs that finished long ago. Day B: one that finished long
        # ago and one still unfinished (it pins the partition).
        a1, a2 = new_run_id(day_a * DAY + 10), new_run_id(day_a * DAY + 20)
        b_old, b_open = new_run_id(day_b * DAY + 10), new_run_id(day_b * DAY + 20)
        for run_id in (a1, a2, b_old):
            await _insert_run(conn, run_id, finished_days_ago=40)
        await _insert_run(conn, b_open, finished_days_ago=None)
        assert await _where(conn, a1) == {names[day_a]}
        assert await _where(conn, b_old) == {names[day_b]}
        assert bounds(day_a)[0] <= a1 < bounds(day_a)[1]

        retention = Retention(store, tmp_path / "workspaces", max_age=30 * DAY, batch=1)
        result = await retention.round()
        assert result.runs == 3
        after = await partition_days(pool)
        assert day_a not in after  # every run of day A was pruned: dropped whole
        assert day_b in after  # the unfinished run keeps day B
        assert await conn.fetchval("SELECT to_regclass($1)", names[day_a]) is None
        # In the kept partition the pruned run's events were not deleted row by
        # row (no bloat); they cannot be read, their run being gone.
        assert (
            await conn.fetchval(f"SELECT count(*) FROM {names[day_b]} WHERE run_id = $1", b_old)
            == 3
        )
        assert await store.read_events(b_old, 0, 100) is None
        assert len(await store.all_events(b_open)) == 3
        # Once the last run of day B finishes and ages out, its partition goes too.
        await conn.execute(
            "UPDATE runs SET end_time = now() - interval '40 days' WHERE run_id = $1", b_open
        )
        result = await retention.round()
        assert (result.runs, result.partitions_dropped) == (1, 1)
        assert day_b not in await partition_days(pool)
        assert (
            await conn.fetchval("SELECT count(*) FROM events WHERE run_id = ANY($1)", [a1, b_open])
            == 0
        )
    finally:
        await conn.close()
        await pool.close()


async def test_retention_makes_partitions_ahead_and_moves_a_day_out_of_the_default(
    database_url: str,
) -> None:
    pool, store = await _store(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        # Migrations make only the default partition; a server's start
        # (Retention.prepare) and each retention round make today and 3 days ahead.
        today = int(time.time() // DAY)
        assert await partition_days(pool) == {}
        created = await ensure_partitions(pool, ahead_days=3)
        assert len(created) == 4
        assert set(await partition_days(pool)) == set(range(today, today + 4))
        # A run of a day without a partition has its events in the default
        # partition: the insert never fails. Making the day moves them.
        day = today + 10
        run_id = new_run_id(day * DAY + 5)
        await _insert_run(conn, run_id, finished_days_ago=None, events=5)
        assert await _where(conn, run_id) == {"events_default"}
        created = await ensure_partitions(pool, ahead_days=0, now=day * DAY + 1)
        assert len(created) == 1
        assert await _where(conn, run_id) == set(created)
        assert [e.seq for e in await store.all_events(run_id)] == [1, 2, 3, 4, 5]
        assert await ensure_partitions(pool, ahead_days=0, now=day * DAY + 1) == []
    finally:
        await conn.close()
        await pool.close()


async def test_retention_server_start_makes_todays_partition(
    harness: Harness, database_url: str
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        run = await harness.start(_shell_flow())
        await harness.events(run.run_id)
        [where] = await _where(conn, run.run_id)
        assert where.startswith("events_p")
    finally:
        await conn.close()


def _violations(exc: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert status is not None
    out = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out += [v.field for v in bad.field_violations]
    return out


async def test_retention_prune_rejects_a_missing_or_negative_age(harness: Harness) -> None:
    for request in (
        admin_service_pb2.PruneRunsRequest(),
        _prune_request(-1),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await _admin(harness).PruneRuns(request)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert _violations(bad.value) == ["older_than"]


async def test_retention_prune_needs_an_admin_token_when_credentials_are_checked(
    harness_factory: Any,
) -> None:
    h: Harness = await harness_factory(auth_tokens=("user-token",), admin_tokens=("admin-token",))
    admin = _admin(h)
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await admin.PruneRuns(_prune_request(30))
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as user:
        await admin.PruneRuns(
            _prune_request(30), metadata=(("authorization", "Bearer user-token"),)
        )
    assert user.value.code() == grpc.StatusCode.PERMISSION_DENIED
    answer = await admin.PruneRuns(
        _prune_request(30), metadata=(("authorization", "Bearer admin-token"),)
    )
    assert answer.run_count == 0
    # The admin token is an auth token too.
    await h.stub.ListRuns(
        run_service_pb2.ListRunsRequest(), metadata=(("authorization", "Bearer admin-token"),)
    )


def test_retention_durations_parse() -> None:
    assert parse_duration("30d") == 30 * DAY
    assert parse_duration("1d12h") == 1.5 * DAY
    assert parse_duration("90m") == 5400
    assert parse_duration("2w") == 14 * DAY
    for bad in ("", "30", "d", "3x", "1d 2h", "-1d"):
        with pytest.raises(ValueError, match="is not a duration"):
            parse_duration(bad)


async def _runwire(h: Harness, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNWIRE_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runwire.cli", *args, "--addr", h.addr,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=env | {"XDG_CONFIG_HOME": "/nonexistent"},
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_retention_cli_runs_prune_dry_run_then_prune(
    harness: Harness, database_url: str
) -> None:
    runs = [await _finish(harness, _shell_flow()) for _ in range(3)]
    await _age(database_url, runs[:2], 31)
    code, out, err = await _runwire(harness, "runs", "prune", "--older-than", "30d", "--dry-run")
    assert (code, err) == (0, "")
    assert out.startswith("2 finished runs would be deleted")
    assert len(await harness.stored(runs[0])) > 0
    code, out, _ = await _runwire(harness, "runs", "prune", "--older-than", "30d", "-o", "json")
    assert code == 0
    assert json.loads(out)["runCount"] == "2"
    for run_id in runs[:2]:
        await _not_found(harness, run_id)
    assert (await harness.stub.GetRun(run_service_pb2.GetRunRequest(run_id=runs[2]))).run
    code, _, err = await _runwire(harness, "runs", "prune", "--older-than", "soon")
    assert code == 2
    assert "is not a duration" in err


async def test_retention_serve_flag_prunes_on_its_own_round(
    harness_factory: Any, database_url: str
) -> None:
    a: Harness = await harness_factory()  # retention off: keeps everything
    runs = [await _finish(a, _shell_flow()) for _ in range(3)]
    await _age(database_url, runs[:2], 8)
    assert a.server.retention is not None
    assert a.server.retention.max_age is None
    b: Harness = await harness_factory(retention=7 * DAY, retention_interval=3600.0)
    retention = b.server.retention
    assert retention is not None
    async with retention.round_done:  # the first round runs when the server starts
        await retention.round_done.wait_for(lambda: retention.rounds >= 1)
    for run_id in runs[:2]:
        await _not_found(a, run_id)
    assert len(await a.stored(runs[2])) > 0
    # The replica that did not prune removes the workspaces of the deleted runs
    # on its own round (this one runs with retention off).
    assert (a.data_dir / "workspaces" / runs[0]).is_dir()
    assert (await a.server.retention.round()).workspaces_removed == 2
    assert not (a.data_dir / "workspaces" / runs[0]).exists()
    assert (a.data_dir / "workspaces" / runs[2]).is_dir()


async def test_retention_two_replicas_prune_side_by_side(
    harness_factory: Any, database_url: str
) -> None:
    a: Harness = await harness_factory(retention_batch=3)
    b: Harness = await harness_factory(retention_batch=3)
    runs = [await _finish(h, _shell_flow()) for h in (a, b) for _ in range(6)]
    await _age(database_url, runs, 40)
    answers = await asyncio.gather(
        _admin(a).PruneRuns(_prune_request(30)), _admin(b).PruneRuns(_prune_request(30))
    )
    assert sum(x.run_count for x in answers) == len(runs)
    for run_id in runs:
        await _not_found(a, run_id)


async def _across_runs(
    h: Harness, request: run_service_pb2.WatchEventsRequest, runs: int
) -> list[Any]:
    """WatchEvents until `runs` RunCompleted events arrived; the events."""
    events: list[Any] = []
    call = h.stub.WatchEvents(request)
    try:
        async for response in call:
            events.extend(response.events)
            if sum(e.HasField("run_completed") for e in events) >= runs:
                return events
    finally:
        call.cancel()
    raise AssertionError("WatchEvents ended")


async def test_retention_raises_the_log_horizon_past_pruned_runs(
    harness: Harness, database_url: str
) -> None:
    """A pruned run's events, still in today's partition, never reach WatchEvents;
    a cursor from before the prune is CURSOR_EXPIRED, not a silent gap."""
    old, kept = await _finish(harness, _shell_flow()), await _finish(harness, _shell_flow())
    from_start = run_service_pb2.WatchEventsRequest(start=run_service_pb2.STREAM_START_EARLIEST)
    before = await _across_runs(harness, from_start, 2)
    assert {e.run_id for e in before} == {old, kept}
    first_cursor = run_service_pb2.WatchEventsRequest(cursor=encode_cursor(0))
    assert await _across_runs(harness, first_cursor, 2) == before
    await _age(database_url, [old], 10)
    assert (await _admin(harness).PruneRuns(_prune_request(7))).run_count == 1
    conn = await asyncpg.connect(database_url)
    try:  # the pruned run's events wait for their day's partition to be dropped
        assert await conn.fetchval("SELECT count(*) FROM events WHERE run_id = $1", old) > 0
    finally:
        await conn.close()
    with pytest.raises(grpc.aio.AioRpcError) as expired:
        await _across_runs(harness, first_cursor, 1)
    assert expired.value.code() == grpc.StatusCode.OUT_OF_RANGE
    after = await _across_runs(harness, from_start, 1)
    assert after == [e for e in before if e.run_id == kept]
