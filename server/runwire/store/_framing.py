"""Frame stored RunEvent bytes as `WatchRunResponse.events` (and `WatchEventsResponse.events`,
also field 1) without decoding them, and the scalar fields that go beside them."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["frame_cursor", "frame_event", "frame_events", "frame_resume_after"]

# Field 1 of WatchRunResponse, wire type 2 (length-delimited): (1 << 3) | 2.
_EVENTS_TAG = b"\x0a"
# WatchRunResponse.resume_after_seq: field 3, varint: (3 << 3) | 0.
_RESUME_TAG = b"\x18"
# WatchEventsResponse.cursor: field 2, length-delimited: (2 << 3) | 2.
_CURSOR_TAG = b"\x12"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def frame_event(payload: bytes) -> bytes:
    """One serialized RunEvent as one `events` entry of a WatchRunResponse."""
    n = len(payload)
    # Every event passes here on its way to watchers: the one- and two-byte
    # lengths (all but the largest events) skip the general varint loop.
    if n < 0x80:
        return bytes((0x0A, n)) + payload
    if n < 0x4000:
        return bytes((0x0A, (n & 0x7F) | 0x80, n >> 7)) + payload
    return _EVENTS_TAG + _varint(n) + payload


def frame_events(payloads: Iterable[bytes]) -> bytes:
    """Serialized RunEvents concatenated into a serialized WatchRunResponse."""
    return b"".join(frame_event(p) for p in payloads)


def frame_resume_after(seq: int) -> bytes:
    """`resume_after_seq = seq` of a WatchRunResponse; serialized messages concatenate,
    so it can follow shared pre-framed events."""
    return _RESUME_TAG + _varint(seq)


def frame_cursor(cursor: str) -> bytes:
    """`cursor` of a WatchEventsResponse, to follow its framed events."""
    raw = cursor.encode()
    return _CURSOR_TAG + _varint(len(raw)) + raw
