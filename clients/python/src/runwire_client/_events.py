"""Decoding and encoding RunEvents: binary, proto3 JSON and the oneof case."""

from __future__ import annotations

import json
from typing import Any, Final, cast

import betterproto2

from ._errors import UnknownEventError
from ._gen.runwire.v1 import RunEvent
from ._wire import canonical

__all__ = [
    "EVENT_CASES",
    "decode_event",
    "encode_event",
    "event_case",
    "event_from_dict",
    "event_from_json",
    "event_to_dict",
    "event_to_json",
]

_ONEOF: Final = "event"


def _meta() -> Any:
    # betterproto2's per-class metadata; its classproperty does not type-check.
    return cast(Any, RunEvent)._betterproto


def _event_cases() -> frozenset[str]:
    # Reflected from the generated class, so a variant added to events.proto
    # shows up here (and in the corpus completeness test) after `make gen`.
    fields = _meta().oneof_field_by_group[_ONEOF]
    return frozenset(field.name for field in fields)


#: The oneof field names of every variant this client knows, e.g. `node_log`.
EVENT_CASES: Final[frozenset[str]] = _event_cases()

_JSON_NAMES: Final = frozenset(
    name
    for field in _meta().meta_by_field_name
    for name in (field, betterproto2.Casing.CAMEL(field))
)


def event_case(event: RunEvent) -> str:
    """Returns the event's oneof case, for example `node_log`.

    Raises:
        UnknownEventError: The event carries no variant this client knows.
    """
    case, _ = betterproto2.which_one_of(event, _ONEOF)
    if not case:
        raise UnknownEventError(event.seq, _unknown_field_numbers(event))
    return case


def _unknown_field_numbers(event: RunEvent) -> list[int]:
    raw: bytes = event._unknown_fields
    return sorted({field.number for field in betterproto2.parse_fields(raw)})


def decode_event(data: bytes) -> RunEvent:
    """Decodes one RunEvent from the protobuf binary encoding.

    Timestamps and durations come back as `NanoDatetime` and `NanoTimedelta`,
    exact to the nanosecond. A field that appears more than once follows the
    protobuf spec: the last scalar and the last oneof member win, message
    fields merge.

    Raises:
        UnknownEventError: The event's oneof case is not in this client's
            catalog (a newer server): upgrade the client.
    """
    # Protobuf's merge rules first: betterproto2 alone lets a repeated oneof
    # raise and a repeated message field replace instead of merge (_wire).
    event = RunEvent.parse(canonical(RunEvent, data))
    event_case(event)
    return event


def encode_event(event: RunEvent) -> bytes:
    """Encodes a RunEvent to the protobuf binary encoding, deterministically."""
    return bytes(event)


def event_to_dict(event: RunEvent) -> dict[str, Any]:
    """Returns the event in the proto3 JSON mapping as a dict (lowerCamelCase keys)."""
    return event.to_dict(output_format=betterproto2.OutputFormat.PROTO_JSON)


def event_from_dict(value: dict[str, Any]) -> RunEvent:
    """Builds a RunEvent from its proto3 JSON mapping as a dict.

    Raises:
        UnknownEventError: A top-level key names no field this client knows,
            or no variant is set: upgrade the client.
        ValueError: The value is not a valid RunEvent in proto3 JSON.
    """
    if not isinstance(value, dict):
        raise ValueError(f"a RunEvent in JSON is an object, got {type(value).__name__}")
    unknown = sorted(set(value) - _JSON_NAMES)
    if unknown:
        raise UnknownEventError(_json_seq(value), detail=f"unknown field(s) {', '.join(unknown)}")
    try:
        event = RunEvent.from_dict(value)
    except (KeyError, TypeError) as error:
        raise ValueError(f"invalid RunEvent JSON: {error}") from error
    event_case(event)
    return event


def _json_seq(value: dict[str, Any]) -> int:
    try:
        return int(value.get("seq", 0))
    except (TypeError, ValueError):
        return 0


def event_to_json(event: RunEvent) -> str:
    """Returns the event as proto3 JSON on one line (UTF-8 text, not escaped)."""
    return json.dumps(event_to_dict(event), ensure_ascii=False, separators=(",", ":"))


def event_from_json(text: str | bytes) -> RunEvent:
    """Decodes a RunEvent from proto3 JSON text.

    Raises:
        UnknownEventError: The event names a variant this client does not know.
        ValueError: The text is not a valid RunEvent in proto3 JSON.
    """
    return event_from_dict(json.loads(text))
