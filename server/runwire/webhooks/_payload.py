"""The body of a webhook POST: a batch of events as canonical JSON.

    {"data": {"cursor": "<WatchEvents cursor after the batch>",
              "events": [<RunEvent>, ...],
              "subscription": "subscriptions/<id>"},
     "timestamp": "<when the batch was formed, RFC 3339>",
     "type": "runwire.events"}

Each event is the proto3 JSON mapping of its RunEvent (lowerCamelCase names,
64-bit integers as strings, enums by name), the shape every client decodes;
the whole body is canonical JSON (RFC 8785, engine.canonical_json: the form
runwire gives every free-form JSON value). Events are in commit order, so in `seq` order per run;
a receiver deduplicates by (`runId`, `seq`). The envelope follows the
Standard Webhooks payload structure (`type`, `timestamp`, `data`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf import json_format

from runwire.engine import canonical_json
from runwire.store import LogEntry, PendingBatch, encode_cursor
from runwire.v1 import events_pb2

__all__ = ["EVENT_TYPE", "build_batch", "event_json"]

EVENT_TYPE = "runwire.events"


def event_json(event: bytes) -> str:
    """A stored RunEvent as canonical JSON."""
    return canonical_json(json_format.MessageToDict(events_pb2.RunEvent.FromString(event)))


@dataclass(frozen=True)
class _Cut:
    events: list[str]
    through_pos: int


def _cut(entries: Sequence[LogEntry], looked: int, max_bytes: int) -> _Cut:
    """The longest prefix of `entries` within `max_bytes` of JSON (at least one event)."""
    texts: list[str] = []
    size = 0
    for i, entry in enumerate(entries):
        text = event_json(entry.event)
        n = len(text.encode()) + 1
        if texts and size + n > max_bytes:
            return _Cut(texts, entries[i - 1].pos)
        texts.append(text)
        size += n
    return _Cut(texts, looked)


def build_batch(
    subscription_id: str, entries: Sequence[LogEntry], looked: int, max_bytes: int
) -> PendingBatch:
    """The next batch of `entries` (the log read after the subscription's position,
    looked through `looked`), within `max_bytes` unless one event alone is larger.

    Its webhook-id names the subscription and the position the batch ends at,
    so it is the same on every retry and unique per subscription.
    """
    cut = _cut(entries, looked, max_bytes)
    now = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    body = (
        '{"data":{"cursor":'
        + canonical_json(encode_cursor(cut.through_pos))
        + ',"events":['
        + ",".join(cut.events)
        + '],"subscription":'
        + canonical_json(f"subscriptions/{subscription_id}")
        + '},"timestamp":'
        + canonical_json(now)
        + ',"type":'
        + canonical_json(EVENT_TYPE)
        + "}"
    )
    return PendingBatch(
        webhook_id=f"msg_{subscription_id}_{cut.through_pos}",
        body=body.encode(),
        through_pos=cut.through_pos,
        event_count=len(cut.events),
    )
