"""The one place that builds RunEvents, so one place knows the oneof."""

from __future__ import annotations

import time
from dataclasses import dataclass

from google.protobuf.message import Message

from runwire.engine._limits import bound_event
from runwire.v1 import events_pb2

__all__ = ["VARIANTS", "NodeRef", "SpanIds", "new_event"]

VARIANTS: frozenset[str] = frozenset(
    f.name for f in events_pb2.RunEvent.DESCRIPTOR.oneofs_by_name["event"].fields
)
_PAYLOAD_TYPE = {
    f.name: f.message_type.name if f.message_type is not None else ""
    for f in events_pb2.RunEvent.DESCRIPTOR.oneofs_by_name["event"].fields
}


@dataclass(frozen=True)
class NodeRef:
    """Which node visit and attempt an event is about."""

    node_id: str
    iteration: int
    attempt: int
    item_index: int | None = None  # the item of a fan-out node (`RunEvent.item_index`)
    item_key: str = ""


@dataclass(frozen=True)
class SpanIds:
    """W3C ids of the span an event happened in, as lowercase hex."""

    trace_id: str
    span_id: str


def new_event(
    run_id: str, seq: int, variant: str, payload: Message, *, span: SpanIds, node: NodeRef | None
) -> events_pb2.RunEvent:
    """A RunEvent with the envelope filled and `payload` as its `variant` case,
    bounded to MAX_EVENT_BYTES (see engine._limits: oversized strings are cut
    with a marker, never emitted whole)."""
    name = payload.DESCRIPTOR.name if payload.DESCRIPTOR is not None else "?"
    if _PAYLOAD_TYPE.get(variant) != name:
        raise ValueError(f"{name} is not the payload of variant {variant!r}")
    now = time.time_ns()
    # One constructor call builds the whole event (every event passes here:
    # setting fields one by one afterwards cost about 1 µs more per event).
    fields: dict[str, object] = {
        "run_id": run_id,
        "seq": seq,
        "event_time": {"seconds": now // 1_000_000_000, "nanos": now % 1_000_000_000},
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        variant: payload,
    }
    if node is not None:
        fields["node_id"], fields["iteration"], fields["attempt"] = (
            node.node_id,
            node.iteration,
            node.attempt,
        )
        if node.item_index is not None:
            fields["item_index"], fields["item_key"] = node.item_index, node.item_key
    event = events_pb2.RunEvent(**fields)  # type: ignore[arg-type]
    return bound_event(event)
