"""Postgres persistence: migrations, runs, the group-commit event writer, watcher fan-out and
the event log across runs and its shared tail."""

from runwire.store._embedded import EmbeddedPostgres
from runwire.store._framing import frame_cursor, frame_event, frame_events, frame_resume_after
from runwire.store._gates import DurableGates, decision_of
from runwire.store._hub import Chunk, Hub, Subscription
from runwire.store._log import (
    EVENT_KINDS,
    LogEntry,
    LogFilter,
    decode_cursor,
    encode_cursor,
    log_bounds,
    mark_pruned,
    read_log,
)
from runwire.store._log_tail import LogTail
from runwire.store._migrate import SchemaBehind, migrate, pending_migrations
from runwire.store._partitions import new_run_id
from runwire.store._session import open_pool, session_settings, writer_settings
from runwire.store._store import GateRow, NewRun, RunHead, RunRow, Store, StoredEvent
from runwire.store._subscriptions import (
    NewSubscription,
    PendingBatch,
    SubscriptionRow,
    SubscriptionStore,
)
from runwire.store._transient import is_transient
from runwire.store._writer import EventWriter, WriterFailed

__all__ = [
    "EVENT_KINDS",
    "Chunk",
    "DurableGates",
    "EmbeddedPostgres",
    "EventWriter",
    "GateRow",
    "Hub",
    "LogEntry",
    "LogFilter",
    "LogTail",
    "NewRun",
    "NewSubscription",
    "PendingBatch",
    "RunHead",
    "RunRow",
    "SchemaBehind",
    "Store",
    "StoredEvent",
    "Subscription",
    "SubscriptionRow",
    "SubscriptionStore",
    "WriterFailed",
    "decision_of",
    "decode_cursor",
    "encode_cursor",
    "frame_cursor",
    "frame_event",
    "frame_events",
    "frame_resume_after",
    "is_transient",
    "log_bounds",
    "mark_pruned",
    "migrate",
    "new_run_id",
    "open_pool",
    "pending_migrations",
    "read_log",
    "session_settings",
    "writer_settings",
]
