"""Which database errors a restart, failover or network blink can raise.

Those are worth retrying on a fresh connection; anything else is a bug or a
poison value, and retrying it forever would leave a server half-alive.
"""

from __future__ import annotations

import asyncpg
import asyncpg.exceptions as pgx

__all__ = ["is_transient"]

_TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,  # includes ConnectionError, ConnectionResetError, socket errors
    TimeoutError,  # a connect or a query that got no answer in time
    EOFError,
    asyncpg.InterfaceError,  # includes ConnectionDoesNotExist on a closed connection
    pgx.InternalClientError,  # "cannot switch to state 15": the protocol lost track mid-COMMIT
    pgx.PostgresConnectionError,  # SQLSTATE class 08
    pgx.OperatorInterventionError,  # class 57: admin shutdown, crash shutdown, cannot connect now
    pgx.InsufficientResourcesError,  # class 53: too many connections, out of memory
    pgx.TransactionRollbackError,  # class 40: serialization failure, deadlock
)


def is_transient(exc: BaseException) -> bool:
    """True when a database call failed in a way a fresh connection may fix."""
    return isinstance(exc, _TRANSIENT)
