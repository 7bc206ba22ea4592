"""`make bench-workers`: runs/s of 5-node util chains with 50 clients, `serve
--workers 2` beside `--workers 1`, measured in the same run.

Both servers (this tree, each with its own embedded Postgres) run side by
side and are measured in alternation, `--repeats` times. The clients are
spread over `--client-procs` processes (each client its own connection, so
the kernel spreads them over the workers); each client starts a run and
watches it to RunCompleted, again and again, until `--runs` runs are done.
Printed: runs/s min/median/max per server, the ratio per repeat, the load
average before, during and after.
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
from pathlib import Path

import grpc
from engine import Server, chain, run_to_end

from runwire.v1 import run_service_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


async def clients(addr: str, n: int, runs: int) -> dict[str, float]:
    flow = chain(5)
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
        start = time.time()
        await asyncio.gather(*(client(s) for s in stubs))
        return {"start": start, "end": time.time(), "runs": runs}
    finally:
        await asyncio.gather(*(c.close() for c in channels))


def measure(addr: str, total_clients: int, runs: int, procs: int) -> float:
    children = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--client",
                addr,
                str(total_clients // procs),
                str(runs // procs),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(procs)
    ]
    results = []
    for c in children:
        out, _ = c.communicate(timeout=600)
        if c.returncode != 0:
            raise SystemExit(f"bench: a client process failed ({c.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    return sum(r["runs"] for r in results) / wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--client", nargs=3, metavar=("ADDR", "CLIENTS", "RUNS"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--client-procs", type=int, default=2)
    args = parser.parse_args()
    if args.client:
        addr, n, runs = args.client
        print(json.dumps(asyncio.run(clients(addr, int(n), int(runs)))), flush=True)
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="runwire-bench-workers-"))
    servers = {n: Server(f"--workers {n}", ROOT, tmp / f"w{n}") for n in (1, 2)}
    rates: dict[int, list[float]] = {1: [], 2: []}
    ratios: list[float] = []
    print(f"bench-workers: before: {_load()}", flush=True)
    os.environ["RUNWIRE_WORKERS"] = "1"
    try:
        for n, s in servers.items():
            os.environ["RUNWIRE_WORKERS"] = str(n)
            s.start()
        for r in range(args.repeats):
            for n, s in servers.items():
                rate = measure(s.addr, args.clients, args.runs, args.client_procs)
                rates[n].append(rate)
                print(f"  repeat {r + 1} --workers {n}: {rate:.0f} runs/s; {_load()}", flush=True)
            ratios.append(rates[2][-1] / rates[1][-1])
    finally:
        for s in servers.values():
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    def mmm(v: list[float], fmt: str) -> str:
        return "/".join(format(x, fmt) for x in (min(v), statistics.median(v), max(v)))

    print(f"\nbench-workers: after: {_load()}; min/median/max over {args.repeats} repeats")
    print(f"  {args.runs} runs of a 5-node util chain, {args.clients} clients")
    print(f"  in {args.client_procs} processes, each client its own connection")
    for n in (1, 2):
        print(f"  --workers {n}: {mmm(rates[n], '.0f')} runs/s")
    print(f"  ratio --workers 2 / --workers 1 (per repeat): {mmm(ratios, '.2f')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
