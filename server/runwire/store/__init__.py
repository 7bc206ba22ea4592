"""Postgres persistence: migrations, runs, the group-commit event writer and watcher fan-out."""

from runwire.store._embedded import EmbeddedPostgres
from runwire.store._framing import frame_event, frame_events
from runwire.store._gates import DurableGates, decision_of
from runwire.store._hub import Chunk, Hub, Subscription
from runwire.store._migrate import SchemaBehind, migrate, pending_migrations
from runwire.store._partitions import new_run_id
from runwire.store._session import session_settings
from runwire.store._store import GateRow, NewRun, RunRow, Store, StoredEvent
from runwire.store._transient import is_transient
from runwire.store._writer import EventWriter, WriterFailed

__all__ = [
    "Chunk",
    "DurableGates",
    "EmbeddedPostgres",
    "EventWriter",
    "GateRow",
    "Hub",
    "NewRun",
    "RunRow",
    "SchemaBehind",
    "Store",
    "StoredEvent",
    "Subscription",
    "WriterFailed",
    "decision_of",
    "frame_event",
    "frame_events",
    "is_transient",
    "migrate",
    "new_run_id",
    "pending_migrations",
    "session_settings",
]
