"""A seeded generator of valid RunEvents for every variant, biased to edge values.

Values nobody picks by hand: strings with a leading U+FEFF, astral-plane and
combining characters, U+2028/U+2029, JSON escapes and control characters;
64-bit integers at their limits and around 2**53; timestamps from
0001-01-01 to 9999-12-31 with nanoseconds; negative durations with nanos;
enum numbers outside the declared values (a newer server's); empty repeated
fields and empty payloads. Every event is valid: UTF-8 strings, Timestamps
and Durations in their documented ranges.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from runwire.v1 import events_pb2

__all__ = ["EDGE_STRINGS", "VARIANTS", "random_events"]

VARIANTS = [f.name for f in events_pb2.RunEvent.DESCRIPTOR.oneofs_by_name["event"].fields]
_CATALOG = events_pb2.RunEvent.DESCRIPTOR.oneofs_by_name["event"]

EDGE_STRINGS = [
    "",
    "\ufeff",  # a byte order mark alone
    "\ufeffline from a file with a BOM",
    "\ufeff\ufeffdouble BOM",
    "𝄞 astral 😀🏳️‍🌈",  # outside the BMP, a ZWJ sequence
    "e\u0301 combining a\u0308 \u0345",
    "line\u2028separator\u2029paragraph",
    'quote " backslash \\ slash / <tag> & amp',
    "\x00nul \x01\x07\x08\t\n\x0b\x0c\r\x1b\x1f\x7f controls",
    "\u00a0non-breaking \u200b zero width \ufffd replacement",
    "日本語のテキスト «guillemets» \u2018quotes\u2019",
    "\U0010ffff last code point",
]

_INT32 = (0, 1, -1, 2**31 - 1, -(2**31), 127, 128, -129, 2**24)
_INT64 = (0, 1, -1, 2**63 - 1, -(2**63), 2**53, 2**53 + 1, -(2**53) - 1, 2**32, 2**31)
_TS_MIN, _TS_MAX = -62_135_596_800, 253_402_300_799  # 0001-01-01 .. 9999-12-31T23:59:59
_DUR_MAX = 315_576_000_000


def _string(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(EDGE_STRINGS)
    pieces = [rng.choice(EDGE_STRINGS) for _ in range(rng.randint(1, 3))]
    pieces.append("".join(chr(rng.choice((rng.randint(0x20, 0x7E), rng.randint(0xA0, 0xD7FF),
                                          rng.randint(0xE000, 0x10FFFF))))
                          for _ in range(rng.randint(0, 8))))  # fmt: skip
    text = "".join(pieces)
    return text.replace("\ud800", "")  # never a surrogate (the ranges skip them)


def _int(rng: random.Random, edges: tuple[int, ...], bits: int) -> int:
    if rng.random() < 0.6:
        return rng.choice(edges)
    return rng.randint(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


def _enum(rng: random.Random, field: FieldDescriptor) -> int:
    declared = [v.number for v in field.enum_type.values]
    if rng.random() < 0.25:
        return rng.choice((max(declared) + 1, 57, 1000, 2**31 - 1))  # a newer server's value
    return rng.choice(declared)


def _timestamp(rng: random.Random, message: Message) -> None:
    seconds = rng.choice((_TS_MIN, _TS_MAX, 0, -1, rng.randint(_TS_MIN, _TS_MAX)))
    nanos = rng.choice((0, 999_999_999, 1, 500_000_000, 120_000, rng.randint(0, 999_999_999)))
    message.seconds, message.nanos = seconds, nanos  # type: ignore[attr-defined]


def _duration(rng: random.Random, message: Message) -> None:
    seconds = rng.choice((0, 1, -1, _DUR_MAX, -_DUR_MAX, rng.randint(-_DUR_MAX, _DUR_MAX)))
    nanos = rng.choice((0, 1, 999_999_999, 500_000_000, 1_000, rng.randint(0, 999_999_999)))
    if seconds == _DUR_MAX or seconds == -_DUR_MAX:
        nanos = 0
    # Seconds and nanos carry the same sign; a negative duration under 1 s
    # has seconds 0 and negative nanos.
    if seconds < 0 or (seconds == 0 and rng.random() < 0.5):
        nanos = -nanos
    message.seconds, message.nanos = seconds, nanos  # type: ignore[attr-defined]


def _fill(rng: random.Random, message: Message, depth: int = 0) -> None:
    name = message.DESCRIPTOR.full_name
    if name == "google.protobuf.Timestamp":
        _timestamp(rng, message)
        return
    if name == "google.protobuf.Duration":
        _duration(rng, message)
        return
    for field in message.DESCRIPTOR.fields:
        if rng.random() < 0.3:
            continue  # left at its default
        count = rng.choice((0, 1, 2, 3)) if field.is_repeated else None
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth > 3:
                continue
            if count is None:
                sub = getattr(message, field.name)
                sub.SetInParent()
                _fill(rng, sub, depth + 1)
            else:
                for _ in range(count):
                    _fill(rng, getattr(message, field.name).add(), depth + 1)
            continue
        values = [_scalar(rng, field) for _ in range(1 if count is None else count)]
        if count is None:
            setattr(message, field.name, values[0])
        else:
            getattr(message, field.name).extend(values)


def _scalar(rng: random.Random, field: FieldDescriptor) -> object:
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return _string(rng)
    if t == FieldDescriptor.TYPE_BOOL:
        return rng.random() < 0.5
    if t == FieldDescriptor.TYPE_ENUM:
        return _enum(rng, field)
    if t in (
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SFIXED32,
    ):
        return _int(rng, _INT32, 32)
    if t in (
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED64,
    ):
        return _int(rng, _INT64, 64)
    if t == FieldDescriptor.TYPE_DOUBLE:
        # Finite values only: the server writes confidences in [0,1]; proto3
        # JSON spells NaN and infinities as strings, which no event carries.
        # No integral values of 2**53 and above either: Python prints them as
        # 9007199254740994.0, Go as 9007199254740994, and this test's canonical
        # form does not equate the two (RFC 8785 would).
        return rng.choice(
            (0.0, 1.0, 0.5, 0.625, 0.1, 1 / 3, 1e-7, 1.7976931348623157e308, 5e-324, -0.25,
             rng.random())
        )  # fmt: skip
    raise TypeError(f"no generator for {field.full_name} (type {t}); add one")


def random_events(seed: int, per_variant: int) -> Iterator[events_pb2.RunEvent]:
    """`per_variant` events of every variant, in a stable order for the seed."""
    rng = random.Random(seed)
    for _ in range(per_variant):
        for case in VARIANTS:
            event = events_pb2.RunEvent()
            envelope = events_pb2.RunEvent.DESCRIPTOR
            for field in envelope.fields:
                # `event` is the catalog; a proto3 `optional` field (item_index)
                # sits in a synthetic oneof of its own and is set like any other.
                if field.containing_oneof is _CATALOG or rng.random() < 0.3:
                    continue
                if field.type == FieldDescriptor.TYPE_MESSAGE:
                    sub = getattr(event, field.name)
                    sub.SetInParent()
                    _fill(rng, sub)
                else:
                    setattr(event, field.name, _scalar(rng, field))
            payload = getattr(event, case)
            payload.SetInParent()  # an empty payload still names its variant
            if rng.random() > 0.1:
                _fill(rng, payload)
            yield event


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if not byte & 0x80:
            return value, i


def _fields(data: bytes) -> list[tuple[int, int, bytes, bytes]]:
    """(number, wire type, raw field bytes, payload of a length-delimited field)."""
    out, i = [], 0
    while i < len(data):
        start = i
        key, i = _read_varint(data, i)
        number, wire = key >> 3, key & 7
        payload = b""
        if wire == 0:
            _, i = _read_varint(data, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            size, i = _read_varint(data, i)
            payload, i = data[i : i + size], i + size
        else:
            raise ValueError(f"wire type {wire}")
        out.append((number, wire, data[start:i], payload))
    return out


def _delimited(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def scrambled(event: events_pb2.RunEvent, rng: random.Random) -> bytes:
    """Another valid encoding of `event`, as protobuf parsers must accept it.

    Fields out of order; a scalar sent twice (the last wins); another oneof
    case sent first (the last case wins); the payload split over two
    occurrences of its field (messages merge). Parsed by the spec, it is
    `event` again, and re-encodes to `event`'s deterministic bytes.
    """
    fields = _fields(event.SerializeToString(deterministic=True))
    case = event.DESCRIPTOR.fields_by_name[event.WhichOneof("event") or ""].number
    parts: list[bytes] = []
    for number, wire, raw, payload in fields:
        if number == case and wire == 2:
            inner = _fields(payload)
            cut = rng.randint(0, len(inner))
            first = b"".join(f[2] for f in inner[:cut])
            second = b"".join(f[2] for f in inner[cut:])
            parts.append(_delimited(number, first) + _delimited(number, second))
        elif wire == 0 and rng.random() < 0.5:
            parts.append(_varint(number << 3) + _varint(rng.randint(0, 2**20)) + raw)
        else:
            parts.append(raw)
    other = rng.choice([n for n in (f.number for f in _oneof_fields()) if n != case])
    decoy = _delimited(other, b"")
    tail = parts.pop(next(i for i, (n, *_rest) in enumerate(fields) if n == case))
    rng.shuffle(parts)  # envelope fields in any order
    return decoy + b"".join(parts) + tail


def _oneof_fields() -> list[FieldDescriptor]:
    return list(events_pb2.RunEvent.DESCRIPTOR.oneofs_by_name["event"].fields)
