"""The per-process delivery loop: lease subscriptions, read the log, POST, advance.

One loop per server process claims active subscriptions nobody holds (or
whose holder's lease expired: a dead replica's subscriptions are taken over
within a lease; one created, resumed or released is claimed at once, on the
NOTIFY its write sends), renews the ones it holds every third of a lease, and runs
one task per held subscription. That task reads the cross-run log after the
subscription's durable position with its filter, forms a batch (at most
`batch_events` events and about `batch_bytes` of JSON), stores it as the
pending batch, and POSTs it until a 2xx; only then does the position advance.
A failure waits an exponential backoff with jitter (or the receiver's
`Retry-After`); `max_failures` in a row pause the subscription until
ResumeSubscription. Exactly one replica delivers a subscription at a time:
every write is fenced by the lease, and a POST starts only while the lease
outlives its timeout. In order per run: one subscription's batches go one at
a time, in commit order.

A subscription that has caught up does not query Postgres at each change of
the log: it takes its entries from the process's shared tail
(runwire.store._log_tail, also WatchEvents'), which reads the new entries
and the retention horizon once per change for every reader, and waits on it.
One behind the tail's window (it started far back, or fell behind while its
receiver was slow or failing) reads the store until it is back in the window,
as it does while the tail's task is down. A stretch its filter selects
nothing of is skipped in memory at once and persisted (`skip_to`) lazily:
once it is SKIP_PERSIST_POSITIONS long or SKIP_PERSIST_SECONDS old, or at
once when retention's horizon passed the stored position (a takeover from
there would pause the subscription for events it had looked at). A stop
stores what was skipped with the release of the leases; a takeover after a
crash rescans at most that stretch, and sends nothing of it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import httpx

from runwire.adapters.http import EgressPolicy
from runwire.store import (
    LogFilter,
    LogTail,
    PendingBatch,
    SubscriptionRow,
    SubscriptionStore,
    log_bounds,
    read_log,
)
from runwire.v1 import run_service_pb2
from runwire.webhooks._payload import build_batch
from runwire.webhooks._sender import Sender
from runwire.webhooks._signing import secret_key

__all__ = ["Deliverer", "DeliverySettings", "backoff"]

log = logging.getLogger(__name__)

_PAUSED = 2  # runwire.v1.SUBSCRIPTION_STATE_PAUSED
_CLAIM_BATCH = 100
_MAX_HELD = 1000
_DB_RETRY = 1.0  # seconds before a task retries after a database error
# A POST starts only while the lease lasts its whole timeout; a fresh renewal
# leaves nearly a lease, so the timeout must fit in it with room for the renewal.
_TIMEOUT_SHARE = 0.8
_SET_PAUSE = 0.01  # seconds between reads while the wake-up stays set
# A stretch of the log a filter selects nothing of is skipped in memory at once,
# and persisted (`skip_to`, one write) only once it is this many positions
# long or this many seconds old. Persisting it at every change cost each
# caught-up subscription a write per commit; a takeover after a crash rescans
# at most this stretch, which delivers nothing twice: nothing in it was selected.
SKIP_PERSIST_POSITIONS = 10_000
SKIP_PERSIST_SECONDS = 5.0


@dataclass(frozen=True)
class DeliverySettings:
    """The `--webhook-*` flags."""

    allow: tuple[str, ...] = ()
    max_failures: int = 10
    timeout: float = 10.0
    batch_events: int = 100
    batch_bytes: int = 1 << 20
    retry_initial: float = 1.0
    retry_max: float = 300.0
    lease_seconds: float = 15.0
    poll: float = 1.0  # seconds between looks at the log when nothing wakes the loop
    skip_persist_positions: int = SKIP_PERSIST_POSITIONS
    skip_persist_seconds: float = SKIP_PERSIST_SECONDS


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Until `event` is set or `seconds` pass.

    Not asyncio.wait_for: on Python 3.11 it drops a cancellation that arrives
    while the event is being set (it returns the inner result instead), and
    stop(), awaiting the cancelled loop, then waited for ever.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


def backoff(failures: int, initial: float, cap: float) -> float:
    """Seconds before the next attempt after `failures` in a row: doubling from
    `initial` up to `cap`, with equal jitter (half fixed, half random)."""
    delay = min(cap, initial * 2.0 ** min(failures - 1, 40))
    return delay / 2 + random.uniform(0, delay / 2)


class Deliverer:
    """This process's webhook deliveries."""

    def __init__(
        self,
        subscriptions: SubscriptionStore,
        pool: asyncpg.Pool,
        *,
        owner_id: str,
        settings: DeliverySettings,
        log_changed: Callable[[], asyncio.Event] | None = None,
        tail: LogTail | None = None,
    ) -> None:
        if settings.max_failures < 1:
            raise ValueError("--webhook-max-failures must be at least 1")
        self.subscriptions = subscriptions
        self.pool = pool
        self.owner_id = owner_id
        self.settings = settings
        self.policy = EgressPolicy.parse(settings.allow)
        # A POST may only start while this replica's lease outlives it.
        self.timeout = min(settings.timeout, _TIMEOUT_SHARE * settings.lease_seconds)
        if self.timeout < settings.timeout:
            log.info(
                "webhook POST timeout %gs: --webhook-timeout capped at %g x --lease-seconds",
                self.timeout,
                _TIMEOUT_SHARE,
            )
        self._log_changed = log_changed
        # This process's shared reader of the log's newest entries (also
        # WatchEvents'): a caught-up subscription takes its entries from it.
        self.tail = tail
        self._ssl: ssl.SSLContext | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._deliveries: dict[str, _Delivery] = {}  # each running task's loop
        self._held_until: dict[str, float] = {}  # monotonic time each lease lasts until
        self._wake = asyncio.Event()
        self._renewed = asyncio.Event()
        self._main: asyncio.Task[None] | None = None
        self.posts = 0  # POST attempts made (tests, bench)
        self.store_reads = 0  # read_log calls the tail's window did not serve (tests, bench)
        self.skip_writes = 0  # skip_to writes (tests, bench)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start claiming and delivering."""
        self._main = asyncio.create_task(self._run(), name="webhook deliveries")

    def wake(self) -> None:
        """Claim now: a subscription was created, resumed or released (by any process:
        the hub calls this on the subscriptions channel's NOTIFY)."""
        self._wake.set()

    def held(self) -> list[str]:
        """The subscriptions this process delivers now."""
        return sorted(self._tasks)

    def position(self, sid: str) -> tuple[int, int] | None:
        """(in memory, stored): how far a held subscription has looked through the
        log, and its durable position (behind while a skip is not persisted yet)."""
        delivery = self._deliveries.get(sid)
        return None if delivery is None else (delivery.pos, delivery.persisted)

    async def stop(self) -> None:
        """Stop delivering and release the leases, so another replica takes over at once."""
        held = list(self._tasks)  # the tasks drop themselves from _tasks as they end
        # Skips kept in memory only, stored with the release. Read before the
        # cancel: a cancelled task moves no further, and drops its entry as it ends.
        skipped = {sid: d.pos for sid, d in self._deliveries.items() if d.pos > d.persisted}
        for task in (self._main, *self._tasks.values()):
            if task is not None:
                task.cancel()
        for task in (self._main, *self._tasks.values()):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._tasks.clear()
        self._deliveries.clear()
        if held:
            try:
                async with asyncio.timeout(5.0):
                    await self.subscriptions.release(self.owner_id, held, skipped)
            except Exception as exc:
                log.warning("could not release %d webhook leases (%r)", len(held), exc)

    # -- claims and renewals ---------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            # Cleared before the round, not after: a wake-up during the round
            # (a subscription created after its claim query) runs another.
            self._wake.clear()
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("webhook lease round failed (%r); retrying", exc)
            await _wait(self._wake, self.settings.lease_seconds / 3)

    async def _tick(self) -> None:
        lease = self.settings.lease_seconds
        held = list(self._tasks)
        if held:
            began = time.monotonic()
            kept: set[str] = set(await self.subscriptions.renew(self.owner_id, held, lease))
            for sid in held:
                if sid in kept:
                    self._held_until[sid] = began + lease
                else:
                    self._drop(sid)
        room = _MAX_HELD - len(self._tasks)
        if room > 0:
            began = time.monotonic()
            rows = await self.subscriptions.claim(
                self.owner_id, lease, min(room, _CLAIM_BATCH), list(self._tasks)
            )
            for row in rows:
                self._held_until[row.subscription_id] = began + lease
                self._tasks[row.subscription_id] = asyncio.create_task(
                    self._deliver(row), name=f"webhook {row.subscription_id}"
                )
        renewed, self._renewed = self._renewed, asyncio.Event()
        renewed.set()

    def _drop(self, sid: str) -> None:
        """The lease is gone: stop delivering (the task may be mid-POST; its writes are fenced)."""
        task = self._tasks.pop(sid, None)
        self._held_until.pop(sid, None)
        self._deliveries.pop(sid, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    # -- one subscription ------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context()
        return self._ssl

    async def _deliver(self, row: SubscriptionRow) -> None:
        sid = row.subscription_id
        sender = Sender(
            row.target_url,
            secret_key(row.secret),
            self.policy,
            timeout=self.timeout,
            ssl_context=self._ssl_context(),
        )
        try:
            while True:
                try:
                    delivery = self._deliveries[sid] = _Delivery(self, row, sender)
                    await delivery.run()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("webhook %s: %r; retrying in %gs", sid, exc, _DB_RETRY)
                    await asyncio.sleep(_DB_RETRY)
                    fresh = await self.subscriptions.get(sid)
                    if fresh is None or fresh.owner_id != self.owner_id:
                        return
                    row = fresh
        finally:
            await sender.close()
            if self._tasks.get(sid) is asyncio.current_task():
                self._deliveries.pop(sid, None)
                self._tasks.pop(sid, None)
                self._held_until.pop(sid, None)

    async def lease_covers(self, sid: str, seconds: float) -> bool:
        """Wait until this process's lease on `sid` lasts `seconds` more; False once it is lost."""
        while sid in self._tasks:
            if self._held_until.get(sid, 0.0) - time.monotonic() > seconds:
                return True
            renewed = self._renewed
            self._wake.set()
            await renewed.wait()
        return False

    async def log_wait(self, changed: asyncio.Event) -> None:
        """Until the log changes after `changed` was taken, or a poll interval passes."""
        if changed.is_set():
            # A commit since the read (or a draining hub, where it stays set):
            # read again, but never spin.
            await asyncio.sleep(_SET_PAUSE)
            return
        await _wait(changed, self.settings.poll)

    async def tail_wait(self, pos: int) -> None:
        """Until the shared tail looked past `pos`, or a poll interval passes."""
        assert self.tail is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.poll):
                await self.tail.wait_past(pos)
                if not self.tail.live or self.tail.window[1] <= pos:
                    # The tail stopped (the next read goes to the store) or the
                    # hub is draining: read again, but never spin.
                    await asyncio.sleep(_SET_PAUSE)

    def log_generation(self) -> asyncio.Event:
        """The event the next commit sets (Hub.log_changed); take it before reading the log."""
        return self._log_changed() if self._log_changed is not None else asyncio.Event()


class _Delivery:
    """One held subscription's loop, from its stored state."""

    def __init__(self, owner: Deliverer, row: SubscriptionRow, sender: Sender) -> None:
        self.d = owner
        self.sid = row.subscription_id
        self.filter = LogFilter.from_proto(run_service_pb2.RunEventsFilter.FromString(row.filter))
        self.pos = row.delivered_pos
        # The stored position, and when it was stored: a skip is persisted lazily.
        self.persisted = row.delivered_pos
        self.persisted_at = time.monotonic()
        self.pending: PendingBatch | None = row.pending
        self.failures = row.consecutive_failures
        self.due = row.next_attempt_time.timestamp()
        self.sender = sender

    async def run(self) -> None:
        tail = self.d.tail
        with tail.attached() if tail is not None else contextlib.nullcontext():
            await self._run()

    async def _run(self) -> None:
        s = self.d.settings
        while True:
            if self.pending is None:
                batch = await self._next_batch()
                if batch is None:
                    return
                if not batch:
                    continue
            assert self.pending is not None
            wait = self.due - datetime.now(UTC).timestamp()
            if wait > 0:
                await asyncio.sleep(wait)
            if not await self.d.lease_covers(self.sid, self.d.timeout):
                return
            self.d.posts += 1
            outcome = await self.sender.post(self.pending.webhook_id, self.pending.body)
            if outcome.ok:
                if not await self.d.subscriptions.acknowledge(
                    self.sid, self.d.owner_id, self.pending.webhook_id
                ):
                    return
                self.pos, self.pending, self.failures = self.pending.through_pos, None, 0
                self.persisted, self.persisted_at = self.pos, time.monotonic()
                self.due = 0.0
                continue
            self.failures += 1
            delay = (
                outcome.retry_after
                if outcome.retry_after is not None
                else backoff(self.failures, s.retry_initial, s.retry_max)
            )
            row = await self.d.subscriptions.fail(
                self.sid, self.d.owner_id, outcome.error, delay, s.max_failures
            )
            if row is None:
                return
            if row.state == _PAUSED:
                log.warning(
                    "webhook subscriptions/%s paused after %d failed deliveries: %s",
                    self.sid,
                    row.consecutive_failures,
                    outcome.error,
                )
                return
            self.failures = row.consecutive_failures
            self.due = row.next_attempt_time.timestamp()

    async def _next_batch(self) -> bool | None:
        """Store the next batch as pending: True when there is one; False when the
        read found none (after skipping what the filter does not select, or after
        waiting for a commit); None when this replica must stop delivering."""
        s = self.d.settings
        tail = self.d.tail
        # From the shared tail's window when it reaches back to `pos` (its
        # read took the horizon in the same snapshot), else from the store as
        # a subscription behind the window must.
        taken = tail.take(self.pos, s.batch_events, self.filter) if tail is not None else None
        changed: asyncio.Event | None = None
        if taken is not None:
            entries, looked, horizon = taken
        else:
            # Taken before the read: a commit after the read has set it.
            changed = self.d.log_generation()
            self.d.store_reads += 1
            async with self.d.pool.acquire() as conn:
                entries, looked = await read_log(conn, self.pos, s.batch_events, self.filter)
                # The horizon after the read, not before: retention that deleted
                # entries this read would have returned has raised it by then.
                horizon, _latest = await log_bounds(conn)
        if self.pos < horizon:
            await self._expired()
            return None
        if not entries:
            if looked > self.pos:  # skipped a stretch the filter selects nothing of: go on
                self.pos = looked
                return False if await self._persist_skip(horizon) else None
            if not await self._persist_skip(horizon):
                return None
            if changed is None:
                await self.d.tail_wait(self.pos)
            else:
                await self.d.log_wait(changed)
            return False
        batch = build_batch(self.sid, entries, looked, s.batch_bytes)
        if not await self.d.subscriptions.set_pending(self.sid, self.d.owner_id, batch):
            return None
        self.pending = batch
        return True

    async def _expired(self) -> None:
        """Retention deleted events after this subscription's position: pause it."""
        await self.d.subscriptions.pause(
            self.sid,
            self.d.owner_id,
            f"CURSOR_EXPIRED: events after position {self.pos} were pruned by "
            "retention before they were delivered; recreate the subscription",
        )

    async def _persist_skip(self, horizon: int) -> bool:
        """Persist the position skipped to in memory once it is due (see
        SKIP_PERSIST_POSITIONS), or at once when retention passed the stored one
        (a takeover from there would pause the subscription for nothing); False
        when the lease is lost."""
        if self.pos <= self.persisted:
            return True
        s = self.d.settings
        now = time.monotonic()
        if (
            self.pos - self.persisted < s.skip_persist_positions
            and now - self.persisted_at < s.skip_persist_seconds
            and self.persisted >= horizon
        ):
            return True
        self.d.skip_writes += 1
        if not await self.d.subscriptions.skip_to(self.sid, self.d.owner_id, self.pos):
            return False
        self.persisted, self.persisted_at = self.pos, now
        return True
