"""Which errors mean "the database cannot be reached now", as opposed to a bad query."""

from __future__ import annotations

import asyncpg

__all__ = ["database_unreachable"]

_UNREACHABLE = (
    OSError,  # refused, reset, unreachable host
    asyncpg.PostgresConnectionError,  # class 08: the connection failed or does not exist
    asyncpg.CannotConnectNowError,  # 57P03: starting up or shutting down
    asyncpg.AdminShutdownError,  # 57P01: terminated by an administrator or a fast stop
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,  # the connection was closed under the client
    asyncpg.InternalClientError,  # the protocol was cut mid-operation
)


def database_unreachable(exc: BaseException) -> str | None:
    """A short description when `exc` (or its cause) says the database is out of reach."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, _UNREACHABLE):
            return f"{type(seen).__name__}: {seen}"[:200]
        seen = seen.__cause__ or seen.__context__
    return None
