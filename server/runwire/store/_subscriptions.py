"""Webhook subscriptions in Postgres: the API's rows, and the delivery state one replica leases.

Every write a deliverer makes is fenced by its lease (`owner_id` and an
unexpired `lease_expire_time`): a replica that lost a subscription cannot
advance it or record a failure on it. The batch in flight (`pending_*`) is
stored before its first POST and cleared by the acknowledgement that advances
`delivered_pos` past it, so a retry after a crash or a takeover sends the same
body under the same webhook-id.

A write that makes a subscription claimable (create, resume, release) NOTIFYs
the subscriptions channel in its transaction: every replica's hub wakes its
deliverer, and one claims it at once instead of on its next lease round.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from runwire.store._hub import SUBSCRIPTIONS_CHANNEL
from runwire.store._log import log_bounds

__all__ = [
    "NewSubscription",
    "PendingBatch",
    "SubscriptionRow",
    "SubscriptionStore",
]

# runwire.v1.SubscriptionState and StreamStart numbers (the store imports no gRPC).
ACTIVE = 1
PAUSED = 2
START_EARLIEST = 2


@dataclass(frozen=True)
class NewSubscription:
    """What CreateSubscription persists."""

    subscription_id: str
    target_url: str
    filter: bytes
    secret: str
    start: int
    request_id: str | None
    request_digest: str
    principal: str


@dataclass(frozen=True)
class PendingBatch:
    """A batch stored before its first POST: retried as is until acknowledged."""

    webhook_id: str
    body: bytes
    through_pos: int
    event_count: int


@dataclass(frozen=True)
class SubscriptionRow:
    """A subscription as stored."""

    subscription_id: str
    target_url: str
    filter: bytes
    secret: str
    start: int
    state: int
    create_time: datetime
    request_id: str | None
    request_digest: str | None
    principal: str
    delivered_pos: int
    delivered_event_count: int
    last_delivery_time: datetime | None
    consecutive_failures: int
    last_error: str
    next_attempt_time: datetime
    pending: PendingBatch | None
    owner_id: str | None


def _row(r: asyncpg.Record) -> SubscriptionRow:
    pending = (
        None
        if r["pending_id"] is None
        else PendingBatch(
            r["pending_id"], r["pending_body"], r["pending_through_pos"], r["pending_event_count"]
        )
    )
    return SubscriptionRow(
        subscription_id=r["subscription_id"],
        target_url=r["target_url"],
        filter=r["filter"],
        secret=r["secret"],
        start=r["start"],
        state=r["state"],
        create_time=r["create_time"],
        request_id=r["request_id"],
        request_digest=r["request_digest"],
        principal=r["principal"],
        delivered_pos=r["delivered_pos"],
        delivered_event_count=r["delivered_event_count"],
        last_delivery_time=r["last_delivery_time"],
        consecutive_failures=r["consecutive_failures"],
        last_error=r["last_error"],
        next_attempt_time=r["next_attempt_time"],
        pending=pending,
        owner_id=r["owner_id"],
    )


# The lease fence of every deliverer write.
_HELD = "subscription_id = $1 AND owner_id = $2 AND lease_expire_time > now()"


class SubscriptionStore:
    """Subscription queries over a connection pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # -- the API ------------------------------------------------------------------

    async def create(self, sub: NewSubscription) -> tuple[SubscriptionRow, bool]:
        """Insert the subscription, starting at the log's oldest or newest position;
        with a known request id return the existing one instead.

        Returns the row and whether this call created it.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            horizon, latest = await log_bounds(conn)
            record = await conn.fetchrow(
                """INSERT INTO subscriptions (subscription_id, target_url, filter, secret, start,
                                              state, request_id, request_digest, principal,
                                              delivered_pos)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                   ON CONFLICT (request_id) DO NOTHING
                   RETURNING *""",
                sub.subscription_id,
                sub.target_url,
                sub.filter,
                sub.secret,
                sub.start,
                ACTIVE,
                sub.request_id,
                sub.request_digest,
                sub.principal,
                horizon if sub.start == START_EARLIEST else latest,
            )
            if record is not None:
                await _claimable(conn, [sub.subscription_id])
                return _row(record), True
            existing = await conn.fetchrow(
                "SELECT * FROM subscriptions WHERE request_id = $1", sub.request_id
            )
        if existing is None:  # created and deleted in between: create it afresh
            return await self.create(sub)
        return _row(existing), False

    async def get(self, subscription_id: str) -> SubscriptionRow | None:
        """The subscription, or None."""
        record = await self.pool.fetchrow(
            "SELECT * FROM subscriptions WHERE subscription_id = $1", subscription_id
        )
        return None if record is None else _row(record)

    async def page(self, after: tuple[datetime, str] | None, limit: int) -> list[SubscriptionRow]:
        """Subscriptions oldest first, after the (create_time, subscription_id) cursor."""
        if after is None:
            records = await self.pool.fetch(
                "SELECT * FROM subscriptions ORDER BY create_time, subscription_id LIMIT $1", limit
            )
        else:
            records = await self.pool.fetch(
                """SELECT * FROM subscriptions WHERE (create_time, subscription_id) > ($1, $2)
                   ORDER BY create_time, subscription_id LIMIT $3""",
                after[0],
                after[1],
                limit,
            )
        return [_row(r) for r in records]

    async def delete(self, subscription_id: str) -> bool:
        """Delete it; False when there was none. Its deliverer's next fenced write fails."""
        done = await self.pool.execute(
            "DELETE FROM subscriptions WHERE subscription_id = $1", subscription_id
        )
        return bool(done.endswith(" 1"))

    async def resume(self, subscription_id: str) -> SubscriptionRow | None:
        """Make a paused subscription active again, due at once; None when there is none."""
        async with self.pool.acquire() as conn, conn.transaction():
            record = await conn.fetchrow(
                """UPDATE subscriptions
                   SET state = $2,
                       consecutive_failures = CASE WHEN state = $3 THEN 0 ELSE consecutive_failures END,
                       next_attempt_time = CASE WHEN state = $3 THEN now() ELSE next_attempt_time END
                   WHERE subscription_id = $1 RETURNING *""",
                subscription_id,
                ACTIVE,
                PAUSED,
            )
            if record is None:
                return None
            await _claimable(conn, [subscription_id])
        return _row(record)

    # -- delivery -------------------------------------------------------------------

    async def claim(
        self, owner_id: str, seconds: float, limit: int, exclude: list[str]
    ) -> list[SubscriptionRow]:
        """Lease active subscriptions nobody holds (or whose lease expired)."""
        records = await self.pool.fetch(
            """UPDATE subscriptions
               SET owner_id = $1, lease_expire_time = now() + make_interval(secs => $2)
               WHERE subscription_id IN (
                   SELECT subscription_id FROM subscriptions
                   WHERE state = $4 AND NOT (subscription_id = ANY($5))
                     AND (lease_expire_time IS NULL OR lease_expire_time < now())
                   ORDER BY create_time
                   LIMIT $3
                   FOR UPDATE SKIP LOCKED)
               RETURNING *""",
            owner_id,
            seconds,
            limit,
            ACTIVE,
            exclude,
        )
        return [_row(r) for r in records]

    async def renew(self, owner_id: str, ids: list[str], seconds: float) -> list[str]:
        """Extend this owner's unexpired leases of active subscriptions; the ones it still holds."""
        records = await self.pool.fetch(
            """UPDATE subscriptions SET lease_expire_time = now() + make_interval(secs => $3)
               WHERE subscription_id = ANY($2) AND owner_id = $1 AND state = $4
                 AND lease_expire_time > now()
               RETURNING subscription_id""",
            owner_id,
            ids,
            seconds,
            ACTIVE,
        )
        return [r["subscription_id"] for r in records]

    async def release(
        self, owner_id: str, ids: list[str], skipped: Mapping[str, int] | None = None
    ) -> None:
        """Give leases up at once, for another replica to take over without waiting.

        `skipped` (subscription -> position) stores, in the same transaction,
        how far each was skipped in memory only (see webhooks' lazy `skip_to`),
        so the next holder does not read that stretch again."""
        async with self.pool.acquire() as conn, conn.transaction():
            if skipped:
                await conn.execute(
                    """UPDATE subscriptions s SET delivered_pos = k.pos
                       FROM unnest($2::text[], $3::bigint[]) AS k(id, pos)
                       WHERE s.subscription_id = k.id AND s.owner_id = $1
                         AND s.pending_id IS NULL AND s.delivered_pos < k.pos""",
                    owner_id,
                    list(skipped),
                    list(skipped.values()),
                )
            released = await conn.fetch(
                """UPDATE subscriptions SET owner_id = NULL, lease_expire_time = NULL
                   WHERE subscription_id = ANY($2) AND owner_id = $1
                   RETURNING subscription_id, state""",
                owner_id,
                ids,
            )
            await _claimable(conn, [r["subscription_id"] for r in released if r["state"] == ACTIVE])

    async def set_pending(self, subscription_id: str, owner_id: str, batch: PendingBatch) -> bool:
        """Store the batch about to be POSTed; False when the lease is lost."""
        done = await self.pool.execute(
            f"""UPDATE subscriptions SET pending_id = $3, pending_body = $4,
                       pending_through_pos = $5, pending_event_count = $6
                WHERE {_HELD} AND pending_id IS NULL""",
            subscription_id,
            owner_id,
            batch.webhook_id,
            batch.body,
            batch.through_pos,
            batch.event_count,
        )
        return bool(done.endswith(" 1"))

    async def skip_to(self, subscription_id: str, owner_id: str, pos: int) -> bool:
        """Advance past log entries the filter skipped (no POST); False when the lease is lost."""
        done = await self.pool.execute(
            f"""UPDATE subscriptions SET delivered_pos = $3
                WHERE {_HELD} AND pending_id IS NULL AND delivered_pos < $3""",
            subscription_id,
            owner_id,
            pos,
        )
        return bool(done.endswith(" 1"))

    async def acknowledge(self, subscription_id: str, owner_id: str, webhook_id: str) -> bool:
        """The pending batch got a 2xx: advance past it; False when the lease is lost."""
        done = await self.pool.execute(
            f"""UPDATE subscriptions
                SET delivered_pos = pending_through_pos,
                    delivered_event_count = delivered_event_count + pending_event_count,
                    last_delivery_time = now(), consecutive_failures = 0, last_error = '',
                    next_attempt_time = now(),
                    pending_id = NULL, pending_body = NULL, pending_through_pos = NULL,
                    pending_event_count = NULL
                WHERE {_HELD} AND pending_id = $3""",
            subscription_id,
            owner_id,
            webhook_id,
        )
        return bool(done.endswith(" 1"))

    async def fail(
        self, subscription_id: str, owner_id: str, error: str, delay: float, pause_at: int
    ) -> SubscriptionRow | None:
        """Record a failed attempt, due again after `delay` seconds; paused (and released)
        when it makes `pause_at` consecutive failures. None when the lease is lost."""
        record = await self.pool.fetchrow(
            f"""UPDATE subscriptions
                SET consecutive_failures = consecutive_failures + 1, last_error = $3,
                    next_attempt_time = now() + make_interval(secs => $4),
                    state = CASE WHEN consecutive_failures + 1 >= $5 THEN $6 ELSE state END,
                    owner_id = CASE WHEN consecutive_failures + 1 >= $5 THEN NULL ELSE owner_id END,
                    lease_expire_time = CASE WHEN consecutive_failures + 1 >= $5 THEN NULL
                                             ELSE lease_expire_time END
                WHERE {_HELD} RETURNING *""",
            subscription_id,
            owner_id,
            error[:1000],
            delay,
            pause_at,
            PAUSED,
        )
        return None if record is None else _row(record)

    async def pause(self, subscription_id: str, owner_id: str, error: str) -> bool:
        """Pause it at once (its position cannot be delivered from); releases the lease."""
        done = await self.pool.execute(
            f"""UPDATE subscriptions SET state = $3, last_error = $4,
                       owner_id = NULL, lease_expire_time = NULL
                WHERE {_HELD}""",
            subscription_id,
            owner_id,
            PAUSED,
            error[:1000],
        )
        return bool(done.endswith(" 1"))


async def _claimable(conn: asyncpg.pool.PoolConnectionProxy, ids: list[str]) -> None:
    """NOTIFY, at this transaction's commit, that these subscriptions may be claimed now."""
    if ids:
        await conn.execute(
            "SELECT pg_notify($1, sid) FROM unnest($2::text[]) AS sid", SUBSCRIPTIONS_CHANNEL, ids
        )
