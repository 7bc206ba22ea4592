"""Retention in the store: delete finished runs in small batches.

A batch deletes the runs, their gates, and their events that sit in the
default partition, in one transaction; events in day partitions stay until
their partition is dropped whole (store/_partitions.py), so pruning never
bloats a day partition. Readers never see them: WatchRun reads an event
only through its run (Store.read_events), which is gone, and the batch raises
the event log's horizon past the pruned runs' highest position in the same
transaction, so WatchEvents and webhook delivery never read past it into a
pruned run, and a cursor from before it answers CURSOR_EXPIRED.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from runwire.store._log import mark_pruned
from runwire.store._partitions import DEFAULT_PARTITION

__all__ = ["count_prunable", "existing_runs", "prune_batch"]

# Runs finished before now() - $1 seconds, oldest end first.
_FINISHED_BEFORE = "end_time < now() - make_interval(secs => $1::float8)"


async def prune_batch(pool: asyncpg.Pool, older_than: float, limit: int) -> list[str]:
    """Delete up to `limit` runs that finished more than `older_than` seconds
    ago, with their gates and default-partition events; returns their ids.

    Runs another pruner holds are skipped (SKIP LOCKED), so replicas prune
    side by side without waiting on each other.
    """
    async with pool.acquire() as conn, conn.transaction():
        record = await conn.fetchrow(
            f"""WITH doomed AS (
                    SELECT run_id, last_seq FROM runs WHERE {_FINISHED_BEFORE}
                    ORDER BY end_time LIMIT $2 FOR UPDATE SKIP LOCKED
                ), horizon AS (
                    -- A run's positions grow with its seqs: its last event holds its
                    -- highest position, found by the primary key alone.
                    SELECT max(e.pos) AS pos FROM events e
                    JOIN doomed d ON e.run_id = d.run_id AND e.seq = d.last_seq
                ), gone_gates AS (
                    DELETE FROM gates WHERE run_id IN (SELECT run_id FROM doomed)
                ), gone_events AS (
                    DELETE FROM {DEFAULT_PARTITION} WHERE run_id IN (SELECT run_id FROM doomed)
                ), gone AS (
                    DELETE FROM runs WHERE run_id IN (SELECT run_id FROM doomed) RETURNING run_id
                )
                SELECT (SELECT pos FROM horizon) AS horizon,
                       ARRAY(SELECT run_id FROM gone) AS run_ids""",
            older_than,
            limit,
        )
        assert record is not None
        if record["horizon"] is not None:
            # Last, so the log head's row lock (which every commit of the
            # writer takes) is held only for the end of this transaction.
            await mark_pruned(conn, int(record["horizon"]))
    return list(record["run_ids"])


async def count_prunable(pool: asyncpg.Pool, older_than: float) -> int:
    """How many runs finished more than `older_than` seconds ago."""
    return int(
        await pool.fetchval(f"SELECT count(*) FROM runs WHERE {_FINISHED_BEFORE}", older_than)
    )


async def existing_runs(pool: asyncpg.Pool, run_ids: Sequence[str]) -> set[str]:
    """Which of these runs are stored."""
    rows = await pool.fetch("SELECT run_id FROM runs WHERE run_id = ANY($1)", list(run_ids))
    return {r["run_id"] for r in rows}
