"""Benchmark watchers: client processes that talk to a runwire server over loopback gRPC.

`bench/run.py` starts these; each prints one JSON line with what it measured.
The client side is kept lean: per response it reads only `seq`, the oneof case
and, for latency, `event_time`, so the numbers measure the server more than
the client's decoding.

    watchers.py throughput ADDR FLOW_JSON
        Start a run of the flow, watch it live to RunCompleted (meanwhile timing
        a health check every 20 ms on a second connection), then replay it.
    watchers.py latency ADDR RUN_ID WATCHERS OUT_FILE
        Open WATCHERS streams on one run (one channel each); print `ready` once
        every stream is live; record one latency per NodeLog line per watcher.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterable
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from runwire.v1 import flow_pb2, run_service_pb2, run_service_pb2_grpc

# A separate connection per channel even to the same address: independent
# watchers, as remote clients would be, rather than streams sharing one socket.
# No receive limit: the server does not bound a response's size, and the bench
# reports the largest one (gRPC's default limit is 4 MiB) rather than failing.
_OPTIONS = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", -1)]
_WATCH_RUN = "/runwire.v1.RunService/WatchRun"


def watch_run(channel: grpc.aio.Channel, run_id: str) -> AsyncIterable[bytes]:
    """WatchRun with undecoded responses, so their size can be seen."""
    call = channel.unary_stream(
        _WATCH_RUN, request_serializer=run_service_pb2.WatchRunRequest.SerializeToString
    )
    return call(run_service_pb2.WatchRunRequest(run_id=run_id))


class StreamBroken(Exception):
    """A stream skipped or repeated a seq, or ended before RunCompleted."""


@dataclass
class Drained:
    """One WatchRun stream read to its end."""

    events: int
    responses: int
    seconds: float  # first response with events received -> RunCompleted received
    first_event_time: float  # event_time of the first event, Unix seconds
    last_event_time: float  # event_time of RunCompleted
    first_received: float  # wall clock when the first event arrived
    last_received: float  # wall clock when RunCompleted arrived
    node_logs: int
    largest_response: int  # bytes


def _stamp(ts: Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


async def drain(channel: grpc.aio.Channel, run_id: str) -> Drained:
    """Read a run's stream from seq 1 to RunCompleted, checking it is gapless."""
    last = responses = node_logs = largest = 0
    started = first_wall = first_time = 0.0
    tail = None
    parse = run_service_pb2.WatchRunResponse.FromString
    async for raw in watch_run(channel, run_id):
        largest = max(largest, len(raw))
        events = parse(raw).events
        n = len(events)
        if not n:
            continue
        if not last:
            started, first_wall = time.perf_counter(), time.time()
            first_time = _stamp(events[0].event_time)
        if events[0].seq != last + 1 or events[-1].seq != last + n:
            raise StreamBroken(f"after seq {last}: got {events[0].seq}..{events[-1].seq}")
        last += n
        responses += 1
        tail = events[-1]
        # Counting a case costs a pass over the events; only the throughput run
        # does it, to check every log line arrived.
        node_logs += sum(1 for e in events if e.WhichOneof("event") == "node_log")
    seconds, last_wall = time.perf_counter() - started, time.time()
    if tail is None or tail.WhichOneof("event") != "run_completed":
        raise StreamBroken(f"stream ended at seq {last} without RunCompleted")
    return Drained(
        last,
        responses,
        seconds,
        first_time,
        _stamp(tail.event_time),
        first_wall,
        last_wall,
        node_logs,
        largest,
    )


async def probe(channel: grpc.aio.Channel, stop: asyncio.Event) -> list[float]:
    """Health-check round trips (ms), one every 20 ms until `stop`: how long the
    server's event loop leaves a trivial RPC waiting while the run goes on."""
    health = health_pb2_grpc.HealthStub(channel)
    rtts: list[float] = []
    while not stop.is_set():
        sent = time.perf_counter()
        await health.Check(health_pb2.HealthCheckRequest(), timeout=60)
        rtts.append((time.perf_counter() - sent) * 1e3)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.02)
    return rtts


async def throughput(addr: str, flow: flow_pb2.Flow) -> dict[str, object]:
    """Start a run, watch it live (probing the server's responsiveness), then replay it."""
    async with (
        grpc.aio.insecure_channel(addr, options=_OPTIONS) as channel,
        grpc.aio.insecure_channel(addr, options=_OPTIONS) as probe_channel,
    ):
        stub = run_service_pb2_grpc.RunServiceStub(channel)
        stop = asyncio.Event()
        prober = asyncio.create_task(probe(probe_channel, stop))
        requested = time.time()
        run = (await stub.StartRun(run_service_pb2.StartRunRequest(flow=flow))).run
        try:
            live = await drain(channel, run.run_id)
        finally:
            stop.set()
            rtts = await prober
        replay = await drain(channel, run.run_id)
    return {
        "run_id": run.run_id,
        "requested": requested,
        "live": asdict(live),
        "replay": asdict(replay),
        "health_rtt_ms": rtts,
    }


@dataclass
class Latencies:
    """What one latency client measured."""

    summary: dict[str, object]
    event_time: array.array[float]  # receive wall time - event_time, ms
    printed: array.array[float]  # receive wall time - the ticker's own print time, ms


async def latency(addr: str, run_id: str, watchers: int) -> Latencies:
    """Watch one run with many streams; one latency per NodeLog line per watcher."""
    lat = array.array("d")  # receive wall time - event_time, ms
    lat_emit = array.array("d")  # receive wall time - the ticker's own print time, ms
    live = 0
    everyone_live = asyncio.Event()
    errors: list[str] = []
    cpu_at_ready = 0.0

    async def watch(channel: grpc.aio.Channel) -> None:
        nonlocal live, cpu_at_ready
        last = 0
        completed = False
        parse = run_service_pb2.WatchRunResponse.FromString
        async for raw in watch_run(channel, run_id):
            now_ns = time.time_ns()
            events = parse(raw).events
            n = len(events)
            if not n:
                continue
            if not last:
                live += 1
                if live == watchers:
                    cpu_at_ready = time.process_time()
                    everyone_live.set()
            if events[0].seq != last + 1 or events[-1].seq != last + n:
                raise StreamBroken(f"after seq {last}: got {events[0].seq}..{events[-1].seq}")
            last += n
            for event in events:
                case = event.WhichOneof("event")
                if case == "node_log":
                    t = event.event_time
                    lat.append((now_ns - t.seconds * 1_000_000_000 - t.nanos) / 1e6)
                    printed_ns = int(event.node_log.line.rpartition(" ")[2])
                    lat_emit.append((now_ns - printed_ns) / 1e6)
                elif case == "run_completed":
                    completed = True
        if not completed:
            raise StreamBroken(f"stream ended at seq {last} without RunCompleted")

    async def guarded(channel: grpc.aio.Channel) -> None:
        try:
            await watch(channel)
        except (grpc.aio.AioRpcError, StreamBroken) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            everyone_live.set()  # do not hold the others back

    async def announce() -> None:
        await everyone_live.wait()
        print("ready", flush=True)

    channels = [grpc.aio.insecure_channel(addr, options=_OPTIONS) for _ in range(watchers)]
    try:
        announcer = asyncio.create_task(announce())
        await asyncio.gather(*(guarded(c) for c in channels))
        await announcer
    finally:
        await asyncio.gather(*(c.close() for c in channels))
    cpu = time.process_time() - cpu_at_ready
    return Latencies({"samples": len(lat), "errors": errors, "cpu_seconds": cpu}, lat, lat_emit)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="role", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("addr")
    t.add_argument("flow", type=Path)
    la = sub.add_parser("latency")
    la.add_argument("addr")
    la.add_argument("run_id")
    la.add_argument("watchers", type=int)
    la.add_argument("out", type=Path)
    args = parser.parse_args()
    if args.role == "throughput":
        flow = json_format.Parse(args.flow.read_text(), flow_pb2.Flow())
        result = asyncio.run(throughput(args.addr, flow))
    else:
        measured = asyncio.run(latency(args.addr, args.run_id, args.watchers))
        with args.out.open("wb") as f:
            measured.event_time.tofile(f)
            measured.printed.tofile(f)
        result = measured.summary
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
