"""`make bench` (and `make bench-watch-events`): events/s through WatchEvents.

One `runwire serve` (embedded Postgres). It first fills the log: `--runs` runs
of `shell seq 1 --lines`, one run in a hundred labelled `bench=hit`, and a
last one-line run labelled `bench=hit` (so a filtered read looks through the
whole log before its last event). Then,
`--repeats` times and in alternation, one client reads the whole log from
STREAM_START_EARLIEST:

- **100 %**: no filter; every event is delivered;
- **1 %**: filter `labels {bench: hit}`; the server looks through every
  position and delivers one event in a hundred;
- **reference**: the same rows read straight from Postgres by the client
  (asyncpg, `SELECT event FROM events ORDER BY pos`, in pages of 1000): what a
  reader with no server between it and the table gets on this machine now.

Figures: log positions looked through per second (the whole log / time to the
last selected event) and delivered events/s, as min/median/max over the
repeats, with the load average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import grpc
from run import Server, seq_flow

from runwire.v1 import run_service_pb2, run_service_pb2_grpc


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def _mmm(values: list[float]) -> str:
    return "/".join(f"{v:,.0f}" for v in (min(values), statistics.median(values), max(values)))


async def _fill(stub: run_service_pb2_grpc.RunServiceStub, runs: int, lines: int) -> None:
    started = []
    for i in range(runs):
        labels = {"bench": "hit" if i % 100 == 50 else "miss"}
        request = run_service_pb2.StartRunRequest(flow=seq_flow(lines), labels=labels)
        started.append((await stub.StartRun(request)).run.run_id)
    for run_id in started:
        async for _ in stub.WatchRun(run_service_pb2.WatchRunRequest(run_id=run_id)):
            pass
    # A last small run labelled hit: the filtered read looks through the whole log.
    request = run_service_pb2.StartRunRequest(flow=seq_flow(1), labels={"bench": "hit"})
    run_id = (await stub.StartRun(request)).run.run_id
    async for _ in stub.WatchRun(run_service_pb2.WatchRunRequest(run_id=run_id)):
        pass


async def _read(
    stub: run_service_pb2_grpc.RunServiceStub,
    flt: run_service_pb2.RunEventsFilter | None,
    expected: int,
) -> float:
    """Seconds from the call to the last expected event."""
    begin = time.perf_counter()
    call = stub.WatchEvents(
        run_service_pb2.WatchEventsRequest(start=run_service_pb2.STREAM_START_EARLIEST, filter=flt)
    )
    got = 0
    async for response in call:
        got += len(response.events)
        if got >= expected:
            break
    elapsed = time.perf_counter() - begin
    call.cancel()
    assert got == expected, (got, expected)
    return elapsed


async def _reference(url: str, total: int) -> float:
    conn = await asyncpg.connect(url)
    try:
        begin = time.perf_counter()
        after, got = 0, 0
        while True:
            rows = await conn.fetch(
                "SELECT pos, event FROM events WHERE pos > $1 ORDER BY pos LIMIT 1000", after
            )
            if not rows:
                break
            got += len(rows)
            after = rows[-1]["pos"]
        elapsed = time.perf_counter() - begin
    finally:
        await conn.close()
    assert got == total
    return elapsed


async def _main(args: argparse.Namespace) -> int:
    print(f"bench/watch_events.py: {args.runs} runs x {args.lines} lines; {_load()}")
    with tempfile.TemporaryDirectory(prefix="runwire-bench-we-") as tmp:
        server = Server(Path(tmp), commit_interval=None)
        server.start()
        try:
            async with grpc.aio.insecure_channel(server.addr) as channel:
                stub = run_service_pb2_grpc.RunServiceStub(channel)
                await _fill(stub, args.runs, args.lines)
                conn = await asyncpg.connect(server.database_url)
                try:
                    total = await conn.fetchval("SELECT count(*) FROM events")
                    hits = await conn.fetchval(
                        """SELECT count(*) FROM events e JOIN runs r USING (run_id)
                           WHERE r.labels @> '{"bench": "hit"}'"""
                    )
                finally:
                    await conn.close()
                print(f"log: {total} events, {hits} of them in runs labelled bench=hit")
                hit = run_service_pb2.RunEventsFilter(labels={"bench": "hit"})
                every: list[float] = []
                one: list[float] = []
                ref: list[float] = []
                for _ in range(args.repeats):
                    every.append(await _read(stub, None, total))
                    one.append(await _read(stub, hit, hits))
                    ref.append(await _reference(server.database_url, total))
        finally:
            server.stop()
    print(f"after: {_load()}")
    print(f"{'WatchEvents':<34}{'positions/s':>32}{'delivered ev/s':>32}")
    print(
        f"{'100 % (no filter)':<34}{_mmm([total / t for t in every]):>32}"
        f"{_mmm([total / t for t in every]):>32}"
    )
    print(
        f"{f'~1 % (labels bench=hit, {hits} ev)':<34}{_mmm([total / t for t in one]):>32}"
        f"{_mmm([hits / t for t in one]):>32}"
    )
    print(
        f"{'reference: asyncpg pages of 1000':<34}{_mmm([total / t for t in ref]):>32}"
        f"{_mmm([total / t for t in ref]):>32}"
    )
    print("(min/median/max over repeats; positions/s = the whole log / time to the last event)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 repeat, 100 runs of 100 lines")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.lines = 1, 100
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
