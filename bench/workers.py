"""`make bench-workers`: runs/s of 5-node util chains with 50 clients, `serve
--workers 2` beside `--workers 1`, measured in the same run, and the bound
this machine puts on their ratio.

Both servers (this tree, each with its own embedded Postgres) run side by
side and are measured in alternation, `--repeats` times. The clients are
spread over `--client-procs` processes (each client its own connection, so
the kernel spreads them over the workers); each client starts a run and
watches it to RunCompleted, again and again, until `--runs` runs are done.
The clients are `clients/go/internal/benchruns` (grpc-go; `--client python`
for grpc.aio), built once at the start.

Every measurement also takes the CPU time, per run, of the server processes,
of the embedded Postgres (postmaster and every backend) and of the client
processes, and the machine's busy time. The clients, the servers and Postgres
share the machine's cores: `--workers 1` is one process, at most one core of
server CPU (1000 / server ms per run runs/s), and `--workers 2` can at best
spread all of a run's CPU (server + Postgres + clients) over every core.
Their ratio is the bound printed beside the measured ratio (and what it
would be with Postgres, or Postgres and the clients, on other machines). At the end, each server's Postgres transactions
per run and the runs each worker owned are read from its database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import psutil
from engine import Server, chain, run_to_end

from runwire.v1 import run_service_pb2, run_service_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
GO_CLIENT = ROOT / "clients" / "go"
_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]
FLOW_NODES = 5


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


async def clients(addr: str, n: int, runs: int) -> dict[str, float]:
    """The Python client (`--client python`): grpc.aio, decoding every event."""
    flow = chain(FLOW_NODES)
    left = runs
    channels = [grpc.aio.insecure_channel(addr, options=_OPTIONS) for _ in range(n)]
    stubs = [run_service_pb2_grpc.RunServiceStub(c) for c in channels]

    async def client(stub: run_service_pb2_grpc.RunServiceStub) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await run_to_end(stub, flow)

    try:
        await asyncio.gather(*(run_to_end(s, flow) for s in stubs))  # connect, warm up
        start, cpu = time.time(), time.process_time()
        await asyncio.gather(*(client(s) for s in stubs))
        return {"start": start, "end": time.time(), "runs": runs, "cpu": time.process_time() - cpu}
    finally:
        await asyncio.gather(*(c.close() for c in channels))


def build_go_client(tmp: Path) -> list[str] | None:
    """Build the Go client into `tmp`; its argv prefix, or None without a Go toolchain."""
    if shutil.which("go") is None:
        return None
    binary = tmp / "benchruns"
    subprocess.run(
        ["go", "build", "-o", str(binary), "./internal/benchruns"], cwd=GO_CLIENT, check=True
    )
    return [str(binary)]


# -- CPU accounting -------------------------------------------------------------


@dataclass
class Embedded:
    """The embedded Postgres of one bench server, found through its pid file."""

    data: Path

    def _pidfile(self) -> list[str]:
        return (self.data / "postmaster.pid").read_text().split("\n")

    @property
    def pid(self) -> int:
        return int(self._pidfile()[0])

    def cpu(self) -> float:
        """CPU seconds of the postmaster, its live children and the children it reaped."""
        p = psutil.Process(self.pid)
        t = p.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for child in p.children():
            try:
                c = child.cpu_times()
            except psutil.NoSuchProcess:
                continue  # reaped meanwhile: counted in children_* next time
            total += c.user + c.system
        return total

    async def connect(self, database: str = "postgres") -> asyncpg.Connection:
        lines = self._pidfile()
        return await asyncpg.connect(
            host=lines[4], port=int(lines[3]), user="postgres", database=database
        )


def server_cpu(server: Server, postgres: Embedded) -> float:
    """CPU seconds of the server's processes (supervisor and workers), not its Postgres."""
    assert server.proc is not None
    pg = psutil.Process(postgres.pid)
    skip = {pg.pid, *(c.pid for c in pg.children())}
    p = psutil.Process(server.proc.pid)
    t = p.cpu_times()
    total = t.user + t.system
    for child in p.children(recursive=True):
        if child.pid in skip:
            continue
        try:
            c = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += c.user + c.system
    return total


def machine_busy() -> float:
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + t.steal


@dataclass
class Sample:
    """One measurement of one server: runs/s, and CPU milliseconds per run."""

    rate: float
    server: float
    postgres: float
    clients: float
    machine: float  # every process on the machine, ours included
    responses: float  # WatchRunResponses per run (Go client only; 0 otherwise)
    wall: float

    @property
    def ours(self) -> float:
        return self.server + self.postgres + self.clients

    def cores(self, ms_per_run: float) -> float:
        return ms_per_run * self.rate / 1000


def measure(
    server: Server,
    postgres: Embedded,
    client: list[str] | None,
    total_clients: int,
    runs: int,
    procs: int,
) -> Sample:
    request = run_service_pb2.StartRunRequest(flow=chain(FLOW_NODES)).SerializeToString()
    per = [str(total_clients // procs), str(runs // procs)]
    s0, p0, m0 = server_cpu(server, postgres), postgres.cpu(), machine_busy()
    children = [
        subprocess.Popen(
            [*client, server.addr, *per]
            if client
            else [sys.executable, __file__, "--client-run", server.addr, *per],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for _ in range(procs)
    ]
    results = []
    for c in children:
        out, _ = c.communicate(request, timeout=600)
        if c.returncode != 0:
            raise SystemExit(f"bench: a client process failed ({c.returncode})")
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    # Client start-up (and its warm-up runs) falls inside these totals; the
    # bench sets it against the measured runs only (see README).
    s1, p1, m1 = server_cpu(server, postgres), postgres.cpu(), machine_busy()
    start, end = min(r["start"] for r in results), max(r["end"] for r in results)
    done = sum(r["runs"] for r in results)
    warm = total_clients  # the warm-up runs (one per client) cost server CPU too
    counted = done + warm
    return Sample(
        rate=done / (end - start),
        server=(s1 - s0) * 1e3 / counted,
        postgres=(p1 - p0) * 1e3 / counted,
        clients=sum(r["cpu"] for r in results) * 1e3 / done,
        machine=(m1 - m0) * 1e3 / counted,
        responses=sum(r.get("responses", 0) for r in results) / done,
        wall=end - start,
    )


# An idle backend reports its statistics at most this long after its last
# statement (PGSTAT_IDLE_INTERVAL, 10 s), so transaction counts are read once
# every backend has been idle that long.
STATS_SETTLE = 11.0


async def database_counts(postgres: dict[int, Embedded]) -> dict[int, tuple[int, list[int]]]:
    """Per server: committed transactions so far, and the runs each owner holds
    (largest first), read once the backends' statistics have settled."""
    await asyncio.sleep(STATS_SETTLE)  # see STATS_SETTLE: a reporting delay, not a race

    async def one(pg: Embedded) -> tuple[int, list[int]]:
        # Read from another database, so these reads are not counted.
        conn = await pg.connect("template1")
        try:
            xacts = await conn.fetchval(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database"
                " WHERE datname = 'postgres'"
            )
        finally:
            await conn.close()
        conn = await pg.connect()
        try:
            owners = await conn.fetch(
                "SELECT count(*) AS n FROM runs GROUP BY owner_id ORDER BY count(*) DESC"
            )
        finally:
            await conn.close()
        return int(xacts), [int(r["n"]) for r in owners]

    return {n: await one(pg) for n, pg in postgres.items()}


def mmm(v: list[float], fmt: str) -> str:
    return "/".join(format(x, fmt) for x in (min(v), statistics.median(v), max(v)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--client-run", nargs=3, metavar=("ADDR", "CLIENTS", "RUNS"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument(
        "--client", choices=("go", "python"), default="go", help="the client (default: go)"
    )
    args = parser.parse_args()
    if args.client_run:
        addr, n, runs = args.client_run
        print(json.dumps(asyncio.run(clients(addr, int(n), int(runs)))), flush=True)
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="runwire-bench-workers-"))
    client = build_go_client(tmp) if args.client == "go" else None
    if args.client == "go" and client is None:
        print("bench-workers: no Go toolchain: the Python client instead", flush=True)
    servers = {n: Server(f"--workers {n}", ROOT, tmp / f"w{n}") for n in (1, 2)}
    postgres = {n: Embedded(tmp / f"w{n}" / "data" / "postgres") for n in (1, 2)}
    samples: dict[int, list[Sample]] = {1: [], 2: []}
    ratios: list[float] = []
    cores = psutil.cpu_count() or 1
    kind = "Go (clients/go/internal/benchruns)" if client else "Python (grpc.aio)"
    print(f"bench-workers: before: {_load()}; clients: {kind}", flush=True)
    try:
        for n, s in servers.items():
            os.environ["RUNWIRE_WORKERS"] = str(n)
            s.start()
        counts0 = asyncio.run(database_counts(postgres))
        for r in range(args.repeats):
            for n, s in servers.items():
                x = measure(s, postgres[n], client, args.clients, args.runs, args.client_procs)
                samples[n].append(x)
                print(
                    f"  repeat {r + 1} --workers {n}: {x.rate:.0f} runs/s; cores busy: "
                    f"server {x.cores(x.server):.2f}, postgres {x.cores(x.postgres):.2f}, "
                    f"clients {x.cores(x.clients):.2f}, rest of the machine "
                    f"{x.cores(x.machine - x.ours):.2f}; {_load()}",
                    flush=True,
                )
            ratios.append(samples[2][-1].rate / samples[1][-1].rate)
        counts = asyncio.run(database_counts(postgres))
    finally:
        for s in servers.values():
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    runs_done = args.repeats * (args.runs + args.clients)  # with the warm-up runs

    def med(n: int, name: str) -> float:
        return statistics.median(getattr(x, name) for x in samples[n])

    print(f"\nbench-workers: after: {_load()}; min/median/max over {args.repeats} repeats")
    print(f"  {args.runs} runs of a {FLOW_NODES}-node util chain, {args.clients} clients")
    print(f"  in {args.client_procs} processes ({kind}), each client its own connection")
    for n in (1, 2):
        print(f"  --workers {n}: {mmm([x.rate for x in samples[n]], '.0f')} runs/s")
    print(f"  ratio --workers 2 / --workers 1 (per repeat): {mmm(ratios, '.2f')}")
    print("\n  CPU ms per run (median)   server  postgres  clients  = total   rest of machine")
    for n in (1, 2):
        print(
            f"  --workers {n}                {med(n, 'server'):6.2f}  {med(n, 'postgres'):8.2f}"
            f"  {med(n, 'clients'):7.2f}  {med(n, 'ours'):7.2f}"
            f"   {med(n, 'machine') - med(n, 'ours'):6.2f}"
        )
    for n in (1, 2):
        xacts, owners = counts[n][0] - counts0[n][0], counts[n][1]
        share = "/".join(f"{o / sum(owners):.0%}" for o in owners)
        print(
            f"  --workers {n}: {xacts / runs_done:.2f} Postgres transactions per run, "
            f"{med(n, 'responses'):.2f} WatchRunResponses per run, runs per worker {share}"
        )

    # The bound, from CPU per run (which other load on the machine hardly
    # changes, unlike runs/s). --workers 1 is one process: at most one core
    # of server CPU, 1000 / server ms runs/s. --workers 2 can at best share
    # every core between the servers, Postgres and the clients:
    # cores x 1000 / (server + postgres + clients ms) runs/s.
    def bound(n: int, parts: tuple[str, ...], over: str = "cpu") -> list[float]:
        out = []
        for x1, xn in zip(samples[1], samples[n], strict=True):
            one = 1000 / x1.server if over == "cpu" else x1.rate
            out.append(cores * 1000 / sum(getattr(xn, p) for p in parts) / one)
        return out

    everything = ("server", "postgres", "clients")
    reached = [x.rate * x.ours / (cores * 1000) for x in samples[2]]
    print(
        "\n  the bound, from CPU per run: --workers 1 is one process, at most 1000 / server ms"
        f" runs/s;\n  --workers 2 at most {cores} x 1000 / (server + postgres + clients ms)."
        f" Their ratio: {mmm(bound(2, everything), '.2f')}"
    )
    print(
        f"  (at --workers 1's CPU per run {mmm(bound(1, everything), '.2f')}; over the measured "
        f"--workers 1 runs/s, which other load moves, {mmm(bound(2, everything, 'rate'), '.2f')})"
    )
    print(
        f"  --workers 2 kept {mmm(reached, '.0%')} of the {cores} cores busy with "
        "the servers, Postgres and the clients"
    )
    print(
        f"  with Postgres on another host: {mmm(bound(2, ('server', 'clients')), '.2f')}; "
        f"with Postgres and the clients elsewhere: {mmm(bound(2, ('server',)), '.2f')}"
    )
    print(
        f"  measured ratio {statistics.median(ratios):.2f} against a bound of "
        f"{statistics.median(bound(2, everything)):.2f} (medians); the target is 1.6"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
