"""Webhook subscriptions are claimed at once by another replica: a create, a
resume or a released lease NOTIFYs every replica's hub, whose deliverer claims
then instead of on its next lease round.

The servers run with a 600 s lease, so a lease round comes every 200 s; each
receiver must be reached within 60 s, which only the NOTIFY explains.
Subscriptions a test needs without a NOTIFY (to prove a replica's first round
is over, or paused from the start) are inserted with SQL."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
from _webhook_receiver import Receiver, assert_in_order_without_loss, complete
from conftest import Harness, util_node
from test_webhooks import FAST, SECRET

from runwire.store import SubscriptionStore
from runwire.v1 import (
    flow_pb2,
    run_service_pb2,
    subscription_service_pb2,
    subscription_service_pb2_grpc,
)
from runwire.webhooks import Deliverer, DeliverySettings

pb = subscription_service_pb2
LONG_LEASE = {**FAST, "lease_seconds": 600.0}  # lease rounds 200 s apart
WITHIN = 60.0  # well inside one lease round
ACTIVE, PAUSED = pb.SUBSCRIPTION_STATE_ACTIVE, pb.SUBSCRIPTION_STATE_PAUSED


async def _run(harness: Harness) -> dict[str, int]:
    """One finished run: run_id -> its last seq."""
    nodes = [util_node("a", "set", value=1), util_node("b", "set", value=2)]
    flow = flow_pb2.Flow(name="hooked", nodes=nodes, edges=[flow_pb2.Edge(source="a", target="b")])
    run = await harness.start(flow)
    return {run.run_id: len(await harness.events(run.run_id))}


async def _insert(database_url: str, url: str, state: int) -> str:
    """A subscription from the log's start, nobody's, stored without a NOTIFY."""
    sid = f"sub_{uuid.uuid4().hex}"
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            """INSERT INTO subscriptions (subscription_id, target_url, filter, secret, start,
                                          state, delivered_pos)
               VALUES ($1, $2, '', $3, $4, $5, 0)""",
            sid, url, SECRET, run_service_pb2.STREAM_START_EARLIEST, state,
        )  # fmt: skip
    finally:
        await conn.close()
    return sid


def _stub(harness: Harness) -> subscription_service_pb2_grpc.SubscriptionServiceStub:
    return subscription_service_pb2_grpc.SubscriptionServiceStub(harness.channel)


async def _api_only(harness_factory: Any) -> Harness:
    """A server that answers SubscriptionService but delivers nothing itself."""
    api: Harness = await harness_factory(**LONG_LEASE)
    assert api.server.deliverer is not None
    await api.server.deliverer.stop()
    return api


async def _delivering(harness_factory: Any, database_url: str, runs: dict[str, int]) -> Harness:
    """A delivering server whose first lease round is over: it claimed a subscription
    inserted before it started, and that one got every event of `runs`."""
    async with Receiver(SECRET) as first:
        sid = await _insert(database_url, first.url, ACTIVE)
        server: Harness = await harness_factory(**LONG_LEASE)
        await first.until(complete(runs), within=WITHIN)
    assert server.server.deliverer is not None
    assert sid in server.server.deliverer.held()
    return server


async def test_webhooks_create_and_resume_on_one_replica_are_claimed_at_once_by_another(
    harness_factory: Any, database_url: str
) -> None:
    api = await _api_only(harness_factory)
    runs = await _run(api)
    deliverer = await _delivering(harness_factory, database_url, runs)
    assert deliverer.server.deliverer is not None
    async with Receiver(SECRET) as created, Receiver(SECRET) as resumed:
        sub = (
            await _stub(api).CreateSubscription(
                pb.CreateSubscriptionRequest(
                    subscription=pb.Subscription(
                        target_url=created.url,
                        secret=SECRET,
                        start=run_service_pb2.STREAM_START_EARLIEST,
                    )
                )
            )
        ).subscription
        await created.until(complete(runs), within=WITHIN)
        assert_in_order_without_loss(created, runs)
        assert sub.name.removeprefix("subscriptions/") in deliverer.server.deliverer.held()

        paused = await _insert(database_url, resumed.url, PAUSED)
        got = await _stub(api).ResumeSubscription(
            pb.ResumeSubscriptionRequest(name=f"subscriptions/{paused}")
        )
        assert got.subscription.state == ACTIVE
        await resumed.until(complete(runs), within=WITHIN)
        assert_in_order_without_loss(resumed, runs)
        assert paused in deliverer.server.deliverer.held()


async def test_webhooks_released_leases_are_claimed_at_once_by_another_replica(
    harness_factory: Any, database_url: str
) -> None:
    api = await _api_only(harness_factory)
    runs = await _run(api)
    async with Receiver(SECRET) as receiver:
        first = await _delivering(harness_factory, database_url, runs)
        assert first.server.deliverer is not None
        sid = await _insert(database_url, receiver.url, ACTIVE)
        first.server.deliverer.wake()  # only this replica: it claims `sid`
        await receiver.until(complete(runs), within=WITHIN)
        assert first.server.deliverer.held().count(sid) == 1
        second = await _delivering(harness_factory, database_url, runs)
        assert second.server.deliverer is not None

        await first.server.deliverer.stop()  # hands its leases back
        more = {**runs, **await _run(api)}
        await receiver.until(complete(more), within=WITHIN)
        assert_in_order_without_loss(receiver, more)
        assert sid in second.server.deliverer.held()


async def test_webhooks_deliverer_stops_when_woken_as_it_is_cancelled(database_url: str) -> None:
    """Regression: the lease loop waited with asyncio.wait_for, which on Python 3.11
    drops a cancellation that comes as the wake-up is set (a NOTIFY or a create
    just before stop()); the loop went on and stop() waited for ever."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        deliverer = Deliverer(
            SubscriptionStore(pool),
            pool,
            owner_id="t",
            settings=DeliverySettings(lease_seconds=600),
        )
        first_round = deliverer._renewed  # set when the first lease round ends
        deliverer.start()
        await first_round.wait()  # and the loop is parked in its wait now
        deliverer.wake()
        stopping = asyncio.ensure_future(deliverer.stop())
        done, _ = await asyncio.wait({stopping}, timeout=10)  # a bound on failure only
        if not done and deliverer._main is not None:
            deliverer._main.cancel()  # the loop that kept going: end the test
            await asyncio.wait({stopping})
        assert done, "stop() was still waiting for the lease loop"
    finally:
        await pool.close()
