"""The public API of runwire_client is exactly its __all__ (as httpx locks its own)."""

from __future__ import annotations

import types

import runwire_client
from runwire_client import v1

PUBLIC = [
    "EVENT_CASES",
    "Backoff",
    "EventsWatch",
    "FieldViolation",
    "GrammarChecker",
    "GrammarViolation",
    "NanoDatetime",
    "NanoTimedelta",
    "RunEnd",
    "RunEvent",
    "RunServiceStub",
    "RunwireError",
    "SeqGapError",
    "UnknownEventError",
    "Watch",
    "WatchedEvent",
    "check_stream",
    "decode_event",
    "encode_event",
    "event_case",
    "event_from_dict",
    "event_from_json",
    "event_to_dict",
    "event_to_json",
    "v1",
    "watch",
    "watch_events",
]


def test_exported_members_are_locked() -> None:
    assert runwire_client.__all__ == PUBLIC


def test_exported_members_all_exist_and_nothing_else_is_public() -> None:
    public = {
        name
        for name, value in vars(runwire_client).items()
        if not name.startswith("_") and not (isinstance(value, types.ModuleType) and name != "v1")
    }
    assert public == set(PUBLIC)


def test_v1_exports_the_generated_catalog() -> None:
    assert {
        "RunEvent",
        "RunServiceStub",
        "WatchRunRequest",
        "WatchRunResponse",
        "ErrorReason",
    } <= set(v1.__all__)
    for name in v1.__all__:
        assert getattr(v1, name) is not None
