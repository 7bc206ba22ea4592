"""Postgres persistence: migrations, runs, the group-commit event writer and watcher fan-out."""

from runwire.store._embedded import EmbeddedPostgres
from runwire.store._framing import frame_event, frame_events
from runwire.store._hub import Chunk, Hub, Subscription
from runwire.store._migrate import migrate
from runwire.store._store import NewRun, RunRow, Store, StoredEvent
from runwire.store._writer import EventWriter

__all__ = [
    "Chunk",
    "EmbeddedPostgres",
    "EventWriter",
    "Hub",
    "NewRun",
    "RunRow",
    "Store",
    "StoredEvent",
    "Subscription",
    "frame_event",
    "frame_events",
    "migrate",
]
