"""Decode request bytes ourselves, so a request protobuf cannot parse is INVALID_ARGUMENT with its field.

gRPC's own deserializer turns any parse failure (a string that is not UTF-8,
a message nested deeper than the parser allows) into INTERNAL or UNKNOWN with
no detail. Here the bytes are parsed, and when that fails the wire format is
walked to name the field: `flow.nodes[2].action.params.a.b` in the same
paths the other checks use (Struct keys as `.key`, list items as `[i]`).
"""

from __future__ import annotations

from typing import TypeVar, cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from runwire.errors import FieldViolation, InvalidArgument

__all__ = ["MAX_DEPTH", "decode_request"]

# protobuf's parser refuses messages nested deeper than this (its default).
MAX_DEPTH = 100

M = TypeVar("M", bound=Message)

_STRUCT = "google.protobuf.Struct"
_VALUE = "google.protobuf.Value"
_LIST = "google.protobuf.ListValue"


def decode_request(cls: type[M], data: bytes) -> M:
    """Parse `data` as `cls`; raise InvalidArgument naming the field that does not parse."""
    message = cls()
    try:
        message.ParseFromString(data)
    except (DecodeError, RecursionError, ValueError) as exc:
        descriptor = cast(Descriptor, message.DESCRIPTOR)  # upb and pure descriptors alike
        found = _locate(descriptor, data, "", 1)
        if found is None:
            found = FieldViolation("", f"not a valid {cls.DESCRIPTOR.name}: {exc}")
        raise InvalidArgument([found]) from None
    return message


class _Malformed(Exception):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise _Malformed
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _locate(desc: Descriptor, data: bytes, path: str, depth: int) -> FieldViolation | None:
    """The first field in `data` (a `desc` message at `path`) that cannot be parsed."""
    seen: dict[int, int] = {}
    pos = 0
    try:
        while pos < len(data):
            tag, pos = _varint(data, pos)
            number, wire = tag >> 3, tag & 7
            field = desc.fields_by_number.get(number)
            if wire == 0:
                _, pos = _varint(data, pos)
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            elif wire == 2:
                size, pos = _varint(data, pos)
                chunk = data[pos : pos + size]
                if len(chunk) != size:
                    raise _Malformed
                pos += size
                if field is not None:
                    index = seen.get(number, 0)
                    seen[number] = index + 1
                    found = _check_chunk(desc, field, chunk, path, index, depth)
                    if found is not None:
                        return found
            else:
                raise _Malformed
    except _Malformed:
        return FieldViolation(path, "is not valid protobuf wire format")
    return None


def _field_path(desc: Descriptor, field: FieldDescriptor, path: str, index: int) -> str:
    if desc.full_name == _VALUE:
        return path  # a Value is its kind: no name of its own in the path
    if desc.full_name == _LIST:
        return f"{path}[{index}]"
    name = _join(path, field.name)
    if field.is_repeated and not _is_map(field):
        return f"{name}[{index}]"
    return name


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _check_chunk(
    desc: Descriptor,
    field: FieldDescriptor,
    chunk: bytes,
    path: str,
    index: int,
    depth: int,
) -> FieldViolation | None:
    where = _field_path(desc, field, path, index)
    if field.type == FieldDescriptor.TYPE_STRING:
        try:
            chunk.decode("utf-8")
        except UnicodeDecodeError as exc:
            return FieldViolation(where, f"must be valid UTF-8 (bad byte at {exc.start})")
        return None
    sub = field.message_type
    if field.type != FieldDescriptor.TYPE_MESSAGE or sub is None:
        return None
    if depth >= MAX_DEPTH:
        return FieldViolation(where, f"is nested more than {MAX_DEPTH} messages deep")
    if _is_map(field):
        return _check_map_entry(desc, sub, chunk, path, where, depth)
    return _locate(sub, chunk, where, depth + 1)


def _check_map_entry(
    desc: Descriptor,
    entry: Descriptor,
    chunk: bytes,
    path: str,
    where: str,
    depth: int,
) -> FieldViolation | None:
    """A map entry: its key names the value's path (`.key` in a Struct, `[key]` elsewhere)."""
    parts: dict[int, bytes] = {}
    pos = 0
    try:
        while pos < len(chunk):
            tag, pos = _varint(chunk, pos)
            if tag & 7 != 2:
                return _locate(entry, chunk, where, depth + 1)
            size, pos = _varint(chunk, pos)
            parts[tag >> 3] = chunk[pos : pos + size]
            pos += size
    except _Malformed:
        return FieldViolation(where, "is not valid protobuf wire format")
    try:
        key = parts.get(1, b"").decode("utf-8")
    except UnicodeDecodeError as exc:
        return FieldViolation(where, f"has a key that is not valid UTF-8 (bad byte at {exc.start})")
    base = _join(path, key) if desc.full_name == _STRUCT else f"{where}[{key!r}]"
    value = entry.fields_by_number[2]
    if 2 not in parts:
        return None
    if value.type == FieldDescriptor.TYPE_STRING:
        try:
            parts[2].decode("utf-8")
        except UnicodeDecodeError as exc:
            return FieldViolation(base, f"must be valid UTF-8 (bad byte at {exc.start})")
        return None
    if value.type == FieldDescriptor.TYPE_MESSAGE and value.message_type is not None:
        return _locate(value.message_type, parts[2], base, depth + 2)
    return None
