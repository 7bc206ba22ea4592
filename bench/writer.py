"""`make bench-writer` (and part of `make bench`): the write path beside the probe
and beside the code before the change, measured in the same run.

Three servers side by side, each with its own embedded Postgres: the probe
(`bench/probe.py`, the same physical path hand-written: pipe -> RunEvent ->
group commit on one connection -> framed stream), this tree, and a git
worktree of `--ref` (by default main just before the writer committed at once
and in one statement). They are measured in alternation, `--repeats` times:

1. throughput: `seq 1 N` in one shell node, one remote watcher (bench/watchers.py
   throughput): durable ev/s from the first event received to RunCompleted,
   and the longest health-check round trip (a check every 20 ms on a second
   connection) while the run goes on;
2. latency: a ticker printing `--rate` lines/s for `--seconds`, one watcher:
   receive wall time - event_time per NodeLog, p50 and p99.

Each figure is printed as min / median / max over the repeats; the ev/s ratio
to the probe is taken per repeat (the probe and the server ran back to back)
and summarized the same way. The load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from run import (
    PYTHON,
    Server,
    mmm,
    print_columns,
    run_latency_step,
    run_throughput,
    seq_flow,
)
from worktree import add_worktree, remove_worktree

from runwire.v1 import run_service_pb2_grpc

BENCH = Path(__file__).resolve().parent
DEFAULT_REF = "8a245f3"  # main before the writer committed at once, in one statement


@dataclass
class Target:
    label: str
    server: Server
    evs: list[float] = field(default_factory=list)
    health_max: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    ratio: list[float] = field(default_factory=list)


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref", default=DEFAULT_REF, help="git ref of the code before (or '')")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--quick", action="store_true", help="1 repeat, 20 000 lines, 1 s")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.lines, args.seconds = 1, 20_000, 1.0
    tmp = Path(tempfile.mkdtemp(prefix="runwire-bench-writer-"))
    targets = [
        Target(
            "probe",
            Server(
                tmp / "probe",
                commit_interval=None,
                command=[sys.executable, str(BENCH / "probe.py")],
            ),
        ),
        Target("this tree", Server(tmp / "this", commit_interval=None)),
    ]
    worktree = tmp / "ref-src"
    if args.ref:
        add_worktree(worktree, args.ref)
        targets.append(
            Target(f"ref {args.ref}", Server(tmp / "ref", commit_interval=None, source=worktree))
        )
    print(f"bench-writer: before: {_load()}; python {sys.version.split()[0]}", flush=True)
    try:
        for t in targets:
            t.server.workdir.mkdir(parents=True)
            t.server.start()
        for r in range(args.repeats):
            probe_evs = 0.0
            for t in targets:
                row = run_throughput(
                    t.server, t.server.workdir, "seq", seq_flow(args.lines), args.lines
                )
                t.evs.append(row.delivered_per_s)
                t.health_max.append(row.health_max_ms)
                if t.label == "probe":
                    probe_evs = row.delivered_per_s
                else:
                    t.ratio.append(row.delivered_per_s / probe_evs)
                with grpc.insecure_channel(t.server.addr) as channel:
                    lat = run_latency_step(
                        t.server,
                        run_service_pb2_grpc.RunServiceStub(channel),
                        t.server.workdir,
                        watchers=1,
                        procs=1,
                        rate=args.rate,
                        seconds=args.seconds,
                    )
                if lat.errors:
                    raise SystemExit(f"bench: latency run on {t.label} failed: {lat.errors}")
                t.p50.append(lat.p50)
                t.p99.append(lat.p99)
                print(
                    f"  repeat {r + 1} {t.label:>14}: {row.delivered_per_s:,.0f} ev/s, "
                    f"health max {row.health_max_ms:.0f} ms, "
                    f"latency p50/p99 {lat.p50:.1f}/{lat.p99:.1f} ms; {_load()}",
                    flush=True,
                )
    finally:
        for t in targets:
            t.server.stop()
        if args.ref:
            remove_worktree(worktree)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nbench-writer: after: {_load()}; min/median/max over {args.repeats} repeats")
    print(
        f"  seq 1 {args.lines}, one watcher; latency at {args.rate:.0f} lines/s for "
        f"{args.seconds:.0f} s, one watcher ({PYTHON})"
    )
    head = ["", "durable ev/s", "ratio to probe", "health max ms", "p50 ms", "p99 ms"]
    rows = [
        [
            t.label,
            mmm(t.evs, ",.0f"),
            mmm(t.ratio, ".2f"),
            mmm(t.health_max, ".0f"),
            mmm(t.p50, ".1f"),
            mmm(t.p99, ".1f"),
        ]
        for t in targets
    ]
    print_columns(head, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
