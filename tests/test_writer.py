"""The event writer on its own, against a real Postgres: it commits at once when
idle, batches only what arrived while a commit was in flight, bounds its
batches, and spends one statement (one round trip) per commit on one
connection of its own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest

from runwire.store import EventWriter
from runwire.store._hub import Hub
from runwire.store._writer import _COMMIT, _Pending, commit_args
from runwire.v1 import events_pb2

DEADLINE = 30.0
OWNER = "writer-test"


async def until(what: str, check: Callable[[], Awaitable[bool]]) -> None:
    """Poll a condition (not a timer) until it holds or the deadline passes."""
    end = time.monotonic() + DEADLINE
    while not await check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def log_event(run_id: str, seq: int) -> events_pb2.RunEvent:
    return events_pb2.RunEvent(
        run_id=run_id, seq=seq, node_log=events_pb2.NodeLog(line=f"line {seq}", line_number=seq)
    )


@dataclass
class Rig:
    writer: EventWriter
    admin: asyncpg.Connection
    connects: int = 0
    queries: list[str] = field(default_factory=list)

    async def new_run(self, run_id: str) -> None:
        await self.admin.execute(
            """INSERT INTO runs (run_id, flow_name, flow_digest, flow, inputs, status,
                                 node_count, owner_id, lease_expire_time)
               VALUES ($1, 'f', 'd', '{}', '{}', 1, 1, $2, now() + interval '1 minute')""",
            run_id,
            OWNER,
        )

    async def stored(self, run_id: str) -> list[int]:
        rows = await self.admin.fetch(
            "SELECT seq FROM events WHERE run_id = $1 ORDER BY seq", run_id
        )
        return [r["seq"] for r in rows]


@pytest.fixture
async def rig(database_url: str) -> AsyncIterator[Rig]:
    admin = await asyncpg.connect(database_url)
    holder: list[Rig] = []

    async def connect() -> asyncpg.Connection:
        conn = await asyncpg.connect(database_url)
        holder[0].connects += 1
        conn.add_query_logger(lambda q: holder[0].queries.append(q.query))
        return conn

    writer = EventWriter(connect, Hub(), owner_id=OWNER, lease_seconds=30.0)
    holder.append(Rig(writer, admin))
    writer.start()
    try:
        yield holder[0]
    finally:
        await writer.stop(wait=5)
        await admin.close()


async def writer_waits_on_lock(rig: Rig) -> bool:
    # (The admin connection sits in a transaction, where pg_stat_activity is
    # a snapshot: clear it.)
    await rig.admin.execute("SELECT pg_stat_clear_snapshot()")
    waiting: Any = await rig.admin.fetchval(
        """SELECT count(*) FROM pg_stat_activity
           WHERE wait_event_type = 'Lock' AND query LIKE '%runwire: event commit%'"""
    )
    return bool(waiting)


async def test_writer_commits_at_once_and_batches_only_what_came_in_flight(rig: Rig) -> None:
    """An idle writer takes the first event at once (within a few loop steps,
    no gather); the events appended while its commit is held up by a row lock
    wait, and make the next batch together."""
    await rig.new_run("r1")
    lock = rig.admin.transaction()
    await lock.start()
    try:
        await rig.admin.execute("SELECT 1 FROM runs WHERE run_id = 'r1' FOR UPDATE")
        rig.writer.append("r1", [log_event("r1", 1)])
        for _ in range(5):
            await asyncio.sleep(0)  # loop steps, not time
        assert rig.writer.pending == 0, "an idle writer sends at once"
        await until(
            "the writer's commit to wait on the row lock", lambda: writer_waits_on_lock(rig)
        )
        for s in range(2, 102):
            rig.writer.append("r1", [log_event("r1", s)])
        assert rig.writer.pending == 100, "nothing is sent while a commit is in flight"
    finally:
        await lock.rollback()
    await rig.writer.flush()
    assert rig.writer.batches_committed == 2
    assert rig.writer.largest_batch == 100
    assert await rig.stored("r1") == list(range(1, 102))


async def test_writer_bounds_its_batches(rig: Rig) -> None:
    """A backlog far larger than a batch is committed in bounded batches, in order."""
    await rig.new_run("big")
    await rig.new_run("small")
    for s in range(1, 10_001):
        rig.writer.append("big", [log_event("big", s)])
    rig.writer.append("small", [log_event("small", 1)])
    await rig.writer.flush()
    assert rig.writer.largest_batch <= 2_000
    assert rig.writer.batches_committed >= 5
    assert await rig.stored("big") == list(range(1, 10_001))
    assert await rig.stored("small") == [1]


async def test_writer_commits_in_one_statement_on_one_connection(rig: Rig) -> None:
    """Each commit is one statement on the writer's own connection: no BEGIN,
    no COMMIT, no pool reset, no new connection per batch. (The first commit
    on a connection also prepares the statement and looks up its types.)"""
    await rig.new_run("r")
    rig.writer.append("r", [log_event("r", 1)])
    await rig.writer.flush()
    before, batches = len(rig.queries), rig.writer.batches_committed
    for s in range(2, 22):
        rig.writer.append("r", [log_event("r", s)])
        await rig.writer.flush()
    assert rig.connects == 1
    assert rig.writer.batches_committed - batches == 20
    statements = rig.queries[before:]
    assert len(statements) == 20, statements
    assert all("runwire: event commit" in q for q in statements)
    assert await rig.stored("r") == list(range(1, 22))


async def test_writer_settled_waits_for_the_commit_in_flight_after_a_discard(rig: Rig) -> None:
    """A commit sent before discard() may still land: settled() returns only
    once it is over, so a claim made afterwards reads a stream that no event of
    the earlier life joins later."""
    await rig.new_run("r")
    lock = rig.admin.transaction()
    await lock.start()
    try:
        await rig.admin.execute("SELECT 1 FROM runs WHERE run_id = 'r' FOR UPDATE")
        rig.writer.append("r", [log_event("r", 1)])
        await until(
            "the writer's commit to wait on the row lock", lambda: writer_waits_on_lock(rig)
        )
        assert rig.writer.discard("r") == 0  # nothing queued: it is in flight
        settled = asyncio.ensure_future(rig.writer.settled("r"))
        for _ in range(5):
            await asyncio.sleep(0)  # loop steps, not time
        assert not settled.done(), "the commit in flight is not over"
    finally:
        await lock.rollback()
    await asyncio.wait_for(settled, DEADLINE)
    assert rig.writer.holds("r"), "a discarded run is not a fenced one"
    await rig.writer.settled("other")  # no commit in flight carries it: at once


async def test_a_batch_committed_again_after_a_lost_reply_adds_nothing(rig: Rig) -> None:
    """The writer retries a batch whose reply was lost; the batch had committed
    whole. Sent again (with events of another run beside it), the statement
    writes none of its events twice and does not fail, and the new run's events
    get positions above every position taken before."""

    def pending(run_id: str, seqs: range) -> _Pending:
        # Lines of growing length, so the payloads differ in size.
        events = [log_event(run_id, s) for s in seqs]
        for e in events:
            e.node_log.line = "x" * e.seq
        return _Pending(
            run_id,
            seqs=list(seqs),
            kinds=["node_log"] * len(events),
            payloads=[e.SerializeToString(deterministic=True) for e in events],
        )

    await rig.new_run("once")
    await rig.new_run("later")
    batch = [pending("once", range(1, 51))]
    first = await rig.admin.fetch(_COMMIT, *commit_args(batch, OWNER, 30.0, "test"))
    assert [r["run_id"] for r in first] == ["once"]
    positions = await rig.admin.fetch(
        "SELECT seq, pos FROM events WHERE run_id = 'once' ORDER BY seq"
    )
    again = [*batch, pending("later", range(1, 4))]
    second = await rig.admin.fetch(_COMMIT, *commit_args(again, OWNER, 30.0, "test"))
    assert sorted(r["run_id"] for r in second) == ["later", "once"]
    assert await rig.stored("once") == list(range(1, 51))
    assert (
        await rig.admin.fetch("SELECT seq, pos FROM events WHERE run_id = 'once' ORDER BY seq")
        == positions
    ), "the repeated events were not written again"
    later = [
        r["pos"]
        for r in await rig.admin.fetch("SELECT pos FROM events WHERE run_id = 'later' ORDER BY seq")
    ]
    assert len(later) == 3
    assert later == sorted(later)
    assert later[0] > max(r["pos"] for r in positions)
    assert await rig.admin.fetchval("SELECT last_seq FROM runs WHERE run_id = 'once'") == 50
    stored = await rig.admin.fetch("SELECT run_id, seq, kind, event FROM events ORDER BY pos")
    sent = [
        (p.run_id, seq, kind, payload)
        for p in again
        for seq, kind, payload in zip(p.seqs, p.kinds, p.payloads, strict=True)
    ]
    assert [tuple(r) for r in stored] == sent, "every event byte for byte, in batch order"
