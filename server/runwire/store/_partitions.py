"""Run ids and the partitions of the events table.

`events` is partitioned by RANGE (run_id), one partition per UTC day of run
creation (see migrations/0007_events_partitioned.sql for why). A run id is
`run_` + a UUIDv7 in hex: its first 12 hex digits are the creation time in
milliseconds, so the ids created in one day form the range
[`run_` + hex(day start), `run_` + hex(next day start)). Every id and bound
is `run_` followed by lowercase hex digits, which sort alike in the C
collation and in the usual libc and ICU ones. Whether a day partition may be
dropped is decided by what is stored (no run left in its range), never by
assuming where an id must be.

`events_default` holds everything else (runs from before the migration, a day
not created yet), so an insert never fails. This module is the only place
that names a partition: the writer and the readers know only `events`.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import time

import asyncpg

__all__ = [
    "DEFAULT_PARTITION",
    "bounds",
    "drop_pruned_partitions",
    "ensure_partitions",
    "new_run_id",
    "partition_days",
]

log = logging.getLogger(__name__)

DEFAULT_PARTITION = "events_default"
_DAY_MS = 86_400_000
_NAME = re.compile(r"^events_p(\d{8})$")
# Replicas serialise partition DDL on this lock (migrations use 0x72756E77).
_DDL_LOCK = 0x72756E78
# DDL on events waits at most this long for its locks, then tries again on the
# next round. Creating a partition blocks no insert (SHARE UPDATE EXCLUSIVE on
# events); dropping one detaches it, and its ACCESS EXCLUSIVE request, while
# queued, holds up every insert and read behind it: that wait is kept short.
_LOCK_TIMEOUT = "2s"
_DROP_LOCK_TIMEOUT = "250ms"


def new_run_id(now: float | None = None) -> str:
    """`run_` + a UUIDv7 (RFC 9562) in hex: time-ordered, 74 random bits."""
    ms = int((time.time() if now is None else now) * 1000) & ((1 << 48) - 1)
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms << 80) | (0x7 << 76) | ((rand >> 62) & 0xFFF) << 64 | (0b10 << 62)
    value |= rand & ((1 << 62) - 1)
    return f"run_{value:032x}"


def _day(now: float | None = None) -> int:
    return int((time.time() if now is None else now) * 1000) // _DAY_MS


def bounds(day: int) -> tuple[str, str]:
    """The run ids of runs created on `day` (days since the epoch, UTC): [lo, hi)."""
    return f"run_{day * _DAY_MS:012x}", f"run_{(day + 1) * _DAY_MS:012x}"


def _name(day: int) -> str:
    return (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=day)).strftime(
        "events_p%Y%m%d"
    )


def _day_of(name: str) -> int | None:
    m = _NAME.match(name)
    if m is None:
        return None
    date = dt.datetime.strptime(m.group(1), "%Y%m%d").replace(tzinfo=dt.UTC)
    return (date - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)).days


async def partition_days(pool: asyncpg.Pool) -> dict[int, str]:
    """The day partitions of events: day -> table name."""
    rows = await pool.fetch(
        """SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent = 'events'::regclass"""
    )
    days = {}
    for r in rows:
        day = _day_of(r["relname"])
        if day is not None:
            days[day] = r["relname"]
    return days


async def _columns(conn: asyncpg.pool.PoolConnectionProxy) -> str:
    """The columns of events an INSERT may set (all but generated ones)."""
    names = await conn.fetchval(
        """SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
           WHERE attrelid = 'events'::regclass AND attnum > 0 AND NOT attisdropped
             AND attgenerated = ''"""
    )
    return str(names)


async def _create(pool: asyncpg.Pool, day: int) -> bool:
    name = _name(day)
    lo, hi = bounds(day)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT}'")
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _DDL_LOCK)
        if await conn.fetchval("SELECT to_regclass($1)", name) is not None:
            return False
        # Parent first, then the default partition, as inserts lock them.
        # ATTACH takes SHARE UPDATE EXCLUSIVE on events (inserts go on) and
        # checks the default partition holds nothing of the new range; nothing
        # can be added to it meanwhile, and what it held of the range (events
        # of a run created before its day was there) moves along.
        await conn.execute("LOCK TABLE events IN SHARE UPDATE EXCLUSIVE MODE")
        await conn.execute(f"LOCK TABLE {DEFAULT_PARTITION} IN ACCESS EXCLUSIVE MODE")
        await conn.execute(
            f"""CREATE TABLE {name} (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS
                    INCLUDING GENERATED INCLUDING STORAGE INCLUDING COMPRESSION)"""
        )
        cols = await _columns(conn)
        moved = await conn.fetchval(
            f"""WITH moved AS (
                    DELETE FROM {DEFAULT_PARTITION} WHERE run_id >= $1 AND run_id < $2
                    RETURNING {cols}),
                ins AS (INSERT INTO {name} ({cols}) SELECT {cols} FROM moved RETURNING 1)
                SELECT count(*) FROM ins""",
            lo,
            hi,
        )
        await conn.execute(
            f"ALTER TABLE events ATTACH PARTITION {name} FOR VALUES FROM ('{lo}') TO ('{hi}')"
        )
    log.info("created events partition %s (%d events moved from the default)", name, moved)
    return True


async def ensure_partitions(
    pool: asyncpg.Pool, *, ahead_days: int = 3, now: float | None = None
) -> list[str]:
    """Create the day partitions of today and the next `ahead_days` days that
    are missing; returns the names created."""
    today = _day(now)
    have = await partition_days(pool)
    created = []
    for day in range(today, today + ahead_days + 1):
        if day in have:
            continue
        try:
            if await _create(pool, day):
                created.append(_name(day))
        except asyncpg.LockNotAvailableError:
            # Inserts of the day go to the default partition meanwhile.
            log.warning("events partition %s not created (lock busy); next round", _name(day))
    return created


class _Keep(Exception):
    """A run appeared in a partition's range while it was being dropped."""


async def drop_pruned_partitions(pool: asyncpg.Pool, *, now: float | None = None) -> list[str]:
    """Drop the day partitions before today whose range holds no run any more
    (their events belong to runs retention deleted); returns the names dropped."""
    today = _day(now)
    dropped = []
    for day, name in sorted((await partition_days(pool)).items()):
        if day >= today:
            continue
        lo, hi = bounds(day)
        exists = "SELECT EXISTS (SELECT 1 FROM runs WHERE run_id >= $1 AND run_id < $2)"
        if await pool.fetchval(exists, lo, hi):
            continue
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _DDL_LOCK)
                await conn.execute(f"SET LOCAL lock_timeout = '{_DROP_LOCK_TIMEOUT}'")
                if await conn.fetchval("SELECT to_regclass($1)", name) is None:
                    continue
                # DETACH locks events: no insert can reach the partition from
                # here on, so the check below is final (a run created now, by
                # a replica whose clock is behind, has its events go to the
                # default partition after this commits).
                await conn.execute(f"ALTER TABLE events DETACH PARTITION {name}")
                if await conn.fetchval(exists, lo, hi):
                    raise _Keep
                await conn.execute(f"DROP TABLE {name}")
        except _Keep:
            continue
        except asyncpg.LockNotAvailableError:
            log.info("events partition %s is busy; dropping it next round", name)
            continue
        log.info("dropped events partition %s: no run of its range is left", name)
        dropped.append(name)
    return dropped
