"""`make bench-engine` (and part of `make bench`): the engine's cost, this tree against a git ref.

Starts two servers side by side, one from this working tree and one from a
git worktree of `--ref` (by default the commit before the engine became a
state machine), each with its own embedded Postgres, and measures them in
alternation so both see the same machine:

1. chains of N `util set` nodes (10, 100, 1000, 5000), and flows of N
   side-by-side nodes run 4 at a time (1000, 5000): wall time from
   StartRun to RunCompleted at one watcher, and the server's CPU, per node;
2. runs/s of 5-node util chains with C concurrent clients (StartRun, then
   WatchRun to RunCompleted), and the server's CPU per run;
3. StartRun -> RunCompleted latency of a 1-node flow, one run at a time.

Both servers get MAX_NODES raised so the old code can run the 5000 chain.
Each figure is min / median / max over the repeats; the machine's load is
printed before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc
from worktree import add_worktree, remove_worktree

from runwire.v1 import events_pb2, flow_pb2, run_service_pb2, run_service_pb2_grpc

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DEFAULT_REF = "cc93096"  # main just before the engine was rebuilt as a state machine
_LAUNCH = (
    "import sys, runwire.engine._validate as v; v.MAX_NODES = 100_000; "
    "from runwire.cli import main; sys.exit(main(sys.argv[1:]))"
)


@dataclass
class Server:
    """`runwire serve` from one source tree, on 127.0.0.1, with its own embedded Postgres."""

    label: str
    source: Path
    workdir: Path
    proc: subprocess.Popen[str] | None = None
    addr: str = ""
    extra: tuple[str, ...] = ()  # more `serve` arguments

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "PYTHONPATH": str(self.source / "server"),
            "RUNWIRE_LOG_LEVEL": "WARNING",
            # One process (serve's default is one worker per core): its CPU is
            # the server's. bench/workers.py sets this itself; older trees ignore it.
            "RUNWIRE_WORKERS": os.environ.get("RUNWIRE_WORKERS", "1"),
        }
        argv = [
            sys.executable,
            "-c",
            _LAUNCH,
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(self.workdir / "data"),
            *self.extra,
        ]
        log = (self.workdir / "server.log").open("w")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("runwire listening on "):
                self.addr = line.split()[-1]
                return
        raise SystemExit(f"bench: the {self.label} server exited; see {self.workdir}/server.log")

    def cpu(self) -> float:
        assert self.proc is not None
        t = psutil.Process(self.proc.pid).cpu_times()
        return t.user + t.system

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def chain(nodes: int, *, wide: bool = False) -> flow_pb2.Flow:
    """`nodes` util set nodes in a chain, or side by side (`wide`: no edges, 4 at a time)."""
    flow = flow_pb2.Flow(name=f"bench-{'wide' if wide else 'chain'}-{nodes}")
    for i in range(nodes):
        node = flow.nodes.add(id=f"n{i}")
        node.action.adapter, node.action.action = "util", "set"
        node.action.params.update({"value": i})
        if i and not wide:
            flow.edges.add(source=f"n{i - 1}", target=f"n{i}")
    flow.settings.max_parallel = 4
    return flow


async def run_to_end(stub: run_service_pb2_grpc.RunServiceStub, flow: flow_pb2.Flow) -> int:
    """Start a run and watch it to RunCompleted; returns its event count."""
    run = (await stub.StartRun(run_service_pb2.StartRunRequest(flow=flow))).run
    count = 0
    async for response in stub.WatchRun(run_service_pb2.WatchRunRequest(run_id=run.run_id)):
        for e in response.events:
            count += 1
            if e.HasField("run_completed"):
                if e.run_completed.status != events_pb2.RUN_STATUS_SUCCEEDED:
                    raise SystemExit(f"bench: run {run.run_id} ended {e.run_completed.status}")
                return count
    raise SystemExit(f"bench: run {run.run_id}'s stream ended before RunCompleted")


@dataclass
class Figures:
    """Every sample of one server, by figure name."""

    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.samples.setdefault(name, []).append(value)


async def measure_chain(server: Server, nodes: int, out: Figures, *, wide: bool = False) -> None:
    async with grpc.aio.insecure_channel(server.addr) as channel:
        stub = run_service_pb2_grpc.RunServiceStub(channel)
        flow = chain(nodes, wide=wide)
        cpu0, t0 = server.cpu(), time.perf_counter()
        await run_to_end(stub, flow)
        wall, cpu = time.perf_counter() - t0, server.cpu() - cpu0
    shape = "wide" if wide else "chain"
    out.add(f"{shape} {nodes}: wall ms/node", wall * 1e3 / nodes)
    out.add(f"{shape} {nodes}: server CPU ms/node", cpu * 1e3 / nodes)
    out.add(f"{shape} {nodes}: run s", wall)


async def measure_runs_per_second(server: Server, runs: int, clients: int, out: Figures) -> None:
    flow = chain(5)
    left = runs

    async def client(stub: run_service_pb2_grpc.RunServiceStub) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await run_to_end(stub, flow)

    channels = [grpc.aio.insecure_channel(server.addr) for _ in range(min(clients, 10))]
    try:
        stubs = [run_service_pb2_grpc.RunServiceStub(c) for c in channels]
        await run_to_end(stubs[0], flow)  # warm up
        cpu0, t0 = server.cpu(), time.perf_counter()
        await asyncio.gather(*(client(stubs[i % len(stubs)]) for i in range(clients)))
        wall, cpu = time.perf_counter() - t0, server.cpu() - cpu0
    finally:
        for c in channels:
            await c.close()
    out.add(f"runs/s, 5-node flows, {clients} clients", runs / wall)
    out.add("server CPU ms/run", cpu * 1e3 / runs)


async def measure_start_stall(server: Server, nodes: int, out: Figures) -> None:
    """The longest health-check wait while one StartRun of a `nodes`-node chain is answered."""
    flow = chain(nodes)
    async with (
        grpc.aio.insecure_channel(server.addr) as channel,
        grpc.aio.insecure_channel(
            server.addr, options=[("grpc.use_local_subchannel_pool", 1)]
        ) as probe,
    ):
        stub = run_service_pb2_grpc.RunServiceStub(channel)
        health = health_pb2_grpc.HealthStub(probe)
        await health.Check(health_pb2.HealthCheckRequest())
        waits: list[float] = []
        done = asyncio.Event()

        async def ping() -> None:
            while not done.is_set():
                t0 = time.perf_counter()
                await health.Check(health_pb2.HealthCheckRequest())
                waits.append((time.perf_counter() - t0) * 1e3)
                await asyncio.sleep(0.002)

        pinger = asyncio.create_task(ping())
        run = (await stub.StartRun(run_service_pb2.StartRunRequest(flow=flow))).run
        done.set()
        await pinger
        # Let the run finish before the next figure.
        async for response in stub.WatchRun(run_service_pb2.WatchRunRequest(run_id=run.run_id)):
            if response.events and response.events[-1].HasField("run_completed"):
                break
    out.add(f"longest health wait during a {nodes}-node StartRun, ms", max(waits))


async def measure_latency(server: Server, runs: int, out: Figures) -> None:
    flow = chain(1)
    samples = []
    async with grpc.aio.insecure_channel(server.addr) as channel:
        stub = run_service_pb2_grpc.RunServiceStub(channel)
        await run_to_end(stub, flow)
        for _ in range(runs):
            t0 = time.perf_counter()
            await run_to_end(stub, flow)
            samples.append((time.perf_counter() - t0) * 1e3)
    samples.sort()
    out.add("1-node latency p50 ms", samples[len(samples) // 2])
    out.add("1-node latency p99 ms", samples[min(len(samples) - 1, int(len(samples) * 0.99))])


def _fmt(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{min(values):.3g} / {statistics.median(values):.3g} / {max(values):.3g}"


def print_table(figures: dict[str, Figures], order: list[str]) -> None:
    labels = list(figures)
    names = [n for n in order if any(n in f.samples for f in figures.values())]
    width = max(len(n) for n in names)
    cols = [max(24, len(label)) for label in labels]
    print(
        f"{'figure (min / median / max)':<{width}}  "
        + "  ".join(f"{lab:>{w}}" for lab, w in zip(labels, cols, strict=True))
        + "  this/ref (medians)"
    )
    for name in names:
        cells = [_fmt(figures[lab].samples.get(name, [])) for lab in labels]
        meds = [
            statistics.median(figures[lab].samples[name])
            for lab in labels
            if name in figures[lab].samples
        ]
        ratio = f"{meds[0] / meds[1]:.2f}" if len(meds) == 2 and meds[1] else ""
        print(
            f"{name:<{width}}  "
            + "  ".join(f"{c:>{w}}" for c, w in zip(cells, cols, strict=True))
            + f"  {ratio}"
        )


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"loadavg {one:.2f} (1 min) {five:.2f} (5 min), {psutil.cpu_count()} cores"


async def main_async(args: argparse.Namespace, servers: list[Server]) -> dict[str, Figures]:
    figures = {s.label: Figures() for s in servers}
    order: list[str] = []
    for nodes in args.chains:
        for _ in range(args.repeats if nodes < 5000 else max(1, args.repeats)):
            for s in servers:
                await measure_chain(s, nodes, figures[s.label])
        order += [
            f"chain {nodes}: wall ms/node",
            f"chain {nodes}: server CPU ms/node",
            f"chain {nodes}: run s",
        ]
    for nodes in args.wide:
        for _ in range(args.repeats):
            for s in servers:
                await measure_chain(s, nodes, figures[s.label], wide=True)
        order += [f"wide {nodes}: wall ms/node", f"wide {nodes}: server CPU ms/node"]
    for _ in range(args.repeats):
        for s in servers:
            await measure_runs_per_second(s, args.runs, args.clients, figures[s.label])
            await measure_latency(s, args.latency_runs, figures[s.label])
            await measure_start_stall(s, 1000, figures[s.label])
    order += [
        f"runs/s, 5-node flows, {args.clients} clients",
        "server CPU ms/run",
        "1-node latency p50 ms",
        "1-node latency p99 ms",
        "longest health wait during a 1000-node StartRun, ms",
    ]
    print()
    print_table(figures, order)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref", default=DEFAULT_REF, help="git ref to compare with ('' for none)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--chains", type=lambda s: [int(x) for x in s.split(",")], default=[10, 100, 1000, 5000]
    )
    parser.add_argument(
        "--wide",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[1000, 5000],
        help="sizes of flows of side-by-side nodes (no edges, max_parallel 4)",
    )
    parser.add_argument("--runs", type=int, default=1000, help="runs per runs/s sample")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--latency-runs", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="a smoke run: small chains, few runs")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.chains, args.runs, args.latency_runs = 1, [10, 100], 100, 20
        args.wide = [200]
    tmp = Path(tempfile.mkdtemp(prefix="runwire-bench-engine-"))
    servers = [Server("this tree", ROOT, tmp / "this")]
    worktree = tmp / "ref"
    if args.ref:
        add_worktree(worktree, args.ref)
        servers.append(Server(f"ref {args.ref}", worktree, tmp / "ref-data"))
    print(f"bench-engine: {_load()}; python {sys.version.split()[0]}")
    try:
        for s in servers:
            s.start()
        asyncio.run(main_async(args, servers))
    finally:
        for s in servers:
            s.stop()
        if args.ref:
            remove_worktree(worktree)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"bench-engine: after: {_load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
