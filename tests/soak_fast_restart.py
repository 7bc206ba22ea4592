"""Soak: `pg_ctl -m fast restart` under load, many times, against `runwire serve`.

Not collected by pytest (it takes minutes). Run it by hand:

    .venv/bin/python tests/soak_fast_restart.py --restarts 24 --runs 20

Each cycle keeps `--runs` flows in flight (shell nodes that log), restarts
Postgres with `-m fast` while the server commits, then classifies the server
within `--deadline` seconds:

- recovered:   health is SERVING again and a new run completes, on its own;
- died loudly: the process exited non-zero with a FATAL line (then restarted);
- hung:        neither (the bug this guards against; must be 0).

At the end every run started must be finished with a gapless stream.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _live_procs import ServerProcess
from _pg import RestartablePostgres

from runwire.store import migrate
from runwire.v1 import flow_pb2, run_service_pb2, run_service_pb2_grpc


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _flow(i: int) -> flow_pb2.Flow:
    ids = [f"n{k}" for k in range(4)]
    nodes = []
    for node_id in ids:
        node = flow_pb2.Node(id=node_id)
        node.action.adapter, node.action.action = "shell", "exec"
        node.action.params.update({"argv": ["sh", "-c", "seq 1 50; sleep 0.1"]})
        nodes.append(node)
    edges = [flow_pb2.Edge(source=a, target=b) for a, b in itertools.pairwise(ids)]
    return flow_pb2.Flow(name=f"soak-{i}", nodes=nodes, edges=edges)


async def _serving(addr: str) -> bool:
    try:
        async with grpc.aio.insecure_channel(addr) as channel:
            got = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="runwire.v1.RunService"), timeout=2
            )
            return bool(got.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.aio.AioRpcError:
        return False


async def _probe(addr: str) -> bool:
    """A new run starts and completes."""
    try:
        async with grpc.aio.insecure_channel(addr) as channel:
            stub = run_service_pb2_grpc.RunServiceStub(channel)
            flow = flow_pb2.Flow(name="probe", nodes=[flow_pb2.Node(id="p")])
            flow.nodes[0].action.adapter, flow.nodes[0].action.action = "util", "set"
            flow.nodes[0].action.params.update({"value": 1})
            run = (await stub.StartRun(run_service_pb2.StartRunRequest(flow=flow), timeout=5)).run
            async for response in stub.WatchRun(
                run_service_pb2.WatchRunRequest(run_id=run.run_id), timeout=20
            ):
                if any(e.HasField("run_completed") for e in response.events):
                    return True
    except grpc.aio.AioRpcError:
        return False
    return False


class Load:
    """Keeps `n` runs in flight; StartRun failures during an outage are retried."""

    def __init__(self, server: ServerProcess, n: int) -> None:
        self.server = server
        self.n = n
        self.started = 0
        self.run_ids: list[str] = []
        self.stopping = False

    async def _one(self, slot: int) -> None:
        while not self.stopping:
            try:
                async with grpc.aio.insecure_channel(self.server.addr) as channel:
                    stub = run_service_pb2_grpc.RunServiceStub(channel)
                    run = (
                        await stub.StartRun(
                            run_service_pb2.StartRunRequest(flow=_flow(slot)), timeout=5
                        )
                    ).run
                    self.run_ids.append(run.run_id)
                    self.started += 1
                    async for response in stub.WatchRun(
                        run_service_pb2.WatchRunRequest(run_id=run.run_id), timeout=120
                    ):
                        if any(e.HasField("run_completed") for e in response.events):
                            break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.2)  # outage or restart: the load's own pace

    async def run(self) -> None:
        await asyncio.gather(*(self._one(i) for i in range(self.n)))


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--restarts", type=int, default=24)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--deadline", type=float, default=60.0)
    args = parser.parse_args()

    pg = RestartablePostgres()
    pg.start()
    url = pg.url("soak")
    admin = await asyncpg.connect(pg.url())
    await admin.execute("CREATE DATABASE soak")
    await admin.close()
    conn = await asyncpg.connect(url)
    await migrate(conn)
    await conn.close()
    work = Path(tempfile.mkdtemp(prefix="runwire-soak-"))
    server = ServerProcess(
        url,
        work / "server",
        ["--shell-allow", "sh", "--shell-allow", "seq", "--shell-allow", "sleep"],
    )
    await server.start()
    load = Load(server, args.runs)
    load_task = asyncio.ensure_future(load.run())
    counts = {"recovered": 0, "died loudly": 0, "hung": 0}
    try:
        for cycle in range(1, args.restarts + 1):
            # Restart while the server is committing: wait for new events.
            conn = await asyncpg.connect(url)
            before = await conn.fetchval("SELECT count(*) FROM events")
            end = time.monotonic() + 30
            while await conn.fetchval("SELECT count(*) FROM events") < before + 200:
                if time.monotonic() > end:
                    break
                await asyncio.sleep(0.05)
            await conn.close()
            t0 = time.monotonic()
            pg.restart_fast()  # (blocks this driver, not the server under test)
            outcome = "hung"
            end = time.monotonic() + args.deadline
            while time.monotonic() < end:
                assert server.proc is not None
                if server.proc.returncode is not None:
                    log = server.log_path.read_text(errors="replace")
                    outcome = (
                        "died loudly" if server.proc.returncode != 0 and "FATAL" in log else "hung"
                    )
                    break
                if await _serving(server.addr) and await _probe(server.addr):
                    outcome = "recovered"
                    break
                await asyncio.sleep(0.2)
            counts[outcome] += 1
            say(
                f"cycle {cycle:2d}: {outcome} after {time.monotonic() - t0:.1f}s "
                f"(runs started so far: {load.started})"
            )
            if outcome != "recovered":
                if outcome == "hung":
                    say(server.log_tail(60))
                await server.kill()
                await server.start()
        load.stopping = True
        await asyncio.wait_for(load_task, 180)
        # Every run finished, with a gapless stream.
        conn = await asyncpg.connect(url)
        deadline = time.monotonic() + 120
        while await conn.fetchval("SELECT count(*) FROM runs WHERE end_time IS NULL"):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        unfinished = await conn.fetchval("SELECT count(*) FROM runs WHERE end_time IS NULL")
        gaps = await conn.fetchval(
            """SELECT count(*) FROM runs r WHERE r.last_seq <>
                 (SELECT count(*) FROM events e WHERE e.run_id = r.run_id)"""
        )
        total = await conn.fetchval("SELECT count(*) FROM runs")
        await conn.close()
    finally:
        load.stopping = True
        load_task.cancel()
        with contextlib.suppress(BaseException):
            await load_task
        await server.kill()
        pg.stop()
    say(
        f"restarts: {args.restarts}, load: {args.runs} runs in flight; "
        f"recovered {counts['recovered']}, died loudly {counts['died loudly']}, "
        f"hung {counts['hung']}; runs: {total} total, {unfinished} unfinished, "
        f"{gaps} with a gap; server lives: {server.lives}; postgres start crashes retried: "
        f"{pg.start_crashes}; log: {server.log_path}"
    )
    return 0 if counts["hung"] == 0 and not unfinished and not gaps else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
