"""`make bench`: start a runwire server, drive it from client processes, print the numbers.

Two questions, from issue 3:

1. Throughput: events/s from a node to one remote watcher, durably persisted
   (a shell node printing many lines; flows of cheap `util set` nodes).
2. Fan-out: how many watchers of one run before delivery latency p99 exceeds
   100 ms (a node printing lines at a steady rate; W watchers in a few processes).

Everything runs on this machine over loopback; see bench/README.md for what
each number means and its caveats.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import google.protobuf
import grpc
import psutil
from google.protobuf import json_format
from google.protobuf.internal import api_implementation

from runwire.v1 import flow_pb2, run_service_pb2, run_service_pb2_grpc

BENCH = Path(__file__).resolve().parent
WATCHERS = BENCH / "watchers.py"
LATENCY_BUDGET_MS = 100.0
WATCHER_STEPS = (1, 10, 50, 100, 200, 400, 800, 1600, 3200)
# The program the fan-out run's node executes (argv[0] must be allow-listed).
PYTHON = os.path.realpath(sys.executable)

# The fan-out run's node: wait for the go file (created once every watcher is
# live), then print COUNT lines on a fixed schedule, each carrying its own wall
# time so a watcher can also measure print -> receive.
TICKER = """\
import os, sys, time
go, count, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + 600
while not os.path.exists(go):
    if time.monotonic() > deadline:
        sys.exit(3)
    time.sleep(0.002)
start = time.monotonic()
for i in range(count):
    delay = start + i * interval - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    sys.stdout.write(f"tick {i} {time.time_ns()}\\n")
    sys.stdout.flush()
"""


# -- machine -----------------------------------------------------------------


def _code_version() -> str:
    def git(*argv: str) -> str:
        out = subprocess.run(
            ["git", "-C", str(BENCH.parent), *argv], capture_output=True, text=True, check=False
        )
        return out.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "?"
    dirty = git("status", "--porcelain", "--", "server")
    return f"{commit}" + (" + uncommitted server changes" if dirty else "")


def machine_facts() -> list[tuple[str, str]]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    return [
        ("code", _code_version()),
        ("nproc", nproc or str(os.cpu_count())),
        ("cpu", model),
        ("memory", f"{psutil.virtual_memory().total / 2**30:.1f} GiB"),
        ("kernel", platform.release()),
        ("python", platform.python_version()),
        ("grpcio", grpc.__version__),
        ("protobuf", f"{google.protobuf.__version__} ({api_implementation.Type()})"),
    ]


@dataclass
class CpuSample:
    """CPU seconds used so far, by role, and the machine's busy/total jiffies."""

    wall: float
    server: float
    postgres: float
    busy: float
    total: float


def _cpu_of(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def _machine_times() -> tuple[float, float]:
    """Busy and total CPU seconds of the whole machine, all cores."""
    t = psutil.cpu_times()
    # guest time is already counted in user; steal is the hypervisor's, not ours.
    busy = t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
    return busy, busy + t.idle + getattr(t, "iowait", 0.0) + getattr(t, "steal", 0.0)


# -- the server ----------------------------------------------------------------


class Server:
    """`runwire serve` as a subprocess on 127.0.0.1, embedded Postgres unless DATABASE_URL."""

    def __init__(
        self,
        workdir: Path,
        *,
        commit_interval: float | None,
        command: list[str] | None = None,
        source: Path | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        self.command = command or [sys.executable, "-m", "runwire.cli"]
        self.args = args  # more `serve` flags
        self.metrics_url = ""  # with --metrics-listen: where serve said it serves them
        self.source = source  # another tree's runwire (PYTHONPATH), e.g. a git worktree
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.log_path = workdir / "server.log"
        self.commit_interval = commit_interval
        self.proc: subprocess.Popen[str] | None = None
        self.addr = ""
        self.database_url = os.environ.get("DATABASE_URL", "")

    def start(self, timeout: float = 120.0) -> None:
        argv = [
            *self.command,
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(self.data_dir),
            "--shell-allow",
            "seq",
            "--shell-allow",
            PYTHON,
        ]
        if self.commit_interval is not None:
            argv += ["--commit-interval", str(self.commit_interval)]
        argv += self.args
        env = {
            **os.environ,
            "RUNWIRE_LOG_LEVEL": os.environ.get("RUNWIRE_LOG_LEVEL", "WARNING"),
            # One process, so the server's CPU below is one process's (serve's
            # default is a worker per core; `make bench-workers` compares them).
            "RUNWIRE_WORKERS": os.environ.get("RUNWIRE_WORKERS", "1"),
        }
        if self.source is not None:
            env["PYTHONPATH"] = str(self.source / "server")
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=self.log_path.open("w"),
            text=True,
            env=env,
        )
        lines = _line_reader(self.proc)
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self._fail("did not report listening in time")
            if line is None:
                self._fail("exited before listening")
            if line.startswith("runwire listening on "):
                self.addr = line.split()[-1]
                if "--metrics-listen" not in self.args or self.metrics_url:
                    break
            elif line.startswith("runwire metrics on "):
                self.metrics_url = line.split()[-1]
                if self.addr:
                    break
        if not self.database_url:
            from pgserver.utils import PostmasterInfo

            info = PostmasterInfo.read_from_pgdata(self.data_dir / "postgres")
            assert info is not None, "embedded Postgres left no postmaster.pid"
            self.database_url = info.get_uri()

    def _fail(self, why: str) -> None:
        self.stop()
        tail = self.log_path.read_text(errors="replace")[-4000:]
        raise SystemExit(f"bench: the server {why}; its log ends:\n{tail}")

    def postgres_processes(self) -> list[psutil.Process]:
        """The embedded cluster's processes (none when DATABASE_URL points elsewhere)."""
        pidfile = self.data_dir / "postgres" / "postmaster.pid"
        try:
            postmaster = psutil.Process(int(pidfile.read_text().split()[0]))
            return [postmaster, *postmaster.children(recursive=True)]
        except (OSError, ValueError, psutil.Error):
            return []

    def cpu(self) -> CpuSample:
        assert self.proc is not None
        busy, total = _machine_times()
        return CpuSample(
            time.monotonic(),
            _cpu_of([psutil.Process(self.proc.pid)]),
            _cpu_of(self.postgres_processes()),
            busy,
            total,
        )

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _line_reader(proc: subprocess.Popen[str]) -> queue.Queue[str | None]:
    """Lines of a process's stdout, then None at EOF (read on a daemon thread)."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


@dataclass
class PgCounters:
    """Write transactions (xids handed out) and WAL bytes, read without writing."""

    xids: int
    wal: int


def pg_counters(url: str) -> PgCounters:
    async def read() -> PgCounters:
        conn = await asyncpg.connect(url)
        try:
            row = await conn.fetchrow(
                "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xids,"
                " pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint AS wal"
            )
        finally:
            await conn.close()
        assert row is not None
        return PgCounters(row["xids"], row["wal"])

    return asyncio.run(read())


def pg_version(url: str) -> str:
    async def read() -> str:
        conn = await asyncpg.connect(url)
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    return asyncio.run(read())


# -- flows -----------------------------------------------------------------------


def _action(node: flow_pb2.Node, adapter: str, action: str, params: dict[str, object]) -> None:
    node.action.adapter, node.action.action = adapter, action
    node.action.params.update(params)


def seq_flow(lines: int) -> flow_pb2.Flow:
    flow = flow_pb2.Flow(name="bench-seq")
    node = flow.nodes.add(id="seq")
    node.timeout.seconds = 600
    _action(node, "shell", "exec", {"argv": ["seq", "1", str(lines)]})
    return flow


def util_flow(nodes: int, *, chain: bool) -> flow_pb2.Flow:
    flow = flow_pb2.Flow(name="bench-util-chain" if chain else "bench-util-fanout")
    for i in range(nodes):
        _action(flow.nodes.add(id=f"n{i}"), "util", "set", {"value": i})
        if chain and i:
            flow.edges.add(source=f"n{i - 1}", target=f"n{i}")
    if not chain:
        flow.settings.max_parallel = 64  # the most a flow may ask for
    return flow


def items_flow(items: int) -> flow_pb2.Flow:
    """`src` sets a list of `items` numbers; `fan` runs a util set once per number."""
    flow = flow_pb2.Flow(name=f"bench-items-{items}")
    _action(flow.nodes.add(id="src"), "util", "set", {"value": list(range(items))})
    fan = flow.nodes.add(id="fan")
    _action(fan, "util", "set", {"value": "{{ item }}"})
    fan.for_each.items = "{{ nodes.src.output }}"
    flow.edges.add(source="src", target="fan")
    flow.settings.max_parallel = 64  # the most a flow may ask for
    return flow


# -- scenario 3: one fan-out node over many items ------------------------------


@dataclass
class ItemsRow:
    items: int
    events: int
    seconds: float  # StartRun sent -> RunCompleted received
    rss_mb: float  # the server's resident memory right after the run
    peak_mb: float  # the server's peak resident memory so far (VmHWM)


def _peak_rss(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def run_items(server: Server, stub: run_service_pb2_grpc.RunServiceStub, items: int) -> ItemsRow:
    assert server.proc is not None
    t0 = time.monotonic()
    run = stub.StartRun(run_service_pb2.StartRunRequest(flow=items_flow(items))).run
    events = 0
    status = 0
    for response in stub.WatchRun(run_service_pb2.WatchRunRequest(run_id=run.run_id)):
        events += len(response.events)
        if response.events and response.events[-1].HasField("run_completed"):
            status = response.events[-1].run_completed.status
            break
    seconds = time.monotonic() - t0
    if status != 4:  # RUN_STATUS_SUCCEEDED
        raise SystemExit(f"bench: the fan-out of {items} items ended with status {status}")
    proc = psutil.Process(server.proc.pid)
    return ItemsRow(
        items, events, seconds, proc.memory_info().rss / 2**20, _peak_rss(proc.pid) / 2**20
    )


def print_items(rows: list[ItemsRow]) -> None:
    print(
        "\n3. One fan-out node of util set items (flow max_parallel 64): StartRun -> RunCompleted"
    )
    base = rows[0].seconds / rows[0].items
    print_table(
        [
            "items",
            "events",
            "seconds",
            "ms/item",
            "x per-item of first",
            "server RSS MB",
            "peak MB",
        ],
        [
            [
                str(r.items),
                str(r.events),
                f"{r.seconds:.2f}",
                f"{1000 * r.seconds / r.items:.3f}",
                f"{(r.seconds / r.items) / base:.2f}",
                f"{r.rss_mb:.0f}",
                f"{r.peak_mb:.0f}",
            ]
            for r in rows
        ],
    )


def ticker_flow(go: Path, count: int, interval: float) -> flow_pb2.Flow:
    flow = flow_pb2.Flow(name="bench-ticker")
    node = flow.nodes.add(id="tick")
    node.timeout.seconds = 900
    _action(
        node,
        "shell",
        "exec",
        {"argv": [PYTHON, "-c", TICKER, str(go), str(count), repr(interval)]},
    )
    return flow


# -- scenario 1: throughput to one watcher --------------------------------------


@dataclass
class ThroughputRow:
    name: str
    nodes: int
    events: int
    delivered_per_s: float  # first event received -> RunCompleted received
    run_seconds: float  # StartRun sent -> RunCompleted received
    produced_per_s: float  # event_time of the first event -> of RunCompleted
    replay_per_s: float
    responses: int
    commits: int  # write transactions in Postgres during the run
    wal_mb: float
    server_cpu: float  # cores, over the client's whole life
    postgres_cpu: float
    node_logs: int
    health_p50_ms: float  # a health check's round trip while the run goes on
    health_max_ms: float
    largest_response: int  # bytes; gRPC clients refuse more than 4 MiB by default
    replay_largest_response: int


def run_throughput(
    server: Server, workdir: Path, name: str, flow: flow_pb2.Flow, expect_logs: int
) -> ThroughputRow:
    flow_file = workdir / f"{flow.name}.json"
    flow_file.write_text(json_format.MessageToJson(flow))
    before_pg, before_cpu = pg_counters(server.database_url), server.cpu()
    proc = subprocess.run(
        [sys.executable, str(WATCHERS), "throughput", server.addr, str(flow_file)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    after_cpu, after_pg = server.cpu(), pg_counters(server.database_url)
    if proc.returncode != 0:
        raise SystemExit(f"bench: throughput watcher for {name} failed:\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    live, replay = result["live"], result["replay"]
    if live["node_logs"] != expect_logs:
        raise SystemExit(
            f"bench: {name} delivered {live['node_logs']} log lines, not {expect_logs} "
            "(over the server's shell output cap?)"
        )
    wall = after_cpu.wall - before_cpu.wall
    return ThroughputRow(
        name=name,
        nodes=len(flow.nodes),
        events=live["events"],
        delivered_per_s=live["events"] / live["seconds"],
        run_seconds=live["last_received"] - result["requested"],
        produced_per_s=live["events"]
        / max(1e-9, live["last_event_time"] - live["first_event_time"]),
        replay_per_s=replay["events"] / replay["seconds"],
        responses=live["responses"],
        commits=after_pg.xids - before_pg.xids,
        wal_mb=(after_pg.wal - before_pg.wal) / 2**20,
        server_cpu=(after_cpu.server - before_cpu.server) / wall,
        postgres_cpu=(after_cpu.postgres - before_cpu.postgres) / wall,
        node_logs=live["node_logs"],
        health_p50_ms=_percentile(sorted(result["health_rtt_ms"]), 0.5),
        health_max_ms=max(result["health_rtt_ms"], default=math.nan),
        largest_response=live["largest_response"],
        replay_largest_response=replay["largest_response"],
    )


# -- scenario 2: fan-out latency --------------------------------------------------


@dataclass
class LatencyRow:
    watchers: int
    procs: int
    samples: int
    expected: int
    p50: float
    p99: float
    max: float
    p99_print: float  # from the ticker's print, so it includes the server's pipe reading
    server_cpu: float
    postgres_cpu: float
    clients_cpu: float
    machine_busy: float
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and self.samples == self.expected and self.p99 <= LATENCY_BUDGET_MS


def _percentile(ordered: list[float], p: float) -> float:
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p * len(ordered)) - 1))]


def run_latency_step(
    server: Server,
    stub: run_service_pb2_grpc.RunServiceStub,
    workdir: Path,
    *,
    watchers: int,
    procs: int,
    rate: float,
    seconds: float,
) -> LatencyRow:
    step = workdir / f"w{watchers}"
    step.mkdir(exist_ok=True)
    go = step / "go"
    count = max(1, round(rate * seconds))
    run = stub.StartRun(
        run_service_pb2.StartRunRequest(flow=ticker_flow(go, count, 1.0 / rate)), timeout=30
    ).run
    procs = min(procs, watchers)
    shares = [watchers // procs + (1 if i < watchers % procs else 0) for i in range(procs)]
    outs = [step / f"lat{i}.bin" for i in range(procs)]
    clients = [
        subprocess.Popen(
            [sys.executable, str(WATCHERS), "latency", server.addr, run.run_id, str(n), str(out)],
            stdout=subprocess.PIPE,
            stderr=(step / f"client{i}.log").open("w"),
            text=True,
        )
        for i, (n, out) in enumerate(zip(shares, outs, strict=True))
    ]
    readers = [_line_reader(c) for c in clients]
    try:
        deadline = time.monotonic() + 120 + watchers / 10
        for r in readers:
            line = r.get(timeout=max(0.0, deadline - time.monotonic()))
            if line != "ready":
                raise RuntimeError(f"a latency client said {line!r} instead of ready")
        before = server.cpu()
        go.touch()
        deadline = time.monotonic() + seconds + 180 + watchers / 5
        results = []
        for c, r in zip(clients, readers, strict=True):
            last = None
            while (line := r.get(timeout=max(0.0, deadline - time.monotonic()))) is not None:
                last = line
            c.wait(timeout=max(1.0, deadline - time.monotonic()))
            if c.returncode != 0 or last is None:
                raise RuntimeError(f"a latency client exited with status {c.returncode}")
            results.append(json.loads(last))
        after = server.cpu()
    except (RuntimeError, queue.Empty, subprocess.TimeoutExpired) as exc:
        logs = " | ".join(
            f.read_text(errors="replace").strip()[-300:] for f in step.glob("client*.log")
        )
        why = f"{type(exc).__name__}: {exc}" + (f"; client stderr: {logs}" if logs else "")
        return LatencyRow(
            watchers, procs, 0, count * watchers, *[math.nan] * 4, 0, 0, 0, 0, errors=[why]
        )
    finally:
        go.touch()  # never leave the ticker waiting
        for c in clients:
            if c.poll() is None:
                c.kill()
                c.wait()
    wall = after.wall - before.wall
    lat = array("d")
    lat_print = array("d")
    for out, res in zip(outs, results, strict=True):
        raw = array("d")
        with out.open("rb") as f:
            raw.frombytes(f.read())
        n = res.get("samples", 0)
        lat.extend(raw[:n])
        lat_print.extend(raw[n:])
    ordered, ordered_print = sorted(lat), sorted(lat_print)
    errors = [e for res in results for e in res.get("errors", [])]
    shutil.rmtree(step, ignore_errors=True)
    return LatencyRow(
        watchers=watchers,
        procs=procs,
        samples=len(ordered),
        expected=count * watchers,
        p50=_percentile(ordered, 0.50),
        p99=_percentile(ordered, 0.99),
        max=ordered[-1] if ordered else math.nan,
        p99_print=_percentile(ordered_print, 0.99),
        server_cpu=(after.server - before.server) / wall,
        postgres_cpu=(after.postgres - before.postgres) / wall,
        clients_cpu=sum(r.get("cpu_seconds", 0.0) for r in results) / wall,
        machine_busy=(after.busy - before.busy) / max(1e-9, after.total - before.total),
        errors=errors,
    )


# -- output ---------------------------------------------------------------------


def mmm(values: list[float], fmt: str) -> str:
    """min/median/max of the values (NaN left out), or '-' when there are none."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "-"
    return "/".join(format(v, fmt) for v in (min(values), statistics.median(values), max(values)))


def print_columns(head: list[str], rows: list[list[str]]) -> None:
    """The header and rows, indented, right-justified in columns."""
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    for line in [head, *rows]:
        print("  " + "  ".join(str(x).rjust(w) for x, w in zip(line, widths, strict=True)))


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))


def _mb(n: int) -> str:
    return f"{n / 2**20:.2f}" + ("*" if n > 4 << 20 else "")


def _cores(c: float) -> str:
    return f"{c:.2f}"


def print_throughput(rows: list[ThroughputRow]) -> None:
    print(
        "\n1. Throughput from a node to one remote watcher (each event committed before delivery)"
    )
    print_table(
        [
            "flow",
            "nodes",
            "events",
            "ev/s 1st->last recv",
            "run s",
            "ev/s run",
            "nodes/s run",
            "ev/s produced",
            "ev/s replay",
        ],
        [
            [
                r.name,
                str(r.nodes),
                str(r.events),
                f"{r.delivered_per_s:,.0f}",
                f"{r.run_seconds:.2f}",
                f"{r.events / r.run_seconds:,.0f}",
                f"{r.nodes / r.run_seconds:,.0f}" if r.nodes > 1 else "-",
                f"{r.produced_per_s:,.0f}",
                f"{r.replay_per_s:,.0f}",
            ]
            for r in rows
        ],
    )
    print()
    print_table(
        [
            "flow",
            "responses",
            "ev/response",
            "pg write xacts",
            "ev/xact",
            "WAL MB",
            "server cores",
            "pg cores",
            "largest response live/replay MB",
            "health RTT p50/max ms",
        ],
        [
            [
                r.name,
                str(r.responses),
                f"{r.events / max(1, r.responses):,.0f}",
                str(r.commits),
                f"{r.events / max(1, r.commits):,.0f}",
                f"{r.wal_mb:.1f}",
                _cores(r.server_cpu),
                _cores(r.postgres_cpu),
                f"{_mb(r.largest_response)} / {_mb(r.replay_largest_response)}",
                f"{r.health_p50_ms:.0f} / {r.health_max_ms:.0f}",
            ]
            for r in rows
        ],
    )
    if any(max(r.largest_response, r.replay_largest_response) > 4 << 20 for r in rows):
        print(
            "   (*) a WatchRunResponse over 4 MiB: a client with gRPC's default receive limit "
            "fails with RESOURCE_EXHAUSTED"
        )


def print_fanout(rows: list[LatencyRow], rate: float, seconds: float, cap: int) -> None:
    print(
        f"\n2. Delivery latency = receive wall time - event_time, W watchers of one run "
        f"({rate:g} lines/s for {seconds:g}s per step)"
    )
    ncpu = os.cpu_count() or 1
    print_table(
        [
            "W",
            "procs",
            "samples",
            "p50 ms",
            "p99 ms",
            "max ms",
            "p99 print->recv",
            "server cores",
            "pg cores",
            "client cores",
            "other cores",
            "",
        ],
        [
            [
                str(r.watchers),
                str(r.procs),
                f"{r.samples}/{r.expected}",
                f"{r.p50:.1f}",
                f"{r.p99:.1f}",
                f"{r.max:.1f}",
                f"{r.p99_print:.1f}",
                _cores(r.server_cpu),
                _cores(r.postgres_cpu),
                _cores(r.clients_cpu),
                _cores(
                    max(0.0, r.machine_busy * ncpu - r.server_cpu - r.postgres_cpu - r.clients_cpu)
                ),
                "ok" if r.ok else ("ERRORS" if r.errors else "over budget"),
            ]
            for r in rows
        ],
    )
    under = [r.watchers for r in rows if r.ok]
    capped = bool(rows) and rows[-1].ok
    print(
        f"\n   largest W with p99 <= {LATENCY_BUDGET_MS:g} ms: "
        + (str(max(under)) if under else "none")
        + (f" (stopped at the cap, {cap})" if capped else "")
    )


def background_load(seconds: float = 2.0) -> float:
    """Cores busy on this machine over `seconds`."""
    busy0, total0 = _machine_times()
    time.sleep(seconds)
    busy1, total1 = _machine_times()
    return (busy1 - busy0) / max(1e-9, total1 - total0) * (os.cpu_count() or 1)


def wait_for_quiet(limit: float, quiet: float = 0.25) -> float:
    """Wait up to `limit` seconds for the machine to idle; returns the last load seen."""
    deadline = time.monotonic() + limit
    load = background_load()
    while load > quiet and time.monotonic() < deadline:
        print(f"   waiting for a quieter machine: {load:.2f} cores busy", flush=True)
        load = background_load()
    return load


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: small N, W up to 50")
    parser.add_argument(
        "--scenario",
        choices=("all", "throughput", "fanout", "items"),
        default="all",
        help="what to run",
    )
    parser.add_argument("--lines", type=int, help="lines the shell node prints (`seq 1 N`)")
    parser.add_argument("--util-nodes", type=int, help="util set nodes per flow (at most 1000)")
    parser.add_argument(
        "--rate", type=float, default=200.0, help="lines/s of the fan-out run (default 200)"
    )
    parser.add_argument("--seconds", type=float, help="how long each fan-out step emits")
    parser.add_argument("--max-watchers", type=int, help="stop stepping W past this")
    parser.add_argument(
        "--client-procs", type=int, default=4, help="processes the watchers are spread over"
    )
    parser.add_argument(
        "--refine",
        type=int,
        default=2,
        help="extra steps between the last W under budget and the first over (default 2)",
    )
    parser.add_argument(
        "--commit-interval", type=float, help="pass --commit-interval to the server"
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="first wait up to this long for other load to drop below 0.25 cores (default 60)",
    )
    args = parser.parse_args()
    lines = args.lines or (20_000 if args.quick else 200_000)
    # 500, not the 1000 nodes a flow may have: see bench/README.md (deep chains).
    util_nodes = args.util_nodes or (200 if args.quick else 500)
    seconds = args.seconds or (2.0 if args.quick else 5.0)
    max_watchers = args.max_watchers or (50 if args.quick else 1600)

    started = time.monotonic()
    facts = machine_facts()
    load = wait_for_quiet(args.wait_quiet)
    facts.append(("load", f"{load:.2f} cores busy before start, loadavg {os.getloadavg()[0]:.2f}"))
    workdir = Path(tempfile.mkdtemp(prefix="runwire-bench-"))
    server = Server(workdir, commit_interval=args.commit_interval)
    through: list[ThroughputRow] = []
    fan: list[LatencyRow] = []
    item_rows: list[ItemsRow] = []
    try:
        server.start()
        facts.append(("postgres", pg_version(server.database_url)))
        facts.append(
            (
                "database",
                "DATABASE_URL" if os.environ.get("DATABASE_URL") else "embedded (pgserver)",
            )
        )
        facts.append(
            (
                "server",
                f"runwire serve on {server.addr}, --commit-interval "
                f"{args.commit_interval if args.commit_interval is not None else 'default'}",
            )
        )
        print("runwire bench: " + "; ".join(f"{k} {v}" for k, v in facts), flush=True)

        if args.scenario in ("all", "throughput"):
            print("\n== 1. throughput to one remote watcher", flush=True)
            for name, flow, logs in (
                (f"shell seq 1 {lines}", seq_flow(lines), lines),
                (f"util set x{util_nodes} chain", util_flow(util_nodes, chain=True), 0),
                (f"util set x{util_nodes} fan-out", util_flow(util_nodes, chain=False), 0),
            ):
                row = run_throughput(server, workdir, name, flow, logs)
                through.append(row)
                print(f"   {name}: {row.events} events in {row.run_seconds:.2f}s", flush=True)

        if args.scenario in ("all", "items"):
            print("\n== 3. a fan-out node over 100 -> 10 000 util items", flush=True)
            with grpc.insecure_channel(server.addr) as channel:
                stub = run_service_pb2_grpc.RunServiceStub(channel)
                for n in (100, 1000, 10_000):
                    item_rows.append(run_items(server, stub, n))
                    r = item_rows[-1]
                    print(f"   {n} items: {r.events} events in {r.seconds:.2f}s", flush=True)

        if args.scenario in ("all", "fanout"):
            print(f"\n== 2. fan-out at {args.rate:g} lines/s, {seconds:g}s per step", flush=True)
            with grpc.insecure_channel(server.addr) as channel:
                stub = run_service_pb2_grpc.RunServiceStub(channel)

                def step(w: int) -> LatencyRow:
                    row = run_latency_step(
                        server,
                        stub,
                        workdir,
                        watchers=w,
                        procs=args.client_procs,
                        rate=args.rate,
                        seconds=seconds,
                    )
                    fan.append(row)
                    print(
                        f"   W={w}: p50 {row.p50:.1f} ms, p99 {row.p99:.1f} ms, "
                        f"{row.samples}/{row.expected} samples"
                        + (f", {len(row.errors)} errors: {row.errors[0]}" if row.errors else ""),
                        flush=True,
                    )
                    return row

                good = 0
                for w in (w for w in WATCHER_STEPS if w <= max_watchers):
                    if not step(w).ok:
                        # Narrow the answer down between the last good step and this one.
                        bad = w
                        for _ in range(args.refine):
                            mid = round(math.sqrt(max(good, 1) * bad))
                            if not good < mid < bad:
                                break
                            if step(mid).ok:
                                good = mid
                            else:
                                bad = mid
                        break
                    good = w
                fan.sort(key=lambda r: r.watchers)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    print("\n" + "=" * 100)
    print("runwire bench, " + time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    for k, v in facts:
        print(f"  {k:<9} {v}")
    if through:
        print_throughput(through)
    if fan:
        print_fanout(fan, args.rate, seconds, max_watchers)
    if item_rows:
        print_items(item_rows)
    print(f"\nbench took {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
