"""kill -9 of the replica delivering a subscription mid-batch: the other replica takes
the subscription over when the lease expires and delivers the rest. Nothing is lost;
the only duplicate is the batch that was never acknowledged, with the same webhook-id
and body."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path

import asyncpg
import grpc
from _faults_kit import report, signal_group
from _live_procs import ServerProcess
from _webhook_receiver import Post, Receiver, Reply, assert_in_order_without_loss, complete
from conftest import util_node

from runwire.v1 import (
    flow_pb2,
    run_service_pb2,
    run_service_pb2_grpc,
    subscription_service_pb2,
    subscription_service_pb2_grpc,
)

pb = subscription_service_pb2
LEASE = 2.0
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SERVE = [
    "--workers", "1",
    "--lease-seconds", str(LEASE),
    "--webhook-allow", "127.0.0.1",
    "--webhook-timeout", "1.5",
    "--webhook-retry-initial", "0.05",
    "--webhook-retry-max", "0.2",
    "--webhook-batch-events", "5",
    "--commit-interval", "0.002",
]  # fmt: skip


def _flow() -> flow_pb2.Flow:
    nodes = [util_node(f"n{i}", "set", value=i) for i in range(4)]
    edges = [flow_pb2.Edge(source=f"n{i}", target=f"n{i + 1}") for i in range(3)]
    return flow_pb2.Flow(name="hooked", nodes=nodes, edges=edges)


async def _finished_runs(server: ServerProcess, count: int) -> dict[str, int]:
    """Start `count` runs and follow each to its end; run_id -> its last seq."""
    runs: dict[str, int] = {}
    async with grpc.aio.insecure_channel(server.addr) as channel:
        stub = run_service_pb2_grpc.RunServiceStub(channel)
        for _ in range(count):
            run = (await stub.StartRun(run_service_pb2.StartRunRequest(flow=_flow()))).run
            last = 0
            async for response in stub.WatchRun(run_service_pb2.WatchRunRequest(run_id=run.run_id)):
                last = max([last, *(e.seq for e in response.events)])
            runs[run.run_id] = last
    return runs


async def _owner_pid(database_url: str) -> int:
    """The process holding the subscription's lease (server ids are host:pid:nonce)."""
    conn = await asyncpg.connect(database_url)
    try:
        owner = await conn.fetchval("SELECT owner_id FROM subscriptions")
    finally:
        await conn.close()
    assert owner, "the delivering replica holds a lease"
    return int(str(owner).split(":")[1])


async def test_webhooks_kill_9_mid_batch_then_takeover(database_url: str, tmp_path: Path) -> None:
    a = ServerProcess(database_url, tmp_path / "a", SERVE)
    b = ServerProcess(database_url, tmp_path / "b", SERVE)
    await a.start()
    await b.start()
    stalled = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_post(post: Post) -> None:
        if post.status == 0:
            loop.call_soon_threadsafe(stalled.set)

    # Batch 1 is acknowledged, batch 2 hangs in the receiver until the sender is killed.
    receiver = Receiver(SECRET, script=[Reply(200), Reply(stall=True)], on_post=on_post)
    try:
        async with receiver:
            runs = await _finished_runs(a, 3)
            async with grpc.aio.insecure_channel(a.addr) as channel:
                stub = subscription_service_pb2_grpc.SubscriptionServiceStub(channel)
                sub = pb.Subscription(
                    target_url=receiver.url,
                    secret=SECRET,
                    start=run_service_pb2.STREAM_START_EARLIEST,
                )
                await stub.CreateSubscription(pb.CreateSubscriptionRequest(subscription=sub))
            async with asyncio.timeout(60):
                await stalled.wait()
            pid = await _owner_pid(database_url)
            victim, survivor = (a, b) if os.getpgid(pid) == a.proc.pid else (b, a)  # type: ignore[union-attr]
            signal_group(victim, signal.SIGKILL)
            killed = time.monotonic()
            await receiver.until(complete(runs))
            taken_over_s = next(p.at for p in receiver.posts if p.at > killed) - killed
            assert await _owner_pid(database_url) != pid
            assert_in_order_without_loss(receiver, runs)
            ids = Counter(p.webhook_id for p in receiver.posts)
            stalled_id = next(p.webhook_id for p in receiver.posts if p.status == 0)
            assert {i for i, n in ids.items() if n > 1} == {stalled_id}, ids
            assert ids[stalled_id] == 2, "re-sent once by the replica that took over"
            report(
                "webhook kill -9",
                posts=len(receiver.posts),
                events=sum(runs.values()),
                duplicated_batches=1,
                takeover_s=f"{taken_over_s:.2f}",
                lease_s=LEASE,
            )
            await survivor.kill()
    finally:
        await a.kill()
        await b.kill()
