"""Size bounds on events (promise 9): no RunEvent, and so no WatchRunResponse,
grows past what a client with gRPC's default 4 MiB receive limit accepts.

- MAX_EVENT_BYTES bounds one encoded RunEvent, envelope included.
- MAX_JSON_BYTES bounds one free-form JSON value as canonical JSON text
  (escaping included): run inputs and node params are refused above it at
  StartRun, a rendered template above it fails the node with TEMPLATE.
- Anything else that would still make an event too big (the sum of several
  values, an adapter's output, an error message) is cut by `bound_event`,
  the last step of building every event: the largest string fields are
  shortened first; a `*_json` field becomes a marker object
  `{"runwire_truncated": {"bytes": <original size>, "limit": <limit>}}`, a
  text field keeps its head and ends in a `[truncated: N bytes]` marker, and
  a NodeLog line is flagged `truncated`. An event that still does not fit is
  never emitted (ValueError).
"""

from __future__ import annotations

from typing import Any

import rfc8785
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from runwire.v1 import events_pb2

__all__ = [
    "MAX_EVENT_BYTES",
    "MAX_JSON_BYTES",
    "TRUNCATED_KEY",
    "bound_event",
    "json_size",
]

MAX_EVENT_BYTES = 512 * 1024
MAX_JSON_BYTES = 256 * 1024
TRUNCATED_KEY = "runwire_truncated"
# Room left for the envelope and the markers when a field is cut.
_SLACK = 1024


def json_size(value: Any) -> int:
    """Bytes of `value` as canonical JSON text (what an event carries)."""
    try:
        return len(rfc8785.dumps(value))
    except Exception:
        return len(str(value).encode())


def _strings(message: Message) -> list[tuple[Message, FieldDescriptor]]:
    """Every set, singular string field of `message` and of its sub-messages."""
    out: list[tuple[Message, FieldDescriptor]] = []
    for field, value in message.ListFields():
        if field.is_repeated:
            continue
        if field.type == FieldDescriptor.TYPE_STRING:
            out.append((message, field))
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            out.extend(_strings(value))
    return out


def _cut_text(text: str, keep: int) -> str:
    raw = text.encode()
    head = raw[: max(keep, 0)].decode("utf-8", errors="ignore")
    return f"{head}[truncated: {len(raw)} bytes]"


def bound_event(event: events_pb2.RunEvent) -> events_pb2.RunEvent:
    """`event` itself when it fits MAX_EVENT_BYTES, else with its largest strings cut."""
    size = event.ByteSize()
    if size <= MAX_EVENT_BYTES:
        return event
    variant = event.WhichOneof("event")
    payload: Message = getattr(event, variant) if variant else event
    fields = sorted(_strings(payload), key=lambda mf: len(getattr(mf[0], mf[1].name)), reverse=True)
    for message, field in fields:
        excess = event.ByteSize() - MAX_EVENT_BYTES
        if excess <= 0:
            break
        value: str = getattr(message, field.name)
        original = len(value.encode())
        if field.name.endswith("_json"):
            marker = {TRUNCATED_KEY: {"bytes": original, "limit": MAX_JSON_BYTES}}
            setattr(message, field.name, rfc8785.dumps(marker).decode())
        else:
            setattr(message, field.name, _cut_text(value, original - excess - _SLACK))
        if isinstance(message, events_pb2.NodeLog):
            message.truncated = True
    if event.ByteSize() > MAX_EVENT_BYTES:
        raise ValueError(
            f"a {variant} event of {size} bytes cannot be bounded to {MAX_EVENT_BYTES} bytes"
        )
    return event
