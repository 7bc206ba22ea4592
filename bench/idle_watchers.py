"""`make bench-idle`: server memory per idle watcher, and whether it comes back.

Starts this tree and a git worktree of `--ref` side by side (each `serve
--workers 1` with its own embedded Postgres). For each, in alternation,
`--repeats` times: a run held at an approval gate; `--watchers` WatchRun
streams on it from a client process (over `--channels` connections), each
live (its first response received); then they all leave. The server's RSS is
read before they come, while they are all idle, and after they left (once the
server's watcher count is back to what it was, polled through a trivial RPC).
Printed: KiB per idle watcher and KiB not returned after they left, as
min/median/max, with the load average.
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
from pathlib import Path

import grpc
import psutil
from engine import Server

from runwire.v1 import flow_pb2, run_service_pb2, run_service_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REF = "8a245f3"


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def rss(server: Server) -> int:
    assert server.proc is not None
    return int(psutil.Process(server.proc.pid).memory_info().rss)


async def one_round(server: Server, watchers: int, channels: int) -> tuple[float, float]:
    flow = flow_pb2.Flow(
        name="idle", nodes=[flow_pb2.Node(id="gate", approval=flow_pb2.ApprovalNode(message="?"))]
    )
    opts = [("grpc.use_local_subchannel_pool", 1)]
    chans = [grpc.aio.insecure_channel(server.addr, options=opts) for _ in range(channels)]
    stubs = [run_service_pb2_grpc.RunServiceStub(c) for c in chans]
    try:
        run = (await stubs[0].StartRun(run_service_pb2.StartRunRequest(flow=flow))).run
        # Warm the connections and the code paths, then measure.
        calls = [
            stubs[i % channels].WatchRun(run_service_pb2.WatchRunRequest(run_id=run.run_id))
            for i in range(min(watchers, channels))
        ]
        await asyncio.gather(*(c.read() for c in calls))
        for c in calls:
            c.cancel()
        await asyncio.sleep(0.5)  # let the cancellations land (a measurement pause)
        before = rss(server)
        calls = [
            stubs[i % channels].WatchRun(run_service_pb2.WatchRunRequest(run_id=run.run_id))
            for i in range(watchers)
        ]
        await asyncio.gather(*(c.read() for c in calls))  # every stream is live
        idle = rss(server)
        for c in calls:
            c.cancel()
        await asyncio.sleep(2.0)  # a measurement pause: the server forgets them
        after = rss(server)
        await stubs[0].CancelRun(run_service_pb2.CancelRunRequest(run_id=run.run_id))
    finally:
        await asyncio.gather(*(c.close() for c in chans))
    return (idle - before) / watchers / 1024, (after - before) / watchers / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref", default=DEFAULT_REF)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--channels", type=int, default=10)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="runwire-bench-idle-"))
    servers = [Server("this tree", ROOT, tmp / "this")]
    worktree = tmp / "ref-src"
    if args.ref:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(worktree), args.ref],
            check=True,
        )
        servers.append(Server(f"ref {args.ref}", worktree, tmp / "ref"))
    os.environ["RUNWIRE_WORKERS"] = "1"
    per: dict[str, list[float]] = {s.label: [] for s in servers}
    kept: dict[str, list[float]] = {s.label: [] for s in servers}
    print(f"bench-idle: before: {_load()}", flush=True)
    try:
        for s in servers:
            s.start()
        for r in range(args.repeats):
            for s in servers:
                idle, left = asyncio.run(one_round(s, args.watchers, args.channels))
                per[s.label].append(idle)
                kept[s.label].append(left)
                print(
                    f"  repeat {r + 1} {s.label}: {idle:.1f} KiB per idle watcher, "
                    f"{left:.1f} KiB per watcher kept after they left; {_load()}",
                    flush=True,
                )
    finally:
        for s in servers:
            s.stop()
        if args.ref:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)],
                check=False,
            )
        shutil.rmtree(tmp, ignore_errors=True)

    def mmm(v: list[float]) -> str:
        return "/".join(f"{x:.1f}" for x in (min(v), statistics.median(v), max(v)))

    print(f"\nbench-idle: after: {_load()}; min/median/max over {args.repeats} repeats")
    print(f"  {args.watchers} watchers over {args.channels} connections on a run held at a gate")
    for s in servers:
        print(
            f"  {s.label}: {mmm(per[s.label])} KiB per idle watcher, "
            f"{mmm(kept[s.label])} KiB per watcher not returned after they left"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
