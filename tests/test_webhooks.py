"""Webhook subscriptions end to end: a real receiver on loopback that verifies
signatures, fails, stalls, answers 429 and 500, redirects, and comes back; nothing
is lost, events arrive in order per run, a retry carries the same webhook-id and
body; a subscription pauses after N failures and resumes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import grpc
import pytest
from _webhook_receiver import (
    Post,
    Receiver,
    Reply,
    assert_in_order_without_loss,
    complete,
)
from conftest import Harness, util_node

from runwire.store import LogEntry, encode_cursor
from runwire.v1 import (
    events_pb2,
    flow_pb2,
    run_service_pb2,
    subscription_service_pb2,
    subscription_service_pb2_grpc,
)
from runwire.webhooks import backoff, build_batch, generate_secret, secret_key, sign, verify

pb = subscription_service_pb2
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
FAST = {
    "webhook_allow": ("127.0.0.1",),
    "webhook_retry_initial": 0.05,
    "webhook_retry_max": 0.2,
    "webhook_timeout": 1.0,
}


def test_webhooks_signature_matches_the_spec_vector() -> None:
    """The Standard Webhooks test vector (standard-webhooks/spec)."""
    key = secret_key(SECRET)
    body = b'{"test": 2432232314}'
    signature = sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert verify(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body, f"v1,bad {signature}")
    assert not verify(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265331", body, signature)
    assert len(secret_key(generate_secret())) == 32


def test_webhooks_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    for failures, full in ((1, 1.0), (2, 2.0), (3, 4.0), (10, 300.0), (1000, 300.0)):
        delays = [backoff(failures, 1.0, 300.0) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in delays), failures
        assert len(set(delays)) > 1  # jittered


def _flow(name: str = "hooked", n: int = 3) -> flow_pb2.Flow:
    nodes = [util_node(f"n{i}", "set", value=i) for i in range(n)]
    edges = [flow_pb2.Edge(source=f"n{i}", target=f"n{i + 1}") for i in range(n - 1)]
    return flow_pb2.Flow(name=name, nodes=nodes, edges=edges)


async def _runs(harness: Harness, count: int, **kwargs: Any) -> dict[str, int]:
    """Start `count` runs and wait for each to finish; run_id -> its last seq."""
    runs = [await harness.start(_flow(), **kwargs) for _ in range(count)]
    return {r.run_id: len(await harness.events(r.run_id)) for r in runs}


def _stub(harness: Harness) -> subscription_service_pb2_grpc.SubscriptionServiceStub:
    return subscription_service_pb2_grpc.SubscriptionServiceStub(harness.channel)


async def _subscribe(harness: Harness, url: str, **fields: Any) -> pb.Subscription:
    fields.setdefault("start", run_service_pb2.STREAM_START_EARLIEST)
    created = await _stub(harness).CreateSubscription(
        pb.CreateSubscriptionRequest(
            subscription=pb.Subscription(target_url=url, secret=SECRET, **fields)
        )
    )
    return created.subscription


async def test_webhooks_deliver_signed_batches_in_order_per_run(harness_factory: Any) -> None:
    harness: Harness = await harness_factory(**FAST)
    async with Receiver(SECRET) as receiver:
        sub = await _subscribe(harness, receiver.url)
        assert sub.state == pb.SUBSCRIPTION_STATE_ACTIVE
        assert sub.secret == SECRET
        runs = await _runs(harness, 3)
        await receiver.until(complete(runs))
        assert_in_order_without_loss(receiver, runs)
        body = json.loads(receiver.posts[0].body)
        assert body["type"] == "runwire.events"
        assert body["data"]["subscription"] == sub.name
        assert body["data"]["events"][0]["runStarted"]
        assert (
            receiver.posts[0].body
            == json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        ), "canonical JSON"
        await _acknowledged(harness, sub.name, sum(runs.values()))
        got = await _stub(harness).GetSubscription(pb.GetSubscriptionRequest(name=sub.name))
        state = got.subscription
        assert state.delivered_event_count == sum(runs.values())
        assert (state.consecutive_failures, state.last_error, state.secret) == (0, "", "")
        assert state.HasField("last_delivery_time")
        assert state.delivered_cursor


async def test_webhooks_filter_selects_kinds_and_always_run_completed(
    harness_factory: Any,
) -> None:
    harness: Harness = await harness_factory(**FAST)
    async with Receiver(SECRET) as receiver:
        flt = run_service_pb2.RunEventsFilter(
            labels={"team": "a"}, events=run_service_pb2.EventFilter(kinds=["node_succeeded"])
        )
        await _subscribe(harness, receiver.url, filter=flt)
        mine = await _runs(harness, 2, labels={"team": "a"})
        await _runs(harness, 1, labels={"team": "b"})
        done = set(mine)

        def finished(posts: list[Post]) -> bool:
            ended = {
                e["runId"] for p in posts if p.status == 200 for e in p.events
                if "runCompleted" in e
            }  # fmt: skip
            return ended >= done

        await receiver.until(finished)
        events = receiver.delivered()
        assert {e["runId"] for e in events} == done
        kinds = {next(k for k in ("nodeSucceeded", "runCompleted") if k in e) for e in events}
        assert kinds == {"nodeSucceeded", "runCompleted"}
        assert len(events) == 2 * (3 + 1)


async def test_webhooks_survive_failures_stalls_429_and_500(harness_factory: Any) -> None:
    """The receiver fails in every way, then comes back: nothing lost, in order,
    each retry the same webhook-id and body, Retry-After honoured."""
    harness: Harness = await harness_factory(**FAST)
    script = [
        Reply(500),
        Reply(429, (("Retry-After", "1"),)),
        Reply(stall=True),
        Reply(503),
        Reply(500),
    ]
    async with Receiver(SECRET, script=list(script)) as receiver:
        runs = await _runs(harness, 2)
        sub = await _subscribe(harness, receiver.url)
        await receiver.until(complete(runs))
        assert_in_order_without_loss(receiver, runs)
        first = receiver.posts[: len(script) + 1]
        assert len({p.webhook_id for p in first}) == 1, "retries of one batch share its id"
        assert first[-1].status == 200
        assert first[2].at - first[1].at >= 1.0, "Retry-After: 1 honoured"
        await _acknowledged(harness, sub.name, sum(runs.values()))
        state = await _stub(harness).GetSubscription(pb.GetSubscriptionRequest(name=sub.name))
        assert state.subscription.consecutive_failures == 0


async def _state(harness: Harness, name: str, want: int) -> pb.Subscription:
    """Wait until the subscription is in state `want` (re-read after each delivery step)."""
    async with asyncio.timeout(30):
        while True:
            got = await _stub(harness).GetSubscription(pb.GetSubscriptionRequest(name=name))
            if got.subscription.state == want:
                return got.subscription
            await asyncio.sleep(0.05)


async def _acknowledged(harness: Harness, name: str, events: int) -> None:
    """Wait until the subscription's position is past `events` events."""
    async with asyncio.timeout(30):
        while True:
            got = await _stub(harness).GetSubscription(pb.GetSubscriptionRequest(name=name))
            if got.subscription.delivered_event_count >= events:
                return
            await asyncio.sleep(0.05)


async def test_webhooks_pause_after_max_failures_and_resume(harness_factory: Any) -> None:
    """Three failures in a row (a redirect among them, not followed) pause it; resume delivers."""
    harness: Harness = await harness_factory(**FAST, webhook_max_failures=3)
    script = [Reply(500), Reply(302, (("Location", "http://127.0.0.1:9/elsewhere"),)), Reply(500)]
    async with Receiver(SECRET, script=script, default=Reply(500)) as receiver:
        runs = await _runs(harness, 1)
        sub = await _subscribe(harness, receiver.url)
        paused = await _state(harness, sub.name, pb.SUBSCRIPTION_STATE_PAUSED)
        assert paused.consecutive_failures == 3
        assert paused.last_error.startswith("HTTP 500")
        assert len(receiver.posts) == 3, "no delivery while paused"
        assert paused.delivered_event_count == 0
        receiver.default = Reply(200)
        resumed = await _stub(harness).ResumeSubscription(
            pb.ResumeSubscriptionRequest(name=sub.name)
        )
        assert resumed.subscription.state == pb.SUBSCRIPTION_STATE_ACTIVE
        assert resumed.subscription.consecutive_failures == 0
        await receiver.until(complete(runs))
        assert_in_order_without_loss(receiver, runs)
        again = await _stub(harness).ResumeSubscription(pb.ResumeSubscriptionRequest(name=sub.name))
        assert again.subscription.state == pb.SUBSCRIPTION_STATE_ACTIVE  # idempotent


async def test_webhooks_redirect_is_a_failure_not_followed(harness_factory: Any) -> None:
    harness: Harness = await harness_factory(**FAST, webhook_max_failures=1)
    async with (
        Receiver(SECRET) as target,
        Receiver(SECRET) as receiver,
    ):
        receiver.default = Reply(307, (("Location", target.url),))
        await _runs(harness, 1)
        sub = await _subscribe(harness, receiver.url)
        paused = await _state(harness, sub.name, pb.SUBSCRIPTION_STATE_PAUSED)
        assert "not followed" in paused.last_error
        assert target.posts == []


async def test_webhooks_list_get_delete_and_idempotent_create(harness_factory: Any) -> None:
    harness: Harness = await harness_factory(**FAST)
    stub = _stub(harness)
    request = pb.CreateSubscriptionRequest(
        subscription=pb.Subscription(target_url="http://127.0.0.1:9/a"), request_id="r-1"
    )
    first = (await stub.CreateSubscription(request)).subscription
    again = (await stub.CreateSubscription(request)).subscription
    assert first.name == again.name
    assert first.secret == again.secret
    assert first.secret.startswith("whsec_")
    assert len(secret_key(first.secret)) == 32
    request.subscription.target_url = "http://127.0.0.1:9/b"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateSubscription(request)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    names = [first.name]
    for i in range(4):
        sub = pb.Subscription(target_url=f"http://127.0.0.1:9/{i}")
        names.append((await stub.CreateSubscription(pb.CreateSubscriptionRequest(subscription=sub))).subscription.name)  # fmt: skip
    listed: list[str] = []
    token = ""
    while True:
        page = await stub.ListSubscriptions(
            pb.ListSubscriptionsRequest(page_size=2, page_token=token)
        )
        assert all(not s.secret for s in page.subscriptions)
        listed += [s.name for s in page.subscriptions]
        token = page.next_page_token
        if not token:
            break
    assert listed == names, "oldest first, every one once"
    await stub.DeleteSubscription(pb.DeleteSubscriptionRequest(name=names[0]))
    for call in (
        stub.GetSubscription(pb.GetSubscriptionRequest(name=names[0])),
        stub.DeleteSubscription(pb.DeleteSubscriptionRequest(name=names[0])),
        stub.ResumeSubscription(pb.ResumeSubscriptionRequest(name=names[0])),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_webhooks_service_needs_the_bearer_token(harness_factory: Any) -> None:
    harness: Harness = await harness_factory(auth_tokens=("s3cret",))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _stub(harness).ListSubscriptions(pb.ListSubscriptionsRequest())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    listed = await _stub(harness).ListSubscriptions(
        pb.ListSubscriptionsRequest(), metadata=(("authorization", "Bearer s3cret"),)
    )
    assert list(listed.subscriptions) == []


async def test_webhooks_timeout_is_capped_to_fit_in_the_lease(harness_factory: Any) -> None:
    """A POST starts only while the lease outlives it: a short lease caps the timeout
    instead of refusing to serve (tests and fault runs use two-second leases)."""
    harness: Harness = await harness_factory(webhook_timeout=10.0, lease_seconds=2.0)
    assert harness.server.deliverer is not None
    assert harness.server.deliverer.timeout == pytest.approx(1.6)


async def test_webhooks_stopping_replica_hands_its_subscriptions_over(
    harness_factory: Any,
) -> None:
    """A replica that stops delivering releases its leases: another claims at once,
    without waiting for them to expire, and delivers the rest."""
    a: Harness = await harness_factory(**FAST)
    b: Harness = await harness_factory(**FAST)
    assert a.server.deliverer is not None
    assert b.server.deliverer is not None
    async with Receiver(SECRET) as receiver:
        first = await _runs(a, 1)
        sub = await _subscribe(a, receiver.url)
        await receiver.until(complete(first))
        await _acknowledged(a, sub.name, sum(first.values()))  # not only received
        holder, other = (a, b) if a.server.deliverer.held() else (b, a)
        assert holder.server.deliverer is not None
        assert other.server.deliverer is not None
        await holder.server.deliverer.stop()
        conn = await asyncpg.connect(a.database_url)
        try:
            # Released: nobody's, or already claimed by the other on the release's NOTIFY.
            owner = await conn.fetchval("SELECT owner_id FROM subscriptions")
            assert owner in (None, other.server.settings.server_id)
        finally:
            await conn.close()
        second = await _runs(other, 1)
        await receiver.until(complete({**first, **second}))
        assert_in_order_without_loss(receiver, {**first, **second})
        assert other.server.deliverer.held()


async def test_webhooks_every_delivery_passes_the_egress_rules(harness_factory: Any) -> None:
    """A target allowed when it was created but not by the replica delivering it is
    refused at the POST (and the refusal is the subscription's last error)."""
    allowing: Harness = await harness_factory(**FAST)
    strict: Harness = await harness_factory(
        **{**FAST, "webhook_allow": (), "webhook_max_failures": 1}
    )
    assert allowing.server.deliverer is not None
    await allowing.server.deliverer.stop()  # only the strict replica delivers
    async with Receiver(SECRET) as receiver:
        await _runs(allowing, 1)
        sub = await _subscribe(allowing, receiver.url)
        assert strict.server.deliverer is not None
        strict.server.deliverer.wake()
        paused = await _state(strict, sub.name, pb.SUBSCRIPTION_STATE_PAUSED)
        assert paused.last_error.startswith("refused by the egress rules: 127.0.0.1 is a loopback")
        assert receiver.posts == []


def test_webhooks_batches_are_cut_by_size_but_never_below_one_event() -> None:
    def entry(pos: int, text: str) -> LogEntry:
        event = events_pb2.RunEvent(run_id="run_x", seq=pos)
        event.node_log.line = text
        return LogEntry(pos, "run_x", pos, "node_log", event.SerializeToString())

    entries = [entry(p, "x" * 300) for p in range(1, 11)]
    whole = build_batch("sub_1", entries, 42, 1 << 20)
    assert (whole.event_count, whole.through_pos) == (10, 42), "all of the read, to what it saw"
    assert whole.webhook_id == "msg_sub_1_42"
    cut = build_batch("sub_1", entries, 42, 1000)
    assert (cut.event_count, cut.through_pos) == (2, 2)
    assert len(cut.body) < 1200
    alone = build_batch("sub_1", [entry(1, "y" * 5000)], 1, 1000)
    assert alone.event_count == 1
    body = json.loads(alone.body)
    assert body["data"]["cursor"] == encode_cursor(1)
    assert body["data"]["events"][0]["nodeLog"]["line"] == "y" * 5000
