"""Webhook delivery through the shared log tail (store/_log_tail.py): caught-up
subscriptions take their entries from the tail's window instead of each
reading Postgres at every commit, and a stretch their filter selects nothing
of is persisted lazily (`skip_to` once it is old or long, or at once when
retention's horizon passed the stored position).

Real servers over loopback gRPC, real Postgres, the loopback receiver of
tests/_webhook_receiver.py. Every selected event arrives exactly once, in log
order, per subscription; a takeover from a lazily persisted position
delivers nothing twice and misses nothing; retention passing a position that
was only skipped in memory pauses nothing; a subscription far behind the
window reads the store and then joins the tail."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from _webhook_receiver import Post, Receiver
from conftest import Harness, shell_node
from test_retention import _admin, _age, _prune_request
from test_webhooks import FAST, SECRET, _flow, _runs, _stub, _subscribe

from runwire.store import (
    LogFilter,
    SubscriptionRow,
    SubscriptionStore,
    _log_tail,
    decode_cursor,
    log_bounds,
    read_log,
)
from runwire.v1 import flow_pb2, run_service_pb2, subscription_service_pb2
from runwire.webhooks import Deliverer

pb = subscription_service_pb2
LATEST = run_service_pb2.STREAM_START_LATEST
ALL = 1 << 30
WITHIN = 60.0
# Skips persisted only when retention forces it (the position rule, 10 000
# positions, is never reached by these tests' logs).
NEVER = 3600.0


def _deliverer(h: Harness) -> Deliverer:
    assert h.server.deliverer is not None
    return h.server.deliverer


def _persist_skips_after(h: Harness, seconds: float) -> None:
    d = _deliverer(h)
    d.settings = dataclasses.replace(d.settings, skip_persist_seconds=seconds)


def _pool(h: Harness) -> Any:
    assert h.server.store is not None
    return h.server.store.pool


def _sid(sub: pb.Subscription) -> str:
    return sub.name.removeprefix("subscriptions/")


async def _until(check: Callable[[], Awaitable[bool] | bool], within: float = WITHIN) -> None:
    """Wait until `check()` holds, re-checking every 20 ms (a deadline, not a guess)."""
    async with asyncio.timeout(within):
        while True:
            result = check()
            if result if isinstance(result, bool) else await result:
                return
            await asyncio.sleep(0.02)


def _acked(posts: list[Post], name: str) -> list[tuple[str, int]]:
    """(run id, seq) of every event acknowledged for subscription `name`, in arrival order."""
    return [
        (e["runId"], int(e["seq"]))
        for p in posts
        if 200 <= p.status < 300 and json.loads(p.body)["data"]["subscription"] == name
        for e in p.events
    ]


async def _selected(h: Harness, sub: pb.Subscription, flt: Any) -> list[tuple[str, int]]:
    """What the log holds for the subscription from where it started: read_log's answer."""
    entries, _ = await read_log(
        _pool(h), decode_cursor(sub.delivered_cursor), ALL, LogFilter.from_proto(flt)
    )
    return [(e.run_id, e.seq) for e in entries]


async def _stored(h: Harness, sub: pb.Subscription) -> SubscriptionRow:
    row = await SubscriptionStore(_pool(h)).get(_sid(sub))
    assert row is not None
    return row


async def _latest(h: Harness) -> int:
    return (await log_bounds(_pool(h)))[1]


async def _looked_through(d: Deliverer, sub: pb.Subscription, pos: int) -> tuple[int, int]:
    """Wait until the holder's in-memory position reached `pos`; (in memory, stored)."""

    def reached() -> bool:
        at = d.position(_sid(sub))
        return at is not None and at[0] >= pos

    await _until(reached)
    at = d.position(_sid(sub))
    assert at is not None
    return at


async def _deliver_exactly(
    h: Harness, receiver: Receiver, subs: list[tuple[pb.Subscription, Any]]
) -> None:
    """Every subscription got what its filter selects, each event once, in log order."""
    want = {sub.name: await _selected(h, sub, flt) for sub, flt in subs}
    await receiver.until(
        lambda posts: all(len(_acked(posts, n)) >= len(w) for n, w in want.items())
    )
    posts = list(receiver.posts)
    for name, events in want.items():
        assert _acked(posts, name) == events, name
    ids = [p.webhook_id for p in posts]
    assert len(ids) == len(set(ids)), "a batch was sent twice"


async def test_many_caught_up_subscriptions_read_through_one_tail_and_persist_skips_lazily(
    harness_factory: Any,
) -> None:
    h: Harness = await harness_factory(**FAST)
    d = _deliverer(h)
    _persist_skips_after(h, NEVER)
    assert d.tail is not None
    assert d.tail is h.server.watch_events.tail  # type: ignore[attr-defined]
    nothing = [
        run_service_pb2.RunEventsFilter(flow_name="nope"),
        run_service_pb2.RunEventsFilter(labels={"team": "z"}),
    ]
    some = [
        None,
        run_service_pb2.RunEventsFilter(labels={"team": "a"}),
        run_service_pb2.RunEventsFilter(events=run_service_pb2.EventFilter(kinds=["node_succeeded"])),
    ]  # fmt: skip
    plan = [(nothing + some)[i % 5] for i in range(20)]
    async with Receiver(SECRET) as receiver:
        subs = []
        for flt in plan:
            extra = {} if flt is None else {"filter": flt}
            subs.append((await _subscribe(h, receiver.url, start=LATEST, **extra), flt))
        await _until(lambda: len(d.held()) == len(subs) and d.tail.readers >= len(subs))
        tail_reads = d.tail.reads
        for i in range(6):
            await _runs(h, 1, labels={"team": "a" if i % 2 else "b"})
        await _deliver_exactly(h, receiver, subs)
        latest = await _latest(h)
        silent = [sub for sub, flt in subs if any(flt is n for n in nothing)]
        for sub in silent:
            at, stored = await _looked_through(d, sub, latest)
            assert stored < at == latest, "the skip stays in memory"
            assert (await _stored(h, sub)).delivered_pos == stored
        # One tail read per change of the log served all 20: each subscription
        # read the store only while the tail had not started under it.
        changes = d.tail.reads - tail_reads
        assert changes >= 10, changes
        assert d.store_reads <= 2 * len(subs), (d.store_reads, changes)
        assert d.skip_writes == 0
        # Once a skip is old enough, each subscription persists it with one write
        # (at its next wake-up: a poll, as nothing commits).
        writes = d.skip_writes
        _persist_skips_after(h, 0.0)
        for sub in silent:
            await _until(lambda sub=sub: _stored_at_least(h, sub, latest))
        assert len(silent) <= d.skip_writes - writes <= len(subs)
        assert receiver.posts, "the subscriptions that select events got them"


async def _stored_at_least(h: Harness, sub: pb.Subscription, pos: int) -> bool:
    return (await _stored(h, sub)).delivered_pos >= pos


async def _holder(a: Harness, b: Harness, sub: pb.Subscription) -> tuple[Harness, Harness]:
    """(the server delivering `sub`, the other), once one claimed it."""
    sid = _sid(sub)
    await _until(lambda: sid in _deliverer(a).held() or sid in _deliverer(b).held())
    return (a, b) if sid in _deliverer(a).held() else (b, a)


async def _crash(d: Deliverer) -> None:
    """The deliverer's tasks end as in a killed process: no release, no last write."""
    tasks = [t for t in (d._main, *d._tasks.values()) if t is not None]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@pytest.mark.parametrize("end", ["stop", "crash"])
async def test_a_takeover_resumes_from_the_lazily_persisted_position_without_repeats_or_gaps(
    harness_factory: Any, end: str
) -> None:
    """A stopping holder stores the skip it kept in memory as it hands the lease
    back; a crashed one leaves the stored position behind, and the next holder
    reads that stretch again. Neither sends anything twice or misses anything."""
    # Short leases: a crashed holder's lease expires within the test.
    a: Harness = await harness_factory(**FAST, lease_seconds=2.0)
    b: Harness = await harness_factory(**FAST, lease_seconds=2.0)
    for h in (a, b):
        _persist_skips_after(h, NEVER)
    flt = run_service_pb2.RunEventsFilter(labels={"team": "a"})
    async with Receiver(SECRET) as receiver:
        sub = await _subscribe(a, receiver.url, start=LATEST, filter=flt)
        holder, other = await _holder(a, b, sub)
        await _runs(a, 1, labels={"team": "a"})  # delivered and acknowledged
        await _deliver_exactly(a, receiver, [(sub, flt)])
        for _ in range(4):  # many commits the filter selects nothing of
            await _runs(b, 1, labels={"team": "b"})
        at, stored = await _looked_through(_deliverer(holder), sub, await _latest(a))
        assert stored < at, "skipped in memory only"
        assert (await _stored(a, sub)).delivered_pos == stored
        assert _deliverer(holder).skip_writes == 0
        posts = len(receiver.posts)

        if end == "stop":
            await _deliverer(holder).stop()  # hands the lease over with the skip
            assert (await _stored(a, sub)).delivered_pos == at
        else:
            await _crash(_deliverer(holder))
        await _until(lambda: _sid(sub) in _deliverer(other).held())
        _, resumed_from = await _looked_through(_deliverer(other), sub, at)
        # After a crash, from the stored position: the stretch after it is read
        # again, and skipped again.
        assert resumed_from == (at if end == "stop" else stored)
        assert len(receiver.posts) == posts, "the rescan of the skipped stretch sent nothing"
        await _runs(other, 1, labels={"team": "a"})
        await _deliver_exactly(a, receiver, [(sub, flt)])
        got = await _stub(a).GetSubscription(pb.GetSubscriptionRequest(name=sub.name))
        assert got.subscription.state == pb.SUBSCRIPTION_STATE_ACTIVE


async def test_retention_passing_a_skip_kept_in_memory_pauses_nothing(
    harness_factory: Any,
) -> None:
    """The holder is past the horizon in memory, so it goes on; and it persists
    the skip at once when it sees the horizon pass the stored position, so a
    takeover from there does not pause the subscription (CURSOR_EXPIRED) for
    events it had looked at and its filter does not select."""
    a: Harness = await harness_factory(**FAST)
    b: Harness = await harness_factory(**FAST)
    for h in (a, b):
        _persist_skips_after(h, NEVER)
    flt = run_service_pb2.RunEventsFilter(flow_name="wanted")
    async with Receiver(SECRET) as receiver:
        sub = await _subscribe(a, receiver.url, start=LATEST, filter=flt)
        holder, other = await _holder(a, b, sub)
        old = list(await _runs(a, 3))
        at, stored = await _looked_through(_deliverer(holder), sub, await _latest(a))
        assert stored < at
        await _age(a.database_url, old, 31)
        pruned = await _admin(a).PruneRuns(_prune_request(30))
        assert pruned.run_count == 3
        horizon, _ = await log_bounds(_pool(a))
        assert stored < horizon <= at, "retention passed the stored position, not the holder"

        await _runs(a, 1)  # a commit: the tail's read brings the new horizon
        await _until(lambda: _stored_at_least(a, sub, horizon), within=15)
        assert _deliverer(holder).skip_writes == 1
        got = await _stub(a).GetSubscription(pb.GetSubscriptionRequest(name=sub.name))
        assert got.subscription.state == pb.SUBSCRIPTION_STATE_ACTIVE

        await _deliverer(holder).stop()
        await _until(lambda: _sid(sub) in _deliverer(other).held())
        wanted = await other.start(_flow("wanted"))
        await other.events(wanted.run_id)
        await _deliver_exactly(a, receiver, [(sub, flt)])
        assert {run_id for run_id, _ in _acked(list(receiver.posts), sub.name)} == {wanted.run_id}
        got = await _stub(a).GetSubscription(pb.GetSubscriptionRequest(name=sub.name))
        assert got.subscription.state == pb.SUBSCRIPTION_STATE_ACTIVE, got.subscription.last_error


async def test_a_subscription_far_behind_the_window_reads_the_store_then_joins_the_tail(
    harness_factory: Any,
) -> None:
    h: Harness = await harness_factory(**FAST)
    d = _deliverer(h)
    assert d.tail is not None
    d.tail.max_entries, d.tail.page = 50, 20
    async with Receiver(SECRET) as receiver:
        live = await _subscribe(h, receiver.url, start=LATEST)
        await _until(lambda: bool(d.held()))
        big = await h.start(flow_pb2.Flow(name="big", nodes=[shell_node("count", "seq", "1", "400")]))  # fmt: skip
        await h.events(big.run_id)
        await _deliver_exactly(h, receiver, [(live, None)])
        latest = await _latest(h)
        await _looked_through(d, live, latest)
        start, looked, held = d.tail.window
        assert held <= 50
        assert looked == latest
        assert start > 0, "the window moved past the log's start"

        reads = d.store_reads
        behind = await _subscribe(h, receiver.url)  # from the earliest position
        assert decode_cursor(behind.delivered_cursor) < start
        await _deliver_exactly(h, receiver, [(live, None), (behind, None)])
        caught_up = d.store_reads - reads
        assert caught_up >= 4, "400+ events, 100 a batch, read from the store"
        await _looked_through(d, behind, latest)

        # Now in the window: new commits reach both through the tail alone.
        reads, tail_reads = d.store_reads, d.tail.reads
        await _runs(h, 3)
        await _deliver_exactly(h, receiver, [(live, None), (behind, None)])
        assert d.tail.reads - tail_reads >= 3
        assert d.store_reads - reads <= 1


async def test_a_failing_tail_falls_back_to_the_store_and_is_rejoined_once_it_recovers(
    harness_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    h: Harness = await harness_factory(**FAST)
    d = _deliverer(h)
    tail = d.tail
    assert tail is not None
    real = _log_tail.read_tail
    failed: list[int] = []

    async def read_tail(*args: Any, **kwargs: Any) -> Any:
        if broken.is_set():
            failed.append(1)
            raise ConnectionError("postgres unreachable (test)")
        return await real(*args, **kwargs)

    broken = asyncio.Event()
    monkeypatch.setattr(_log_tail, "read_tail", read_tail)
    async with Receiver(SECRET) as receiver:
        sub = await _subscribe(h, receiver.url, start=LATEST)
        await _runs(h, 1)
        await _deliver_exactly(h, receiver, [(sub, None)])
        await _looked_through(d, sub, await _latest(h))

        broken.set()  # the tail's next read fails, and every restart's
        reads = d.store_reads
        await _runs(h, 2)
        await _deliver_exactly(h, receiver, [(sub, None)])
        assert failed, "the tail failed"
        assert d.store_reads > reads, "the subscription read the store meanwhile"

        broken.clear()
        latest = await _latest(h)
        everything = LogFilter.from_proto(None)
        await _until(lambda: tail.take(latest, 1, everything) is not None)  # restarted
        await _looked_through(d, sub, latest)
        reads = d.store_reads
        await _runs(h, 2)
        await _deliver_exactly(h, receiver, [(sub, None)])
        assert d.store_reads - reads <= 1, "back on the tail"
