"""Protobuf's merge rules on the wire, ahead of betterproto2's parser.

The protobuf spec says that when a field appears more than once in a
message's encoding, the last scalar wins, a singular message field merges
every occurrence, and setting one member of a oneof clears the others (so
the last member on the wire wins). betterproto2 (0.10) replaces a message
field instead of merging it, and keeps every oneof member it meets, after
which asking for the case raises `RuntimeError`. Every other runwire client
follows the spec; `canonical` rewrites an encoding into the equivalent one
in which each singular message field and each oneof appears at most once,
which betterproto2 then parses correctly.
"""

from __future__ import annotations

from typing import Any, Final

import betterproto2

__all__ = ["canonical"]

_LEN: Final = 2  # wire type of length-delimited fields


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def canonical(cls: type[betterproto2.Message], data: bytes) -> bytes:
    """`data` re-encoded so that no singular message field or oneof repeats.

    Unknown fields, scalars and repeated fields are kept as they were, in
    order; a merged message field sits where its last occurrence was. Only
    the generated classes' own fields are rewritten.
    """
    # betterproto2's per-class metadata; its classproperty is typed loosely.
    meta: Any = getattr(cls, "_betterproto")  # noqa: B009
    # Each entry: (number, raw bytes) or (number, [payloads to merge]).
    entries: list[tuple[int, bytes | list[bytes]]] = []
    merged: dict[int, list[bytes]] = {}
    oneof_member: dict[str, int] = {}  # group -> the member number last seen
    for field in betterproto2.parse_fields(data):
        name = meta.field_name_by_number.get(field.number)
        if name is None:
            entries.append((field.number, field.raw))
            continue
        field_meta = meta.meta_by_field_name[name]
        # A proto3 `optional` may carry a synthetic one-member group: it
        # never clears anything.
        group = field_meta.group
        if group is not None:
            previous = oneof_member.get(group)
            if previous is not None and previous != field.number:
                # Another member is set: it is cleared, with everything merged into it.
                entries = [e for e in entries if e[0] != previous]
                merged.pop(previous, None)
            oneof_member[group] = field.number
        single_message = (
            field_meta.proto_type == betterproto2.TYPE_MESSAGE
            and not field_meta.repeated
            and field.wire_type == _LEN
        )
        if not single_message:
            if field_meta.proto_type == betterproto2.TYPE_MESSAGE and field.wire_type == _LEN:
                # A repeated message: each element is a message of its own.
                entries.append((field.number, [field.value]))
            else:
                entries.append((field.number, field.raw))
            continue
        parts = merged.get(field.number)
        if parts is None:
            parts = merged[field.number] = []
        else:
            entries = [e for e in entries if e[0] != field.number]
        parts.append(field.value)
        entries.append((field.number, parts))
    out = bytearray()
    for number, raw in entries:
        if isinstance(raw, bytes):
            out += raw
            continue
        field_meta = meta.meta_by_field_name[meta.field_name_by_number[number]]
        # A well-known type (Timestamp, Duration) is unwrapped into a Python value.
        sub = (
            field_meta.unwrap()
            if field_meta.unwrap
            else meta.cls_by_field[meta.field_name_by_number[number]]
        )
        payload = canonical(sub, b"".join(raw))
        out += _varint(number << 3 | _LEN) + _varint(len(payload)) + payload
    return bytes(out)
