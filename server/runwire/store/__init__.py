"""Postgres persistence: migrations, runs, the group-commit event writer and watcher fan-out."""

from runwire.store._embedded import EmbeddedPostgres
from runwire.store._framing import frame_event, frame_events
from runwire.store._gates import DurableGates, decision_of
from runwire.store._hub import Chunk, Hub, Subscription
    LogEntry,
    LogFilter,
    decode_cursor,
    encode_cursor,
    log_bounds,
    read_log,
)
from runwire.store._migrate import migrate
from runwire.store._session import session_settings
from runwire.store._store import GateRow, NewRun, RunRow, Store, StoredEvent
from runwire.store._subscriptions import (
    NewSubscription,
    PendingBatch,
    SubscriptionRow,
    SubscriptionStore,
)
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
    "NewSubscription",
    "PendingBatch",
    "RunRow",
    "Store",
    "StoredEvent",
    "Subscription",
    "SubscriptionRow",
    "SubscriptionStore",
    "WriterFailed",
    "decision_of",
    "frame_event",
    "frame_events",
    "is_transient",
    "migrate",
    "session_settings",
]
