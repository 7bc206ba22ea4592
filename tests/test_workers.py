"""`runwire serve --workers N`: processes sharing one port and one database.

Real server processes, real gRPC over loopback, a fresh database per test."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import BinaryIO

import asyncpg
import grpc

from runwire.v1 import events_pb2, flow_pb2, run_service_pb2, run_service_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
DEADLINE = 60.0
# One connection per channel, as separate clients would have.
_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


def _log_file(data_dir: Path) -> BinaryIO:
    data_dir.mkdir(parents=True, exist_ok=True)
    return (data_dir / "server.log").open("ab")


async def serve(
    database_url: str, data_dir: Path, listen: str, workers: int
) -> asyncio.subprocess.Process:
    log = _log_file(data_dir)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "runwire.cli",
        "serve",
        "--listen",
        listen,
        "--data-dir",
        str(data_dir),
        "--database-url",
        database_url,
        cwd=ROOT,
        env={**os.environ, "RUNWIRE_LOG_LEVEL": "WARNING", "RUNWIRE_WORKERS": str(workers)},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
    )
    log.close()
    return proc


@asynccontextmanager
async def workers(database_url: str, data_dir: Path, n: int) -> AsyncIterator[str]:
    proc = await serve(database_url, data_dir, "127.0.0.1:0", n)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), DEADLINE)).decode()
        assert line.startswith("runwire listening on "), (data_dir / "server.log").read_text()
        yield line.split()[-1]
    finally:
        if proc.returncode is None:
            proc.terminate()
        assert await asyncio.wait_for(proc.wait(), DEADLINE) == 0


def gate_flow(name: str) -> flow_pb2.Flow:
    return flow_pb2.Flow(
        name=name, nodes=[flow_pb2.Node(id="gate", approval=flow_pb2.ApprovalNode(message="go?"))]
    )


async def owner_of(db: asyncpg.Connection, run_id: str) -> str:
    owner: str = await db.fetchval("SELECT owner_id FROM runs WHERE run_id = $1", run_id)
    return owner


async def test_workers_run_started_through_one_is_watched_through_another(
    database_url: str, tmp_path: Path
) -> None:
    """Two workers share the port: connections reach both (each run is owned by
    the worker its StartRun reached), and a watcher connected to one worker
    follows, and resolves, a run the other executes."""
    db = await asyncpg.connect(database_url)
    channels: list[grpc.aio.Channel] = []
    try:
        async with workers(database_url, tmp_path, 2) as addr:
            by_owner: dict[str, run_service_pb2_grpc.RunServiceStub] = {}
            # Which worker a connection reached shows in the owner of a run
            # started through it; the kernel spreads connections by their ports.
            for _ in range(32):
                channel = grpc.aio.insecure_channel(addr, options=_OPTIONS)
                channels.append(channel)
                stub = run_service_pb2_grpc.RunServiceStub(channel)
                probe = await stub.StartRun(
                    run_service_pb2.StartRunRequest(flow=gate_flow("which")), timeout=DEADLINE
                )
                await stub.CancelRun(
                    run_service_pb2.CancelRunRequest(run_id=probe.run.run_id), timeout=DEADLINE
                )
                by_owner.setdefault(await owner_of(db, probe.run.run_id), stub)
                if len(by_owner) == 2:
                    break
            assert len(by_owner) == 2, "every connection reached the same worker"
            (owner_a, via_a), (owner_b, via_b) = by_owner.items()
            run = (
                await via_a.StartRun(run_service_pb2.StartRunRequest(flow=gate_flow("held")))
            ).run
            assert await owner_of(db, run.run_id) == owner_a
            events: list[events_pb2.RunEvent] = []
            async for response in via_b.WatchRun(
                run_service_pb2.WatchRunRequest(run_id=run.run_id), timeout=DEADLINE
            ):
                events.extend(response.events)
                if any(e.HasField("approval_requested") for e in response.events):
                    await via_b.ResolveApproval(
                        run_service_pb2.ResolveApprovalRequest(
                            run_id=run.run_id, node_id="gate", approve=True
                        )
                    )
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            assert events[-1].run_completed.status == events_pb2.RUN_STATUS_SUCCEEDED
            assert await owner_of(db, run.run_id) == owner_a != owner_b
    finally:
        await asyncio.gather(*(c.close() for c in channels))
        await db.close()


async def test_workers_refuse_a_port_an_unrelated_server_holds(
    database_url: str, tmp_path: Path
) -> None:
    """Port sharing is among one serve's workers only: a listener of another
    program on the port (even one that set SO_REUSEPORT) makes serve fail, with
    one worker or many. (gRPC sets SO_REUSEPORT unless told not to.)"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        listen = f"127.0.0.1:{other.getsockname()[1]}"
        for n, why in ((1, "Failed to bind"), (2, "Address already in use")):
            proc = await serve(database_url, tmp_path / f"w{n}", listen, n)
            assert proc.stdout is not None
            out = await asyncio.wait_for(proc.stdout.read(), DEADLINE)
            code = await asyncio.wait_for(proc.wait(), DEADLINE)
            assert code != 0, f"{n} workers started on a port in use: {out!r}"
            assert b"runwire listening" not in out
            assert why in (tmp_path / f"w{n}" / "server.log").read_text()
