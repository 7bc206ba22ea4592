"""The server's connection pool (store.open_pool) against a real Postgres: a
connection goes back without a reset round trip, and nothing of a borrower's
transaction reaches the next one."""

from __future__ import annotations

import re

import asyncpg

from runwire.store import open_pool, session_settings, writer_settings
from runwire.store._writer import _COMMIT


async def _last_query(admin: asyncpg.Connection, pid: int) -> str:
    await admin.execute("SELECT pg_stat_clear_snapshot()")
    return str(await admin.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", pid))


async def test_pool_returns_connections_without_a_reset_round_trip(database_url: str) -> None:
    """asyncpg's default reset sends a query on every release (pg_advisory_unlock_all,
    CLOSE ALL, UNLISTEN *, RESET ALL): the backend's last statement would be it."""
    admin = await asyncpg.connect(database_url)
    pool = await open_pool(database_url, lease_seconds=15.0, min_size=1, max_size=1)
    try:
        for _ in range(3):
            async with pool.acquire() as conn:
                pid = conn.get_server_pid()
                assert await conn.fetchval("SELECT 'pool test ' || $1::text", "x") == "pool test x"
            assert await _last_query(admin, pid) == "SELECT 'pool test ' || $1::text"
    finally:
        await pool.close()
        await admin.close()


async def test_pool_rolls_back_a_transaction_left_open(database_url: str) -> None:
    admin = await asyncpg.connect(database_url)
    pool = await open_pool(database_url, lease_seconds=15.0, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            pid = conn.get_server_pid()
            await conn.execute("CREATE TABLE pool_probe (x int)")
            tx = conn.transaction()
            await tx.start()
            await conn.execute("INSERT INTO pool_probe VALUES (1)")
            # Released without commit or rollback (a borrower that lost track).
        async with pool.acquire() as conn:
            assert conn.get_server_pid() == pid, "the same connection came back"
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT count(*) FROM pool_probe") == 0
        # The session settings that bound a frozen server hold on pooled connections.
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW idle_in_transaction_session_timeout") == "7500ms"
    finally:
        await pool.close()
        await admin.close()


async def test_pool_plans_prepared_statements_for_the_tables_as_they_are(
    database_url: str,
) -> None:
    """A statement prepared while `runs` was empty and executed often (the event
    commit) must not keep a generic plan that scans the whole table once it
    has grown: that made the commit's cost grow with every run stored."""
    pool = await open_pool(database_url, lease_seconds=15.0, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            await conn.execute(
                "PREPARE probe(text[]) AS SELECT last_seq FROM runs WHERE run_id = ANY($1)"
            )
            for _ in range(8):  # past the five custom plans before a generic one
                await conn.execute("EXECUTE probe('{r1,r2}')")
            await conn.execute(
                """INSERT INTO runs (run_id, flow_name, flow_digest, flow, inputs, status,
                                     node_count)
                   SELECT 'r' || g, 'f', 'd', '{}', '{}', 1, 1
                   FROM generate_series(1, 20000) AS g"""
            )
            plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN EXECUTE probe('{r1,r2}')"))
            await conn.execute("DEALLOCATE probe")
        assert "Seq Scan" not in plan, plan
        assert "runs_pkey" in plan, plan
    finally:
        await pool.close()


async def test_the_writers_cached_commit_plan_looks_runs_up_by_key(database_url: str) -> None:
    """The event writer keeps Postgres's plan cache (planning its commit afresh
    each time cost ~0.6 ms per commit); the generic plan it caches, made here
    on an empty `runs`, must still find the batch's runs by primary key. The
    control: with only the pool's settings, that plan scans the table."""

    async def generic_plan(settings: dict[str, str]) -> str:
        conn = await asyncpg.connect(database_url, server_settings=settings)
        try:
            await conn.execute("PREPARE commit_probe AS " + _COMMIT)
            await conn.execute("SET plan_cache_mode = force_generic_plan")
            args = ", ".join(["NULL"] * _params())
            rows = await conn.fetch(f"EXPLAIN EXECUTE commit_probe({args})")
            return "\n".join(r[0] for r in rows)
        finally:
            await conn.close()

    plan = await generic_plan(writer_settings(15.0))
    assert "Seq Scan on runs" not in plan, plan
    assert "runs_pkey" in plan, plan
    assert "Seq Scan on runs" in await generic_plan(
        session_settings(15.0) | {"plan_cache_mode": "auto"}
    )


def _params() -> int:
    return max(int(n) for n in re.findall(r"\$(\d+)", _COMMIT))
