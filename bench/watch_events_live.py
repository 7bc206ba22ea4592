"""`make bench-watch-events-live`: K caught-up WatchEvents readers under a steady
commit load, this tree beside the code before the shared log tail, in the same run.

Two servers side by side, each with its own embedded Postgres: this tree, and a
git worktree of `--ref` (by default main just before the shared tail,
store/_log_tail.py). For each K in `--readers` and `--repeats` times, in
alternation: K WatchEvents streams open at STREAM_START_LATEST (half with no
filter, half with `labels {bench: hit}`) and wait at the end of the log; then
two ticker runs print `--rate` lines/s between them for `--seconds` (one
labelled `bench=hit`, one `bench=miss`; each line is its own NodeLog and, at
these rates, its own commit). The step ends when every reader has the
RunCompleted of every run it selects.

Figures, each min/median/max over the repeats:

- **pg xact/s**: transactions Postgres counted (`pg_stat_database`, all of the
  server's statements run outside explicit transactions, so one per
  statement) from just before the load to its end, per second. The stats are
  flushed by each backend within a second of going idle, so both reads wait
  SETTLE seconds first (the idle server's own xacts, leases and heartbeats,
  are in both targets' figures alike);
- **server / pg CPU ms per 1k delivered**: CPU of the serve process and of
  the embedded cluster over the step, per thousand events delivered to all
  readers;
- **p50 / p99 ms**: emit (the ticker's wall clock, printed in each line) ->
  received by a reader, over every tick line of every reader.

The load average is printed before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
from run import Server, mmm, print_columns, ticker_flow
from worktree import add_worktree, remove_worktree

from runwire.v1 import run_service_pb2, run_service_pb2_grpc

DEFAULT_REF = "ea04870"  # main before the shared log tail
SETTLE = 1.5  # seconds: Postgres backends flush their stats within 1 s of going idle
STREAMS_PER_CHANNEL = 25
HIT = run_service_pb2.RunEventsFilter(labels={"bench": "hit"})


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def _percentile(ordered: list[float], p: float) -> float:
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


@dataclass
class Figures:
    xacts: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    pg_ms: list[float] = field(default_factory=list)
    delivered: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)


class _Reader:
    """One caught-up stream: counts events, records tick latencies."""

    def __init__(self, stub: run_service_pb2_grpc.RunServiceStub, filtered: bool) -> None:
        self.call = stub.WatchEvents(
            run_service_pb2.WatchEventsRequest(filter=HIT if filtered else None)
        )
        self.want = 1 if filtered else 2  # RunCompleted of each selected run
        self.events = 0
        self.latencies: list[float] = []
        self.started = asyncio.Event()
        self.done = asyncio.Event()
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        completed = 0
        async for response in self.call:
            now = time.time_ns()
            self.started.set()
            for event in response.events:
                self.events += 1
                case = event.WhichOneof("event")
                if case == "node_log" and event.node_log.line.startswith("tick "):
                    emitted = int(event.node_log.line.split()[2])
                    self.latencies.append((now - emitted) / 1e6)
                elif case == "run_completed":
                    completed += 1
            if completed >= self.want:
                self.done.set()
                return


async def _xacts(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(
            await conn.fetchval(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database"
                " WHERE datname = current_database()"
            )
        )
    finally:
        await conn.close()


async def _step(server: Server, k: int, rate: float, seconds: float, figures: Figures) -> str:
    channels = [
        grpc.aio.insecure_channel(server.addr) for _ in range(math.ceil(k / STREAMS_PER_CHANNEL))
    ]
    stubs = [run_service_pb2_grpc.RunServiceStub(c) for c in channels]
    readers: list[_Reader] = []
    try:
        readers = [_Reader(stubs[i // STREAMS_PER_CHANNEL], i % 2 == 1) for i in range(k)]
        async with asyncio.timeout(120):
            await asyncio.gather(*(r.started.wait() for r in readers))
        await asyncio.sleep(SETTLE)
        x0, c0 = await _xacts(server.database_url), server.cpu()
        go = server.workdir / f"go-{k}-{time.monotonic_ns()}"
        count = max(1, round(rate / 2 * seconds))
        for label in ("hit", "miss"):
            await stubs[0].StartRun(
                run_service_pb2.StartRunRequest(
                    flow=ticker_flow(go, count, 2.0 / rate), labels={"bench": label}
                )
            )
        go.touch()
        async with asyncio.timeout(seconds + 300):
            await asyncio.gather(*(r.done.wait() for r in readers))
        c1 = server.cpu()
        await asyncio.sleep(SETTLE)
        x1 = await _xacts(server.database_url)
    finally:
        for r in readers:
            r.call.cancel()
        await asyncio.gather(*(r.task for r in readers), return_exceptions=True)
        for c in channels:
            await c.close()
    wall = c1.wall - c0.wall
    delivered = sum(r.events for r in readers)
    lat = sorted(x for r in readers for x in r.latencies)
    figures.xacts.append((x1 - x0) / (wall + SETTLE))
    figures.server_ms.append((c1.server - c0.server) * 1e6 / delivered)
    figures.pg_ms.append((c1.postgres - c0.postgres) * 1e6 / delivered)
    figures.delivered.append(delivered / wall)
    figures.p50.append(_percentile(lat, 0.50))
    figures.p99.append(_percentile(lat, 0.99))
    return (
        f"{(x1 - x0) / (wall + SETTLE):,.0f} xact/s, {delivered / wall:,.0f} delivered ev/s, "
        f"server {(c1.server - c0.server) * 1e6 / delivered:.0f} ms/1k ev, "
        f"p50/p99 {figures.p50[-1]:.1f}/{figures.p99[-1]:.1f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref", default=DEFAULT_REF, help="git ref of the code before (or '')")
    parser.add_argument("--readers", default="1,50,200", help="K values, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rate", type=float, default=50.0, help="tick lines/s over both runs")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--quick", action="store_true", help="1 repeat, K = 1 and 50, 2 s")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.readers, args.seconds = 1, "1,50", 2.0
    ks = [int(k) for k in args.readers.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="runwire-bench-wel-"))
    targets = [("this tree", Server(tmp / "this", commit_interval=None))]
    worktree = tmp / "ref-src"
    if args.ref:
        add_worktree(worktree, args.ref)
        targets.append(
            (f"ref {args.ref}", Server(tmp / "ref", commit_interval=None, source=worktree))
        )
    figures = {(label, k): Figures() for label, _ in targets for k in ks}
    print(
        f"bench-watch-events-live: before: {_load()}; python {sys.version.split()[0]}", flush=True
    )
    try:
        for _, server in targets:
            server.workdir.mkdir(parents=True)
            server.start()
        for r in range(args.repeats):
            for k in ks:
                for label, server in targets:
                    line = asyncio.run(_step(server, k, args.rate, args.seconds, figures[label, k]))
                    print(f"  repeat {r + 1} K={k:<4} {label:>12}: {line}; {_load()}", flush=True)
    finally:
        for _, server in targets:
            server.stop()
        if args.ref:
            remove_worktree(worktree)
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\nbench-watch-events-live: after: {_load()}; min/median/max over {args.repeats} repeats"
    )
    print(
        f"  K caught-up WatchEvents readers (half unfiltered, half labels bench=hit); "
        f"two ticker runs, {args.rate:.0f} lines/s between them for {args.seconds:.0f} s"
    )
    head = [
        "K",
        "",
        "pg xact/s",
        "delivered ev/s",
        "server ms/1k ev",
        "pg ms/1k ev",
        "p50 ms",
        "p99 ms",
    ]
    rows = [
        [
            str(k),
            label,
            mmm(f.xacts, ",.0f"),
            mmm(f.delivered, ",.0f"),
            mmm(f.server_ms, ".0f"),
            mmm(f.pg_ms, ".0f"),
            mmm(f.p50, ".1f"),
            mmm(f.p99, ".1f"),
        ]
        for k in ks
        for label, _ in targets
        for f in [figures[label, k]]
    ]
    print_columns(head, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
