"""`make bench-metrics`: what recording metrics costs the write path.

Two servers of this tree side by side, each with its own embedded Postgres:
one without an exporter (every instrument a no-op: the reference) and one with
`--metrics-listen` (every instrument recording into the OpenTelemetry SDK).
They run `seq 1 N` in one shell node to one remote watcher (bench/watchers.py
throughput), in alternating order, `--repeats` times each, and the endpoint is
scraped after each run. Printed per server as min / median / max: durable ev/s
and the server's CPU microseconds per event (less sensitive to a busy machine
than ev/s); then the commit batches the scrape counted. The load average is
printed before and after.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from run import Server, run_throughput, seq_flow


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def _mmm(values: list[float], fmt: str) -> str:
    return "/".join(format(v, fmt) for v in (min(values), statistics.median(values), max(values)))


def _scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.labels
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--lines", type=int, default=100_000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="runwire-bench-metrics-"))
    off = Server(tmp / "off", commit_interval=None)
    on = Server(
        tmp / "on",
        commit_interval=None,
        args=("--metrics-listen", "127.0.0.1:0"),
    )
    figures: dict[str, tuple[list[float], list[float]]] = {"off": ([], []), "metrics": ([], [])}
    servers = {"off": off, "metrics": on}
    scraped: dict[str, float] = {}
    print(f"bench-metrics: before: {_load()}; python {sys.version.split()[0]}", flush=True)
    try:
        for s in servers.values():
            s.workdir.mkdir(parents=True)
            s.start()
        url = on.metrics_url
        for r in range(args.repeats):
            order = ["off", "metrics"] if r % 2 == 0 else ["metrics", "off"]
            for label in order:
                s = servers[label]
                before = s.cpu()
                row = run_throughput(s, s.workdir, "seq", seq_flow(args.lines), args.lines)
                after = s.cpu()
                cpu_us = (after.server - before.server) / row.events * 1e6
                figures[label][0].append(row.delivered_per_s)
                figures[label][1].append(cpu_us)
                print(
                    f"  repeat {r + 1} {label:>7}: {row.delivered_per_s:,.0f} ev/s, "
                    f"{cpu_us:.1f} server CPU us/event; {_load()}",
                    flush=True,
                )
            scraped = _scrape(url)
    finally:
        for s in servers.values():
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nbench-metrics: after: {_load()}; min/median/max over {args.repeats} repeats")
    print(f"  seq 1 {args.lines}, one watcher, alternating order")
    for label, (evs, cpu) in figures.items():
        print(f"  {label:>7}: {_mmm(evs, ',.0f')} ev/s  {_mmm(cpu, '.1f')} server CPU us/event")
    batches = scraped.get("runwire_commit_batch_size_count", 0.0)
    events = scraped.get("runwire_events_committed_total", 0.0)
    print(
        f"  metrics server's scrape: {events:,.0f} events committed in {batches:,.0f} batches "
        f"(one record per batch), commit time sum "
        f"{scraped.get('runwire_commit_duration_seconds_sum', 0.0):.2f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
