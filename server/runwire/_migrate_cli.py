"""`runwire migrate`: apply the schema migrations to a database and exit.

For deployments that migrate in a job of their own (a Helm hook, a CI step)
and run `serve --no-migrate`. It takes the same advisory lock as `serve`, so
it is safe beside servers that migrate at start, and a second run is a no-op.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

__all__ = ["add_migrate_arguments", "run_migrate"]

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


def add_migrate_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the `migrate` flags."""
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="Postgres URL to migrate (DATABASE_URL); required",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="give up connecting after this long, exit 3 (default %(default)s)",
    )


class _Refused(Exception):
    """The database answered the connection with an error (a wrong password, no such database)."""


async def _apply(url: str, connect_timeout: float) -> list[str]:
    import asyncpg

    from runwire.store import migrate

    try:
        conn = await asyncpg.connect(url, timeout=connect_timeout)
    except asyncpg.PostgresError as exc:
        raise _Refused(f"{type(exc).__name__}: {exc}") from exc
    try:
        return await migrate(conn)
    finally:
        await conn.close()


def run_migrate(args: argparse.Namespace) -> int:
    """Apply what the database lacks; print one line per migration, or that none was due.

    Exits 0 when the schema is current, 2 without a database URL, 3 when the
    database cannot be reached, 1 when it refuses the connection or a
    migration fails (its transaction is rolled back, so the database keeps the
    migrations before it).
    """
    import asyncpg

    url = args.database_url
    if not url:
        print("runwire: migrate needs --database-url or DATABASE_URL", file=sys.stderr)
        return EXIT_USAGE
    try:
        applied = asyncio.run(_apply(url, args.connect_timeout))
    except (OSError, TimeoutError, asyncpg.CannotConnectNowError) as exc:
        print(f"runwire: cannot reach the database: {exc!r}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except _Refused as exc:
        print(f"runwire: the database refused the connection: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except asyncpg.PostgresError as exc:
        print(f"runwire: migration failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for name in applied:
        print(f"applied {name}")
    print(f"schema up to date ({len(applied)} migration(s) applied)")
    return 0
