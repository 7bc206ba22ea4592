"""The cross-run cursor never skips an event whose transaction committed after a
later-numbered one was seen: slow and fast committing writers interleaved across
two `runwire serve` processes, read through both with WatchEvents."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import grpc
from _live_procs import ServerProcess
from conftest import shell_node

from runwire.store._writer import _COMMIT, _Pending, commit_args
from runwire.v1 import events_pb2, flow_pb2, run_service_pb2, run_service_pb2_grpc

ROUNDS = 3
SLOW_EVENTS = 5
DEADLINE = 60.0


def _flow(i: int) -> flow_pb2.Flow:
    return flow_pb2.Flow(name=f"fast-{i}", nodes=[shell_node("say", "echo", str(i))])


async def _slow_writer_holds(conn: asyncpg.Connection, run_id: str, first_seq: int) -> None:
    """Run the writer's own commit statement for a run this connection 'owns',
    leaving its transaction open (the caller commits it later)."""
    seqs = list(range(first_seq, first_seq + SLOW_EVENTS))
    payloads = [
        events_pb2.RunEvent(
            run_id=run_id, seq=s, node_log=events_pb2.NodeLog(line="slow", line_number=s)
        ).SerializeToString(deterministic=True)
        for s in seqs
    ]
    await conn.execute("BEGIN")
    pending = _Pending(run_id, seqs=seqs, kinds=["node_log"] * len(seqs), payloads=payloads)
    await conn.fetch(_COMMIT, *commit_args([pending], "slowpoke", 3600.0, "slowpoke"))


class Reader:
    def __init__(self, addr: str) -> None:
        self.channel = grpc.aio.insecure_channel(addr)
        stub = run_service_pb2_grpc.RunServiceStub(self.channel)
        self.call = stub.WatchEvents(
            run_service_pb2.WatchEventsRequest(start=run_service_pb2.STREAM_START_EARLIEST)
        )
        self.seen: list[tuple[str, int]] = []
        self.completed: set[str] = set()
        self.changed = asyncio.Event()
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for response in self.call:
            self.seen.extend((e.run_id, e.seq) for e in response.events)
            self.completed.update(e.run_id for e in response.events if e.HasField("run_completed"))
            self.changed.set()

    async def until(self, count: int) -> None:
        while len(self.seen) < count:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), DEADLINE)

    async def until_completed(self, run_ids: set[str]) -> None:
        while not run_ids <= self.completed:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), DEADLINE)

    async def close(self) -> None:
        self.call.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.channel.close()


async def _writers_waiting(admin: asyncpg.Connection, readers: list[Reader], before: int) -> None:
    """Until both servers' writers wait for the slow transaction (its counter lock)
    (or, were positions not taken in commit order, until a reader got past it)."""
    async with asyncio.timeout(DEADLINE):
        while True:
            waiting = await admin.fetchval(
                """SELECT count(*) FROM pg_stat_activity
                   WHERE datname = current_database() AND wait_event_type = 'Lock'
                     AND query LIKE '%runwire: event commit%'"""
            )
            if waiting >= 2 or any(len(r.seen) > before for r in readers):
                return
            await asyncio.sleep(0.02)  # polling a condition in Postgres, not a guess at timing


async def test_log_order_slow_and_fast_writers_across_two_processes(
    database_url: str, tmp_path: Path
) -> None:
    servers = [
        ServerProcess(database_url, tmp_path / f"s{i}", ["--shell-allow", "echo"]) for i in range(2)
    ]
    for server in servers:
        await server.start()
    admin = await asyncpg.connect(database_url)
    slow = await asyncpg.connect(database_url)
    readers = [Reader(s.addr) for s in servers]
    channels = [grpc.aio.insecure_channel(s.addr) for s in servers]
    stubs = [run_service_pb2_grpc.RunServiceStub(c) for c in channels]
    try:
        # A run the test's own "writer" owns; finished, so no server claims it.
        await admin.execute(
            """INSERT INTO runs (run_id, flow_name, flow_digest, flow, inputs, status, node_count,
                                 owner_id, lease_expire_time, end_time)
               VALUES ('run_slow', 'slow', 'd', '{}', '{}', 2, 1, 'slowpoke',
                       now() + interval '1 hour', now())"""
        )
        runs = 0
        slow_ids: list[list[tuple[str, int]]] = []
        fast_ids: list[set[str]] = []
        for round_ in range(ROUNDS):
            before = len(readers[0].seen)
            first_seq = round_ * SLOW_EVENTS + 1
            await _slow_writer_holds(slow, "run_slow", first_seq)
            slow_ids.append([("run_slow", s) for s in range(first_seq, first_seq + SLOW_EVENTS)])
            # Both processes commit runs while the slow transaction is open.
            started = [
                (
                    await stubs[i % 2].StartRun(
                        run_service_pb2.StartRunRequest(flow=_flow(runs + i))
                    )
                ).run
                for i in range(4)
            ]
            runs += len(started)
            fast_ids.append({r.run_id for r in started})
            await _writers_waiting(admin, readers, before)
            # Nothing committed after the slow transaction took its positions
            # has reached a reader before it.
            assert [len(r.seen) for r in readers] == [before, before]
            await slow.execute("COMMIT")
            for reader in readers:
                await reader.until_completed(fast_ids[-1])
            total = await admin.fetchval("SELECT count(*) FROM events")
            for reader in readers:
                await reader.until(total)
        order = [
            (r["run_id"], r["seq"])
            for r in await admin.fetch("SELECT run_id, seq FROM events ORDER BY pos")
        ]
        for reader in readers:
            assert reader.seen == order, json.dumps(
                {"missing": sorted(set(order) - set(reader.seen))[:10], "count": len(reader.seen)}
            )
        # Each round's slow events come before every event of the runs that
        # committed while it was open: they waited for its positions.
        for slow_round, fast_round in zip(slow_ids, fast_ids, strict=True):
            last_slow = max(order.index(k) for k in slow_round)
            first_fast = min(i for i, (run_id, _) in enumerate(order) if run_id in fast_round)
            assert last_slow < first_fast
    finally:
        for reader in readers:
            await reader.close()
        for channel in channels:
            await channel.close()
        await slow.close()
        await admin.close()
        for server in servers:
            await server.terminate()
