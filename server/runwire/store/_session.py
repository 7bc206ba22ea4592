"""Postgres session settings that bound what a frozen or cut-off server can hold.

A replica stopped (SIGSTOP, a VM pause, swapped out) inside a transaction
keeps its row locks for as long as it is stopped, and another replica's
`FOR UPDATE SKIP LOCKED` claim skips that run until it wakes: failover would
depend on the old owner's cooperation. The server ends such sessions itself.
"""

from __future__ import annotations

import asyncpg

__all__ = ["open_pool", "session_settings", "writer_settings"]


def session_settings(lease_seconds: float) -> dict[str, str]:
    """Settings for every pooled connection of a server with this lease."""
    lease_ms = max(1000, int(lease_seconds * 1000))
    return {
        # A transaction left idle (its client frozen) ends after half a lease,
        # releasing its locks well before another replica would claim the run.
        "idle_in_transaction_session_timeout": str(max(500, lease_ms // 2)),
        # No lock wait outlasts a lease: the waiter retries instead of hanging.
        "lock_timeout": str(lease_ms),
        # Plan each execution of a prepared statement with its parameters and
        # the tables as they are now. Postgres otherwise switches a statement
        # to a generic plan after five executions and keeps it until the next
        # ANALYZE: the event commit, prepared while `runs` was nearly empty,
        # kept scanning the whole table for `run_id = ANY($1)`, its cost per
        # run growing with every run stored (0.64 -> 1.27 ms of Postgres CPU
        # per run over 4 000 runs of `make bench-workers`; flat at 0.54 so).
        "plan_cache_mode": "force_custom_plan",
        # Find clients that vanished behind a partition (no FIN ever came).
        "tcp_keepalives_idle": "10",
        "tcp_keepalives_interval": "5",
        "tcp_keepalives_count": "3",
    }


def writer_settings(lease_seconds: float) -> dict[str, str]:
    """Settings for the event writer's own connection: `session_settings`, with
    Postgres's plan cache on and sequential scans off.

    The writer runs one statement, commit after commit, and its plan is the
    same every time: index lookups of the batch's runs. Planning it afresh on
    every execution (force_custom_plan) cost about 0.6 ms per commit, nearly
    doubling emit -> watcher p50 at 1 000 events/s (0.8 -> 1.5 ms, measured
    commit by commit over this change). A cached generic plan made while
    `runs` was empty chooses a sequential scan of `runs` (see session_settings)
    and keeps it; with sequential scans off it looks the runs up by their
    primary key whatever the table's size when the plan was made.
    """
    return session_settings(lease_seconds) | {"plan_cache_mode": "auto", "enable_seqscan": "off"}


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Nothing to undo when a connection goes back to the pool (see `open_pool`)."""


async def open_pool(
    url: str, *, lease_seconds: float, min_size: int, max_size: int
) -> asyncpg.Pool:
    """The server's connection pool: `session_settings` on every connection, and
    no reset round trip when a connection is returned.

    asyncpg's default reset sends `SELECT pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL` on every release: one more round trip (and
    transaction) per pooled query, about half of the statements a run costs.
    Pooled connections never hold session state for it to undo: no session
    advisory lock (migrations take theirs on a connection of their own), no
    cursor outliving its transaction, no LISTEN (the hub has its own
    connection), no session SET (only SET LOCAL). What must not leak still
    doesn't: asyncpg rolls back a transaction left open before it calls the
    reset hook, and drops the connection's listeners.
    """
    return await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        server_settings=session_settings(lease_seconds),
        reset=_keep_session,
    )
