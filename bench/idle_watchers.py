"""`make bench-idle`: server memory per idle watcher, and whether it comes back.

Three servers, measured one after another in each repeat, each started fresh
for it: the floor (`bench/idle_probe.py`, bare grpc.aio: one handler
coroutine per stream, nothing behind it), this tree and a git worktree of
`--ref` (the code before; each `serve --workers 1` with its own embedded
Postgres). On each, `--waves` waves one after another: a run held at an
approval gate; `--watchers` WatchRun streams on it from this process over
`--channels` new connections (warmed by one stream each before the first
reading), each live (its first response received); then they all leave.

The server's RSS is read before the wave, once every stream is live, and
`--settle` seconds after they all cancelled (a measurement pause: this tree
trims the heap 1 s after a wave left). Printed, per wave and as min/median/
max over the repeats, for the first wave (a fresh server: what the first
thousand watchers cost) and for the later ones (the same server again):

- KiB per idle watcher: (RSS with the wave live - RSS before it) / watchers;
- KiB per watcher held after they left: (RSS after they left - RSS before
  the *first* wave) / watchers, i.e. what the server never gave back.

The load average is printed before, during and after.
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
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psutil
from engine import Server
from worktree import add_worktree, remove_worktree

from runwire.v1 import flow_pb2, run_service_pb2, run_service_pb2_grpc

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DEFAULT_REF = "8a245f3"  # main before the hub trimmed the heap and idle watchers were slimmed


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


@dataclass
class Probe:
    """bench/idle_probe.py, started like Server."""

    label: str
    workdir: Path
    proc: subprocess.Popen[str] | None = None
    addr: str = ""

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT / "server")}
        self.proc = subprocess.Popen(
            [sys.executable, str(BENCH / "idle_probe.py")],
            stdout=subprocess.PIPE,
            stderr=(self.workdir / "probe.log").open("w"),
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("runwire listening on "):
            raise SystemExit(f"bench: the probe exited; see {self.workdir}/probe.log")
        self.addr = line.split()[-1]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)


@dataclass
class Figures:
    """KiB per watcher, per wave kind, over the repeats."""

    first_idle: list[float] = field(default_factory=list)
    first_held: list[float] = field(default_factory=list)
    later_idle: list[float] = field(default_factory=list)
    later_held: list[float] = field(default_factory=list)


def rss(server: Server | Probe) -> int:
    assert server.proc is not None
    return int(psutil.Process(server.proc.pid).memory_info().rss)


async def one_wave(
    server: Server | Probe, watchers: int, channels: int, settle: float
) -> tuple[int, int, int]:
    """RSS before the wave, with it live, and after it left."""
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
        await asyncio.sleep(settle)  # a measurement pause: the server forgets them, trims
        after = rss(server)
        await stubs[0].CancelRun(run_service_pb2.CancelRunRequest(run_id=run.run_id))
    finally:
        await asyncio.gather(*(c.close() for c in chans))
    return before, idle, after


def mmm(v: list[float]) -> str:
    return "/".join(f"{x:.1f}" for x in (min(v), statistics.median(v), max(v))) if v else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref", default=DEFAULT_REF, help="git ref of the code before (or '')")
    parser.add_argument("--repeats", type=int, default=3, help="fresh servers per target")
    parser.add_argument("--waves", type=int, default=3, help="waves per server (the 1st is fresh)")
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--channels", type=int, default=10)
    parser.add_argument("--settle", type=float, default=2.5, help="seconds after they left")
    parser.add_argument("--no-probe", action="store_true", help="skip bare grpc.aio")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="runwire-bench-idle-"))
    targets: list[Server | Probe] = []
    if not args.no_probe:
        targets.append(Probe("bare grpc.aio", tmp / "probe"))
    targets.append(Server("this tree", ROOT, tmp / "this"))
    worktree = tmp / "ref-src"
    if args.ref:
        add_worktree(worktree, args.ref)
        targets.append(Server(f"ref {args.ref}", worktree, tmp / "ref"))
    os.environ["RUNWIRE_WORKERS"] = "1"
    figures = {t.label: Figures() for t in targets}
    w = args.watchers
    print(f"bench-idle: before: {_load()}", flush=True)
    try:
        for r in range(args.repeats):
            for t in targets:
                t.start()
                try:
                    base = 0
                    for wave in range(args.waves):
                        before, idle, after = asyncio.run(
                            one_wave(t, w, args.channels, args.settle)
                        )
                        base = base or before
                        per, held = (idle - before) / w / 1024, (after - base) / w / 1024
                        f = figures[t.label]
                        (f.first_idle if wave == 0 else f.later_idle).append(per)
                        (f.first_held if wave == 0 else f.later_held).append(held)
                        print(
                            f"  repeat {r + 1} {t.label:>14} wave {wave + 1}: "
                            f"{per:5.1f} KiB per idle watcher, {held:5.1f} KiB per watcher "
                            f"held after they left (RSS {before >> 20}/{idle >> 20}/"
                            f"{after >> 20} MiB); {_load()}",
                            flush=True,
                        )
                finally:
                    t.stop()
    finally:
        for t in targets:
            t.stop()
        if args.ref:
            remove_worktree(worktree)
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nbench-idle: after: {_load()}")
    print(
        f"  {w} idle WatchRun streams over {args.channels} connections on a run held at a gate;"
        f" KiB per watcher, min/median/max over {args.repeats} fresh servers"
        f" ({args.waves - 1} later waves each)"
    )
    head = ("", "1st wave idle", "1st wave held", "later idle", "later held")
    rows = [
        (t.label, *map(mmm, (f.first_idle, f.first_held, f.later_idle, f.later_held)))
        for t in targets
        for f in [figures[t.label]]
    ]
    widths = [max(len(str(row[i])) for row in (head, *rows)) for i in range(len(head))]
    for row in (head, *rows):
        print("  " + "  ".join(str(c).rjust(widths[i]) for i, c in enumerate(row)))
    print("  idle: RSS with the wave live minus just before it; held: RSS after it left")
    print("  minus before the first wave (what was not given back).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
