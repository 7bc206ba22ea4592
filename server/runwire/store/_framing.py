"""Frame stored RunEvent bytes as `WatchRunResponse.events` without decoding them."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["frame_event", "frame_events"]

# Field 1 of WatchRunResponse, wire type 2 (length-delimited): (1 << 3) | 2.
_EVENTS_TAG = b"\x0a"


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
    return _EVENTS_TAG + _varint(len(payload)) + payload


def frame_events(payloads: Iterable[bytes]) -> bytes:
    """Serialized RunEvents concatenated into a serialized WatchRunResponse."""
    return b"".join(frame_event(p) for p in payloads)
