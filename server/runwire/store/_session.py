"""Postgres session settings that bound what a frozen or cut-off server can hold.

A replica stopped (SIGSTOP, a VM pause, swapped out) inside a transaction
keeps its row locks for as long as it is stopped, and another replica's
`FOR UPDATE SKIP LOCKED` claim skips that run until it wakes: failover would
depend on the old owner's cooperation. The server ends such sessions itself.
"""

from __future__ import annotations

__all__ = ["session_settings"]


def session_settings(lease_seconds: float) -> dict[str, str]:
    """Settings for every pooled connection of a server with this lease."""
    lease_ms = max(1000, int(lease_seconds * 1000))
    return {
        # A transaction left idle (its client frozen) ends after half a lease,
        # releasing its locks well before another replica would claim the run.
        "idle_in_transaction_session_timeout": str(max(500, lease_ms // 2)),
        # No lock wait outlasts a lease: the waiter retries instead of hanging.
        "lock_timeout": str(lease_ms),
        # Find clients that vanished behind a partition (no FIN ever came).
        "tcp_keepalives_idle": "10",
        "tcp_keepalives_interval": "5",
        "tcp_keepalives_count": "3",
    }
