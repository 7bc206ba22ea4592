"""`make bench` (webhooks): events/s a subscription delivers to a fast loopback receiver.

Starts `runwire serve --workers 1` (embedded Postgres, `--webhook-allow
127.0.0.1`), runs `shell seq 1 N` to completion (N NodeLog events in the log),
then, `--repeats` times, creates a fresh subscription from the earliest
position and times the first POST to the last event acknowledged by a minimal
HTTP/1.1 receiver in this process (it parses each body and answers 200 at
once). Printed: events/s and POSTs/s as min/median/max, with the load average,
and Postgres write transactions (xids handed out: the pending batch and its
acknowledgement, skips, and the server's own lease renewals) per delivered
event. The reference, measured in the same run: the same receiver fed by one plain
httpx client POSTing the server's largest body back to back (no database, no
signing), i.e. the HTTP ceiling of one sequential connection on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import grpc
import httpx
from run import Server, mmm, pg_counters

from runwire.v1 import (
    flow_pb2,
    run_service_pb2,
    run_service_pb2_grpc,
    subscription_service_pb2,
    subscription_service_pb2_grpc,
)

sub_pb = subscription_service_pb2
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


class Receiver(asyncio.Protocol):
    """Minimal HTTP/1.1 with keep-alive: count each POST's events, answer 200."""

    stats: Receiver.Stats

    class Stats:
        def __init__(self) -> None:
            self.events = 0
            self.posts = 0
            self.first = 0.0
            self.last = 0.0
            self.largest = b""
            self.changed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(rest) < length:
                return
            body, self.buffer = rest[:length], rest[length:]
            s = self.stats
            now = time.perf_counter()
            s.first = s.first or now
            s.last = now
            s.posts += 1
            s.events += len(json.loads(body)["data"]["events"])
            if len(body) > len(s.largest):
                s.largest = body
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            s.changed.set()


async def _fill(addr: str, lines: int) -> int:
    """Run `seq 1 N` to its end; the run's event count."""
    flow = flow_pb2.Flow(name="bench-webhooks")
    node = flow.nodes.add(id="seq")
    node.action.adapter, node.action.action = "shell", "exec"
    node.action.params.update({"argv": ["seq", "1", str(lines)]})
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = run_service_pb2_grpc.RunServiceStub(channel)
        run = (await stub.StartRun(run_service_pb2.StartRunRequest(flow=flow))).run
        count = 0
        async for response in stub.WatchRun(run_service_pb2.WatchRunRequest(run_id=run.run_id)):
            count += len(response.events)
        return count


async def _deliver(addr: str, url: str, stats: Receiver.Stats, events: int) -> tuple[float, int]:
    """One fresh subscription from the earliest position, until every event arrived."""
    stats.events = stats.posts = 0
    stats.first = stats.last = 0.0
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = subscription_service_pb2_grpc.SubscriptionServiceStub(channel)
        sub = sub_pb.Subscription(
            target_url=url, secret=SECRET, start=run_service_pb2.STREAM_START_EARLIEST
        )
        created = await stub.CreateSubscription(sub_pb.CreateSubscriptionRequest(subscription=sub))
        async with asyncio.timeout(600):
            while stats.events < events:
                stats.changed.clear()
                await stats.changed.wait()
        await stub.DeleteSubscription(
            sub_pb.DeleteSubscriptionRequest(name=created.subscription.name)
        )
    return stats.events / max(stats.last - stats.first, 1e-9), stats.posts


async def _reference(url: str, stats: Receiver.Stats, posts: int) -> float:
    """POSTs/s of one plain client sending the largest body back to back."""
    body = stats.largest
    per_post = len(json.loads(body)["data"]["events"])
    async with httpx.AsyncClient() as client:
        began = time.perf_counter()
        for _ in range(posts):
            response = await client.post(url, content=body)
            response.raise_for_status()
        elapsed = time.perf_counter() - began
    return posts * per_post / elapsed


async def _main(args: argparse.Namespace, addr: str, database_url: str) -> None:
    stats = Receiver.Stats()
    Receiver.stats = stats
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Receiver, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    events = await _fill(addr, args.lines)
    rates: list[float] = []
    refs: list[float] = []
    writes: list[float] = []
    posts = 0
    for r in range(args.repeats):
        before = await asyncio.to_thread(pg_counters, database_url)
        rate, posts = await _deliver(addr, url, stats, events)
        after = await asyncio.to_thread(pg_counters, database_url)
        writes.append((after.xids - before.xids) / events)
        ref = await _reference(url, stats, posts)
        rates.append(rate)
        refs.append(ref)
        print(
            f"  repeat {r + 1}: {rate:,.0f} events/s in {posts} POSTs, "
            f"{writes[-1]:.3f} pg write xacts/event; reference {ref:,.0f} events/s; {_load()}",
            flush=True,
        )
    server.close()

    print(
        f"\nbench-webhooks: {events} events (`seq 1 {args.lines}`), up to "
        f"{args.batch_events} per POST; min/median/max over {args.repeats} repeats; {_load()}"
    )
    print(
        f"  webhook deliveries to a loopback receiver: {mmm(rates, ',.0f')} events/s ({posts} POSTs)"
    )
    print(f"  Postgres write transactions per delivered event: {mmm(writes, '.3f')}")
    print(f"  reference, one plain client POSTing the largest body: {mmm(refs, ',.0f')} events/s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-events", type=int, default=100)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="runwire-bench-webhooks-"))
    print(f"bench-webhooks: before: {_load()}", flush=True)
    server = Server(
        tmp,
        commit_interval=None,
        args=("--webhook-allow", "127.0.0.1", "--webhook-batch-events", str(args.batch_events)),
    )
    server.start()
    try:
        asyncio.run(_main(args, server.addr, server.database_url))
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
