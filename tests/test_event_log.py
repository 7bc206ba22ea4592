"""The event log across runs (store/_log.py): positions in commit order, filters,
cursors, the retention horizon, and the migration of events stored before it."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from conftest import Harness, _with_db, collect, shell_node, util_node

from runwire.errors import CursorInvalid, InvalidArgument
from runwire.store import (
    LogFilter,
    decode_cursor,
    encode_cursor,
    log_bounds,
    mark_pruned,
    migrate,
    read_log,
)
from runwire.store._migrate import _migrations
from runwire.v1 import events_pb2, flow_pb2, run_service_pb2


def two_node_flow(name: str) -> flow_pb2.Flow:
    return flow_pb2.Flow(
        name=name,
        nodes=[shell_node("say", "echo", "hi"), util_node("shape", "set", value={"ok": True})],
        edges=[flow_pb2.Edge(source="say", target="shape")],
    )


async def _all(pool: Any, flt: LogFilter, after: int = 0, limit: int = 7) -> list[Any]:
    out = []
    while True:
        entries, looked = await read_log(pool, after, limit, flt, window=11)
        out += entries
        if looked == after:
            return out
        assert all(after < e.pos <= looked for e in entries)
        after = looked


async def test_event_log_positions_follow_commits_and_filters_select(harness: Harness) -> None:
    runs = [
        await harness.start(two_node_flow("a"), labels={"team": "x"}),
        await harness.start(two_node_flow("b")),
    ]
    stored = {r.run_id: await collect(harness.stub, r.run_id) for r in runs}
    pool = harness.server.store.pool  # type: ignore[union-attr]
    entries = await _all(pool, LogFilter())
    assert [e.pos for e in entries] == sorted({e.pos for e in entries})
    for run_id, events in stored.items():
        mine = [e for e in entries if e.run_id == run_id]
        assert [e.seq for e in mine] == [e.seq for e in events]
        assert [e.event for e in mine] == [
            ev.SerializeToString(deterministic=True) for ev in events
        ]
    _, latest = await log_bounds(pool)
    assert latest == entries[-1].pos

    only_a = await _all(pool, LogFilter(flow_name="a"))
    assert {e.run_id for e in only_a} == {runs[0].run_id}
    labelled = await _all(pool, LogFilter(labels=(("team", "x"),)))
    assert [e.pos for e in labelled] == [e.pos for e in only_a]
    finished = await _all(pool, LogFilter(run_statuses=(events_pb2.RUN_STATUS_SUCCEEDED,)))
    assert len(finished) == len(entries)
    logs = await _all(pool, LogFilter(kinds=frozenset({"node_log"})))
    assert {e.kind for e in logs} == {"node_log", "run_completed"}
    shaped = await _all(pool, LogFilter(node_ids=frozenset({"shape"})))
    nodes = {events_pb2.RunEvent.FromString(e.event).node_id for e in shaped}
    assert nodes == {"shape", ""}  # run-level events are not narrowed by node ids


async def test_event_log_cursor_round_trips_and_rejects_foreign_strings() -> None:
    for pos in (0, 1, 12345, (1 << 63) - 1):
        assert decode_cursor(encode_cursor(pos)) == pos
    for bad in ("", "x", "rwl1", encode_cursor(5) + "A", "a" * 100, "!!!!"):
        with pytest.raises(CursorInvalid):
            decode_cursor(bad)


def test_event_log_filter_names_the_bad_field() -> None:
    f = run_service_pb2.RunEventsFilter(
        events=run_service_pb2.EventFilter(kinds=["node_log", "nope"], node_ids=[""]),
        run_statuses=[0],
        labels={"Bad": "v"},
    )
    with pytest.raises(InvalidArgument) as caught:
        LogFilter.from_proto(f)
    fields = [v.field for v in caught.value.violations]
    assert fields == [
        "filter.events.kinds[1]",
        "filter.events.node_ids[0]",
        "filter.labels['Bad']",
        "filter.run_statuses[0]",
    ]
    with pytest.raises(InvalidArgument) as caught:
        LogFilter.for_run(run_service_pb2.EventFilter(kinds=["nodelog"]))
    assert [v.field for v in caught.value.violations] == ["filter.kinds[0]"]


async def test_event_log_horizon_rises_with_pruning(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        assert await log_bounds(conn) == (0, 0)
        await mark_pruned(conn, 7)
        await mark_pruned(conn, 3)  # never lowered
        assert await log_bounds(conn) == (7, 0)
    finally:
        await conn.close()


async def test_event_log_migration_numbers_events_stored_before_it(
    pg_url: str, database_url: str
) -> None:
    """A database at 0004 with events gets positions in run creation order."""
    name = urlsplit(database_url).path.strip("/") + "_old"
    admin = await asyncpg.connect(pg_url)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    conn = await asyncpg.connect(_with_db(pg_url, name))
    try:
        for version, _, sql in _migrations():
            if version < 5:
                await conn.execute(sql)
        await conn.execute(
            """CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,
                   applied_time timestamptz NOT NULL DEFAULT now())"""
        )
        await conn.executemany(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            [(v, n) for v, n, _ in _migrations() if v < 5],
        )
        for i, run_id in enumerate(("r_new", "r_old")):
            await conn.execute(
                """INSERT INTO runs (run_id, flow_name, flow_digest, flow, inputs, status,
                                     node_count, create_time)
                   VALUES ($1, 'f', 'd', '{}', '{}', 4, 1, now() - make_interval(secs => $2))""",
                run_id,
                float(i),
            )
            await conn.executemany(
                "INSERT INTO events (run_id, seq, kind, event) VALUES ($1, $2, 'node_log', '')",
                [(run_id, s) for s in (1, 2)],
            )
        await migrate(conn)
        rows = await conn.fetch("SELECT run_id, seq, pos FROM events ORDER BY pos")
        assert [(r["run_id"], r["seq"], r["pos"]) for r in rows] == [
            ("r_old", 1, 1),
            ("r_old", 2, 2),
            ("r_new", 1, 3),
            ("r_new", 2, 4),
        ]
        assert await log_bounds(conn) == (0, 4)
    finally:
        await conn.close()
        admin = await asyncpg.connect(pg_url)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await admin.close()


async def test_event_log_wakes_readers_on_commits(harness: Harness) -> None:
    changed = harness.server.hub.log_changed()
    assert not changed.is_set()
    await harness.start(two_node_flow("w"))
    await asyncio.wait_for(changed.wait(), 30)
