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

from functools import cache
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


# Per field number of a class: (oneof group or None, message class or None,
# whether the message field is singular).
_Plan = dict[int, tuple[str | None, type[betterproto2.Message] | None, bool]]


@cache
def _plan(cls: type[betterproto2.Message]) -> _Plan:
    meta: Any = getattr(cls, "_betterproto")  # noqa: B009 (typed loosely upstream)
    plan: _Plan = {}
    for number, name in meta.field_name_by_number.items():
        field_meta = meta.meta_by_field_name[name]
        sub = None
        if field_meta.proto_type == betterproto2.TYPE_MESSAGE:
            sub = field_meta.unwrap() if field_meta.unwrap else meta.cls_by_field[name]
        plan[number] = (field_meta.group, sub, not field_meta.repeated)
    return plan


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i += 1
        if byte < 0x80:
            return value, i
        shift += 7


def _already_canonical(cls: type[betterproto2.Message], data: bytes) -> bool:
    """Whether no singular message field and no oneof repeats, at any depth.

    The common case, checked without building anything: `canonical` then
    returns the bytes as they are.
    """
    plan = _plan(cls)
    seen: set[int] = set()
    members: dict[str, int] = {}
    i, end = 0, len(data)
    while i < end:
        key, i = _read_varint(data, i)
        number, wire = key >> 3, key & 7
        start = i
        if wire == 0:
            while data[i] >= 0x80:
                i += 1
            i += 1
        elif wire == _LEN:
            size, start = _read_varint(data, i)
            i = start + size
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            return False  # let the full path (and then the parser) deal with it
        entry = plan.get(number)
        if entry is None:
            continue
        group, sub, single = entry
        if group is not None and members.setdefault(group, number) != number:
            return False
        if sub is not None and wire == _LEN:
            if single:
                if number in seen:
                    return False
                seen.add(number)
            if not _already_canonical(sub, data[start:i]):
                return False
    return True


def canonical(cls: type[betterproto2.Message], data: bytes) -> bytes:
    """`data` re-encoded so that no singular message field or oneof repeats.

    Unknown fields, scalars and repeated fields are kept as they were, in
    order; a merged message field sits where its last occurrence was. Only
    the generated classes' own fields are rewritten. Bytes that need no
    rewriting (what every encoder writes) come back as they are.
    """
    try:
        if _already_canonical(cls, data):
            return data
    except IndexError:
        return data  # truncated: the parser reports it as it always has
    return _rewrite(cls, data)


def _rewrite(cls: type[betterproto2.Message], data: bytes) -> bytes:
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
        payload = _rewrite(sub, b"".join(raw))
        out += _varint(number << 3 | _LEN) + _varint(len(payload)) + payload
    return bytes(out)
