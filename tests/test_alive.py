"""Alive or honestly dead (promise 10): a server whose database blinks recovers
on its own; a server that cannot go on dies loudly; never neither.

The database is disrupted for real: backends terminated server-side, a
Postgres of the test's own restarted with `pg_ctl -m fast`, a loopback proxy
that resets the server's sockets or refuses them for longer than a lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import struct
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from _live_procs import ServerProcess
from _pg import RestartablePostgres
from conftest import (
    assert_grammar,
    collect,
    make_settings,
    shell_node,
    wait_for_event,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc

from runwire.rpc import RunwireServer
from runwire.store import migrate
from runwire.v1 import events_pb2, flow_pb2, run_service_pb2, run_service_pb2_grpc

# Disruptions that let the database come back must end in recovery well
# within this; only a hung server ever waits it out.
DEADLINE = 90.0


async def until(
    what: str, check: Callable[[], Awaitable[bool]], deadline: float = DEADLINE
) -> None:
    """Poll a condition (not a timer) until it holds or the deadline passes."""
    end = time.monotonic() + deadline
    while not await check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def chatty_flow(name: str, nodes: int = 8) -> flow_pb2.Flow:
    """Sequential shell nodes that log many lines: many events, many commits."""
    ids = [f"n{i}" for i in range(nodes)]
    return flow_pb2.Flow(
        name=name,
        nodes=[shell_node(i, "sh", "-c", "seq 1 150; sleep 0.2") for i in ids],
        edges=[flow_pb2.Edge(source=a, target=b) for a, b in itertools.pairwise(ids)],
    )


@dataclass
class Live:
    server: RunwireServer
    channel: grpc.aio.Channel
    stub: run_service_pb2_grpc.RunServiceStub

    async def serving(self) -> bool:
        health = health_pb2_grpc.HealthStub(self.channel)
        got = await health.Check(health_pb2.HealthCheckRequest(service="runwire.v1.RunService"))
        return bool(got.status == health_pb2.HealthCheckResponse.SERVING)


@contextlib.asynccontextmanager
async def live_server(url: str, data_dir: Path, **overrides: Any) -> AsyncIterator[Live]:
    server = RunwireServer(make_settings(url, data_dir, **overrides))
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield Live(server, channel, run_service_pb2_grpc.RunServiceStub(channel))
    finally:
        await channel.close()
        await server.stop(grace=0.5)


async def start_runs(stub: run_service_pb2_grpc.RunServiceStub, count: int) -> list[str]:
    ids = []
    for i in range(count):
        response = await stub.StartRun(
            run_service_pb2.StartRunRequest(flow=chatty_flow(f"load-{i}"))
        )
        ids.append(response.run.run_id)
    return ids


async def resuming_watch(
    stub: run_service_pb2_grpc.RunServiceStub, run_id: str
) -> tuple[list[events_pb2.RunEvent], list[grpc.StatusCode]]:
    """Watch to RunCompleted, resuming after UNAVAILABLE; the events and the errors seen."""
    events: list[events_pb2.RunEvent] = []
    codes: list[grpc.StatusCode] = []
    while True:
        after = events[-1].seq if events else 0
        try:
            async for response in stub.WatchRun(
                run_service_pb2.WatchRunRequest(run_id=run_id, after_seq=after)
            ):
                events.extend(response.events)
            return events, codes
        except grpc.aio.AioRpcError as exc:
            codes.append(exc.code())
            if exc.code() != grpc.StatusCode.UNAVAILABLE or len(codes) > 200:
                return events, codes


async def assert_all_succeed(live: Live, run_ids: list[str]) -> None:
    """Every run ends SUCCEEDED with a gapless, grammatical stream equal to the store's."""
    assert live.server.store is not None
    for run_id in run_ids:
        watched = await collect(live.stub, run_id)
        assert_grammar(watched)
        assert watched[-1].run_completed.status == events_pb2.RUN_STATUS_SUCCEEDED
        stored = await live.server.store.all_events(run_id)
        assert (
            [e.seq for e in watched] == [s.seq for s in stored] == list(range(1, len(stored) + 1))
        )


# -- a database that blinks: recover --------------------------------------------


@dataclass
class PgDatabase:
    pg: RestartablePostgres
    url: str


@pytest.fixture(scope="module")
def restartable_pg() -> Any:
    pg = RestartablePostgres()
    pg.start()
    yield pg
    pg.stop()


@pytest.fixture
async def own_db(restartable_pg: RestartablePostgres) -> PgDatabase:
    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(restartable_pg.url())
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    url = restartable_pg.url(name)
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return PgDatabase(restartable_pg, url)


async def test_writer_recovers_when_its_backends_are_terminated(
    database_url: str, tmp_path: Path
) -> None:
    """Server-side terminate, again and again, of every backend the server holds
    (the writer's among them, often mid-COMMIT) while 10 runs commit events."""
    async with live_server(database_url, tmp_path) as live:
        run_ids = await start_runs(live.stub, 10)
        watchers = [asyncio.ensure_future(resuming_watch(live.stub, r)) for r in run_ids]
        admin = await asyncpg.connect(database_url)
        try:
            killed = 0
            for _ in range(60):
                killed += await admin.fetchval(
                    """SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                       WHERE datname = current_database() AND pid <> pg_backend_pid()"""
                )
                unfinished = await admin.fetchval(
                    "SELECT count(*) FROM runs WHERE end_time IS NULL"
                )
                if not unfinished:
                    break
                await asyncio.sleep(0.03)  # the disruption's pace, not a synchronisation
        finally:
            await admin.close()
        assert killed > 10
        await assert_all_succeed(live, run_ids)
        assert live.server.store is not None
        for run_id, watcher in zip(run_ids, watchers, strict=True):
            events, codes = await watcher
            assert_grammar(events)
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            assert len(events) == len(await live.server.store.all_events(run_id))
            assert set(codes) <= {grpc.StatusCode.UNAVAILABLE}, codes
        await until("health SERVING", live.serving)
        assert live.server.failure is None


async def test_writer_recovers_from_fast_postgres_restarts(
    own_db: PgDatabase, tmp_path: Path
) -> None:
    """`pg_ctl -m fast restart` three times under 10 concurrent runs: the runs
    finish, nothing is lost, and the server is SERVING again on its own."""
    async with live_server(own_db.url, tmp_path) as live:
        run_ids = await start_runs(live.stub, 10)
        writer = live.server._writer
        assert writer is not None
        for _ in range(3):
            before = writer.batches_committed

            async def committing(before: int = before) -> bool:
                # (Or nothing left to commit: the runs all finished already.)
                return writer.batches_committed > before or not live.server.engine.running()

            await until("a commit before the restart", committing)
            await asyncio.to_thread(own_db.pg.restart_fast)
        await assert_all_succeed(live, run_ids)
        await until("health SERVING", live.serving)
        assert live.server.failure is None


_RESET_ON_CLOSE = struct.pack("ii", 1, 0)


class PgProxy:
    """127.0.0.1:0 -> Postgres; `cut()` resets every socket, `block()` refuses new ones."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.blocked = False
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def cut(self) -> int:
        links = list(self._links)
        for client, upstream in links:
            sock = client.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
            client.transport.abort()
            upstream.transport.abort()
        return len(links)

    def block(self) -> None:
        self.blocked = True
        self.cut()

    async def close(self) -> None:
        self.block()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.blocked:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        link = (writer, up_writer)
        self._links.add(link)
        pumps = [
            asyncio.ensure_future(_pump(reader, up_writer)),
            asyncio.ensure_future(_pump(up_reader, writer)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._links.discard(link)
            writer.transport.abort()
            up_writer.transport.abort()
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()


@pytest.fixture
async def proxy(own_db: PgDatabase) -> AsyncIterator[tuple[PgProxy, str]]:
    p = PgProxy(own_db.pg.port)
    await p.start()
    name = own_db.url.rsplit("/", 1)[1]
    yield p, f"postgresql://postgres@127.0.0.1:{p.port}/{name}"
    await p.close()


async def test_writer_recovers_when_a_proxy_resets_its_sockets(
    proxy: tuple[PgProxy, str], tmp_path: Path
) -> None:
    """A middlebox resets every database socket (RST, mid-COMMIT or not), over and over."""
    p, url = proxy
    async with live_server(url, tmp_path) as live:
        run_ids = await start_runs(live.stub, 10)
        writer = live.server._writer
        assert writer is not None
        cuts = 0
        for _ in range(8):
            before = writer.batches_committed

            async def committing(before: int = before) -> bool:
                # (Or nothing left to commit: the runs all finished already.)
                return writer.batches_committed > before or not live.server.engine.running()

            await until("a commit before the cut", committing)
            cuts += p.cut()
        assert cuts >= 8
        await assert_all_succeed(live, run_ids)
        await until("health SERVING", live.serving)
        assert live.server.failure is None


async def test_database_gone_past_a_lease_stops_runs_then_they_resume(
    proxy: tuple[PgProxy, str], tmp_path: Path
) -> None:
    """A server that cannot renew its leases for a whole lease period cannot prove
    it holds its runs: it reports NOT_SERVING and stops them (no new node
    attempts); when the database is back it takes them over and finishes them."""
    p, url = proxy
    async with live_server(url, tmp_path, lease_seconds=1.0) as live:
        flow = flow_pb2.Flow(
            name="outage",
            nodes=[shell_node("nap", "sleep", "3"), shell_node("after", "echo", "done")],
            edges=[flow_pb2.Edge(source="nap", target="after")],
        )
        run = (await live.stub.StartRun(run_service_pb2.StartRunRequest(flow=flow))).run
        await wait_for_event(live.stub, run.run_id, lambda e: e.HasField("node_started"))
        engine = live.server.engine
        assert engine is not None
        p.block()

        async def not_serving() -> bool:
            return not await live.serving()

        async def stopped() -> bool:
            return not engine.running()

        await until("health NOT_SERVING", not_serving)
        await until("the run stopped here", stopped)
        p.blocked = False
        events = await collect(live.stub, run.run_id)
        assert_grammar(events)
        assert events[-1].run_completed.status == events_pb2.RUN_STATUS_SUCCEEDED
        assert [e.node_id for e in events if e.HasField("node_succeeded")] == ["nap", "after"]
        await until("health SERVING", live.serving)
        assert live.server.failure is None


# -- a server that cannot go on: die loudly ----------------------------------------


async def test_server_dies_loudly_when_the_writer_cannot_go_on(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An error no restart explains (here: the events table is gone) ends the
    writer; the server then renews no lease, runs nothing, says NOT_SERVING and
    UNAVAILABLE, and logs why."""
    async with live_server(database_url, tmp_path, lease_seconds=30.0) as live:
        flow = flow_pb2.Flow(name="doomed", nodes=[shell_node("nap", "sleep", "30")])
        run = (await live.stub.StartRun(run_service_pb2.StartRunRequest(flow=flow))).run
        await wait_for_event(live.stub, run.run_id, lambda e: e.HasField("node_heartbeat"))
        admin = await asyncpg.connect(database_url)
        try:
            await admin.execute("ALTER TABLE events RENAME TO events_gone")
            await asyncio.wait_for(live.server.dead.wait(), DEADLINE)
            assert live.server.failure is not None
            assert "event writer" in live.server.failure
            assert not await live.serving()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await live.stub.StartRun(run_service_pb2.StartRunRequest(flow=flow))
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert live.server.engine is not None
            assert live.server.engine.running() == []
            assert live.server.replica is not None
            assert live.server.replica.task is not None
            assert live.server.replica.task.done(), "a dead server renews no lease"
            assert any("FATAL" in r.getMessage() for r in caplog.records)
        finally:
            await admin.execute("ALTER TABLE events_gone RENAME TO events")
            await admin.close()


def _processes_with(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


async def test_serve_exits_non_zero_when_a_vital_task_dies(
    database_url: str, tmp_path: Path
) -> None:
    """`runwire serve` goes dead and exits 3, killing its node's process group,
    so a supervisor restarts it; it never lingers half-alive."""
    server = ServerProcess(database_url, tmp_path / "server", ["--shell-allow", "sleep"])
    await server.start()
    marker = f"{int(uuid.uuid4().int % 1000)}.{os.getpid()}"
    try:
        async with grpc.aio.insecure_channel(server.addr) as channel:
            stub = run_service_pb2_grpc.RunServiceStub(channel)
            flow = flow_pb2.Flow(name="doomed", nodes=[shell_node("nap", "sleep", "60", marker)])
            run = (await stub.StartRun(run_service_pb2.StartRunRequest(flow=flow))).run
            await wait_for_event(stub, run.run_id, lambda e: e.HasField("node_heartbeat"))
        assert _processes_with(marker)
        admin = await asyncpg.connect(database_url)
        try:
            await admin.execute("ALTER TABLE events RENAME TO events_gone")
            assert server.proc is not None
            code = await asyncio.wait_for(server.proc.wait(), DEADLINE)
        finally:
            await admin.close()
        assert code == 3, server.log_tail()
        assert "FATAL" in server.log_path.read_text(), server.log_tail()
        assert _processes_with(marker) == []
    finally:
        await server.kill()


# -- a zombie starts nothing ---------------------------------------------------------


async def test_frozen_server_resumed_after_takeover_starts_nothing(
    database_url: str, tmp_path: Path
) -> None:
    """A replica frozen (SIGSTOP) past its lease while another takes its run over
    and finishes it, then resumed (SIGCONT): it commits nothing, starts no node
    of that run, and stops executing it."""
    side_effects = tmp_path / "side-effects"
    side_effects.mkdir()
    ids = [f"s{i}" for i in range(6)]
    nodes = [shell_node("first", "sleep", "1.5")]
    for node_id in ids:
        nodes.append(shell_node(node_id, "touch", str(side_effects / node_id)))
    chain = ["first", *ids]
    flow = flow_pb2.Flow(
        name="zombie",
        nodes=nodes,
        edges=[flow_pb2.Edge(source=a, target=b) for a, b in itertools.pairwise(chain)],
    )
    zombie = ServerProcess(
        database_url,
        tmp_path / "zombie",
        ["--shell-allow", "sleep", "--shell-allow", "touch", "--lease-seconds", "1"],
    )
    await zombie.start()
    try:
        async with grpc.aio.insecure_channel(zombie.addr) as channel:
            stub = run_service_pb2_grpc.RunServiceStub(channel)
            run = (await stub.StartRun(run_service_pb2.StartRunRequest(flow=flow))).run
            await wait_for_event(stub, run.run_id, lambda e: e.HasField("node_started"))
        assert zombie.proc is not None
        os.killpg(zombie.proc.pid, signal.SIGSTOP)  # the server and its `sleep` child
        async with live_server(
            database_url,
            tmp_path / "successor",
            lease_seconds=1.0,
            shell_allow=("sleep", "touch"),
        ) as successor:
            events = await collect(successor.stub, run.run_id)
            assert events[-1].run_completed.status == events_pb2.RUN_STATUS_SUCCEEDED
            for node_id in ids:
                (side_effects / node_id).unlink()
            finished_at = events[-1].seq
            os.killpg(zombie.proc.pid, signal.SIGCONT)
            admin = await asyncpg.connect(database_url)
            try:
                # The zombie's lease task runs within a third of a lease of
                # resuming; by then it has stopped the run. Wait for its log.
                async def noticed() -> bool:
                    return "stopping it here" in zombie.log_path.read_text()

                await until("the zombie to notice", noticed)
                last = await admin.fetchval(
                    "SELECT max(seq) FROM events WHERE run_id = $1", run.run_id
                )
            finally:
                await admin.close()
            assert last == finished_at, "the zombie committed events"
            assert sorted(p.name for p in side_effects.iterdir()) == [], (
                "the zombie started nodes of a run another server finished"
            )
    finally:
        with contextlib.suppress(ProcessLookupError):
            if zombie.proc is not None:
                os.killpg(zombie.proc.pid, signal.SIGCONT)
        await zombie.kill()


async def test_drain_ends_while_the_database_is_gone(
    proxy: tuple[PgProxy, str], tmp_path: Path
) -> None:
    """Regression: SIGTERM hung in flush() when the writer could not commit. A
    drain with the database unreachable gives up on it after bounded waits."""
    p, url = proxy
    server = RunwireServer(make_settings(url, tmp_path, drain_grace=1.0))
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = run_service_pb2_grpc.RunServiceStub(channel)
        run_ids = await start_runs(stub, 3)
        await wait_for_event(stub, run_ids[-1], lambda e: e.HasField("node_log"))
    p.block()
    await asyncio.wait_for(server.drain(), DEADLINE)
    p.blocked = False
    conn = await asyncpg.connect(url)
    try:
        unfinished = await conn.fetchval("SELECT count(*) FROM runs WHERE end_time IS NULL")
    finally:
        await conn.close()
    assert unfinished >= 1  # left for a takeover, not finished by a dying server
