"""Nanosecond-exact Timestamp and Duration on top of betterproto2 (runwire_client._wkt)."""

from __future__ import annotations

import copy
import datetime
import pickle

import pytest

from runwire_client import (
    NanoDatetime,
    NanoTimedelta,
    RunEvent,
    decode_event,
    encode_event,
    event_from_json,
    event_to_dict,
    v1,
)
from runwire_client._wkt import format_duration, format_timestamp, parse_duration, parse_timestamp

UTC = datetime.UTC


@pytest.mark.parametrize(
    ("seconds", "nanos", "text"),
    [
        (0, 0, "1970-01-01T00:00:00Z"),
        (1, 500_000_000, "1970-01-01T00:00:01.500Z"),
        (1, 123_456_000, "1970-01-01T00:00:01.123456Z"),
        (1, 1, "1970-01-01T00:00:01.000000001Z"),
        (-1, 999_999_999, "1969-12-31T23:59:59.999999999Z"),
        (-62_135_596_800, 0, "0001-01-01T00:00:00Z"),
        (253_402_300_799, 999_999_999, "9999-12-31T23:59:59.999999999Z"),
    ],
)
def test_timestamp_json_formats_and_parses_exactly(seconds: int, nanos: int, text: str) -> None:
    assert format_timestamp(seconds, nanos) == text
    assert parse_timestamp(text) == (seconds, nanos)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-21T21:38:04.1+01:00", (1795293484, 100_000_000)),
        ("2026-11-21t20:38:04z", (1795293484, 0)),
        ("2026-11-21T15:08:04.123456789-05:30", (1795293484, 123_456_789)),
    ],
)
def test_timestamp_json_parses_offsets_and_short_fractions(
    text: str, expected: tuple[int, int]
) -> None:
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-21",
        "2026-11-21T20:38:04",
        "2026-11-21T20:38:04.1234567890Z",
        "0000-01-01T00:00:00Z",
        5,
    ],
)
def test_timestamp_json_rejects_invalid_text(text: str) -> None:
    with pytest.raises((ValueError, TypeError)):
        parse_timestamp(text)


@pytest.mark.parametrize(
    ("seconds", "nanos", "text"),
    [
        (0, 0, "0s"),
        (3, 0, "3s"),
        (3, 1, "3.000000001s"),
        (3, 1000, "3.000001s"),
        (1, 500_000_000, "1.500s"),
        (-1, -500_000_000, "-1.500s"),
        (0, -1, "-0.000000001s"),
        (3600, 1, "3600.000000001s"),
    ],
)
def test_duration_json_formats_and_parses_exactly(seconds: int, nanos: int, text: str) -> None:
    assert format_duration(seconds, nanos) == text
    assert parse_duration(text) == (seconds, nanos)


@pytest.mark.parametrize("text", ["1.5", "1,5s", "s", "1.0000000001s", "+1s", "315576000001s"])
def test_duration_json_rejects_invalid_text(text: str) -> None:
    with pytest.raises(ValueError, match="invalid Duration"):
        parse_duration(text)


def test_nano_datetime_keeps_nanoseconds_and_compares_with_them() -> None:
    early = NanoDatetime.from_epoch(1_795_293_484, 123_456_789)
    late = NanoDatetime.from_epoch(1_795_293_484, 123_456_790)
    plain = datetime.datetime(2026, 11, 21, 20, 38, 4, 123456, tzinfo=UTC)
    assert (early.nanosecond, early.microsecond) == (123_456_789, 123_456)
    assert early != late
    assert early < late
    assert late > early
    assert early <= early
    assert early != plain
    assert plain < early
    assert NanoDatetime.from_epoch(1_795_293_484, 123_456_000) == plain
    assert hash(NanoDatetime.from_epoch(1_795_293_484, 123_456_000)) == hash(plain)
    assert len({early, late, plain}) == 3


def test_nano_datetime_survives_copy_and_pickle() -> None:
    value = NanoDatetime.from_epoch(1_795_293_484, 123_456_789)
    for copied in (copy.deepcopy(value), pickle.loads(pickle.dumps(value))):
        assert isinstance(copied, NanoDatetime)
        assert copied == value
        assert copied.nanosecond == 123_456_789


def test_nano_datetime_rejects_out_of_range_nanosecond() -> None:
    with pytest.raises(ValueError, match="nanosecond"):
        NanoDatetime(2026, 1, 1, tzinfo=UTC, nanosecond=1_000_000_000)


def test_nano_timedelta_keeps_nanoseconds_and_compares_with_them() -> None:
    value = NanoTimedelta.from_nanoseconds(15_000_000_007)
    assert value.total_nanoseconds() == 15_000_000_007
    assert value != datetime.timedelta(seconds=15)
    assert value > datetime.timedelta(seconds=15)
    assert NanoTimedelta.from_nanoseconds(15_000_000_000) == datetime.timedelta(seconds=15)
    assert hash(NanoTimedelta.from_nanoseconds(15_000_000_000)) == hash(
        datetime.timedelta(seconds=15)
    )
    assert NanoTimedelta.from_nanoseconds(-1).total_nanoseconds() == -1
    assert copy.deepcopy(value).total_nanoseconds() == 15_000_000_007
    assert pickle.loads(pickle.dumps(value)) == value


def test_event_with_plain_datetime_and_timedelta_encodes() -> None:
    """Callers building events may use plain datetime/timedelta; they encode at their own precision."""
    event = RunEvent(
        run_id="r",
        seq=1,
        event_time=datetime.datetime(
            2026, 1, 2, 3, 4, 5, 600000, tzinfo=datetime.timezone(datetime.timedelta(hours=1))
        ),
        run_resumed=v1.RunResumed(
            paused_duration=datetime.timedelta(seconds=-1, microseconds=500000)
        ),
    )
    assert event_to_dict(event)["eventTime"] == "2026-01-02T02:04:05.600Z"
    assert event_to_dict(event)["runResumed"]["pausedDuration"] == "-0.500s"
    decoded = decode_event(encode_event(event))
    assert decoded == event
    assert decoded.event_time == event.event_time


def test_event_rejects_naive_datetime() -> None:
    naive = datetime.datetime(2026, 1, 2)  # noqa: DTZ001 (the point of the test)
    event = RunEvent(run_id="r", seq=1, event_time=naive, run_started=v1.RunStarted())
    with pytest.raises(ValueError, match="timezone-aware"):
        encode_event(event)


def test_event_keeps_nanoseconds_through_json_and_binary() -> None:
    text = (
        '{"runId":"r","seq":"1","eventTime":"2026-11-21T20:38:04.000000001Z",'
        '"runCompleted":{"duration":"0.000000001s"}}'
    )
    event = event_from_json(text)
    assert isinstance(event.event_time, NanoDatetime)
    assert event.event_time.nanosecond == 1
    assert event.run_completed is not None
    assert isinstance(event.run_completed.duration, NanoTimedelta)
    assert decode_event(encode_event(event)) == event
    assert event_to_dict(event)["eventTime"] == "2026-11-21T20:38:04.000000001Z"
