"""Versioned SQL migrations, applied once under an advisory lock."""

from __future__ import annotations

import logging
from importlib import resources

import asyncpg

__all__ = ["SchemaBehind", "migrate", "pending_migrations"]

log = logging.getLogger(__name__)

# Replicas starting together serialise on this lock, so each migration runs once.
_LOCK_KEY = 0x72756E77  # "runw"


class SchemaBehind(RuntimeError):
    """The database lacks migrations this server needs, and it was told not to apply them."""

    def __init__(self, missing: list[str]) -> None:
        self.missing = missing
        super().__init__(
            f"the database schema is behind this server: {len(missing)} migration(s) not "
            f"applied ({', '.join(missing)}); run `runwire migrate` against this database "
            "first, or serve without --no-migrate"
        )


def _migrations() -> list[tuple[int, str, str]]:
    found = []
    for entry in resources.files("runwire.store").joinpath("migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


async def migrate(conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy) -> list[str]:
    """Apply every migration the database lacks; returns the names applied."""
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_time timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in _migrations():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
            log.info("applied migration %s", name)
            applied.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied


async def pending_migrations(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
) -> list[str]:
    """The names of the migrations this server knows that the database lacks; reads only."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    done: set[int] = set()
    if exists:
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    return [name for version, name, _ in _migrations() if version not in done]
