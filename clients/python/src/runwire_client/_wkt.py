"""Nanosecond-exact Timestamp and Duration for the betterproto2 stubs."""

# betterproto2 (0.10) unwraps google.protobuf.Timestamp and Duration into
# datetime and timedelta, which stop at microseconds, and its JSON mapping
# formats them from those values; so a decoded event loses nanoseconds and
# re-encodes to different bytes and JSON than the golden corpus. Upstream is
# adding a nanosecond datetime (betterproto/python-betterproto2 PR #213, open
# when this was written); until a release carries it for both types, this
# module installs nanosecond-exact versions of the four methods betterproto2
# calls on a wrapped type (`to_wrapped`, `from_wrapped`, `to_dict`,
# `from_dict`) on the *generated* classes in `_gen`, and nothing else. The
# generated files stay untouched, and the corpus test proves the result.

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from typing import Any, Final, SupportsIndex, cast

from ._gen.google import protobuf as _pb

__all__ = ["NanoDatetime", "NanoTimedelta", "install"]

_NANOS_PER_SECOND: Final = 1_000_000_000
_EPOCH: Final = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_ONE_MICROSECOND: Final = datetime.timedelta(microseconds=1)
# Timestamp's valid range (0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z)
# and Duration's (about +-10,000 years), as the proto comments define them.
_TIMESTAMP_SECONDS_MIN: Final = -62_135_596_800
_TIMESTAMP_SECONDS_MAX: Final = 253_402_300_799
_DURATION_SECONDS_MAX: Final = 315_576_000_000

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)
_DURATION = re.compile(r"(-)?(\d+)(?:\.(\d{1,9}))?s")


class NanoDatetime(datetime.datetime):
    """A `datetime` that also keeps the nanoseconds below its microsecond.

    Timestamps decoded by `runwire_client` are `NanoDatetime`s, so they survive
    a round trip exactly. `nanosecond` is the whole fraction of the second in
    nanoseconds; `microsecond` stays consistent with it. Equality, hashing and
    ordering take the extra nanoseconds into account; arithmetic, `replace()`
    and `astimezone()` return results at microsecond precision.
    """

    __slots__ = ("_sub_micro",)
    _sub_micro: int

    def __new__(
        cls,
        year: SupportsIndex,
        month: SupportsIndex,
        day: SupportsIndex,
        hour: SupportsIndex = 0,
        minute: SupportsIndex = 0,
        second: SupportsIndex = 0,
        microsecond: SupportsIndex = 0,
        tzinfo: datetime.tzinfo | None = None,
        *,
        fold: int = 0,
        nanosecond: int | None = None,
    ) -> NanoDatetime:
        sub_micro = 0
        if nanosecond is not None:
            if not 0 <= nanosecond < _NANOS_PER_SECOND:
                raise ValueError(f"nanosecond must be in 0..999999999, got {nanosecond}")
            microsecond, sub_micro = divmod(nanosecond, 1000)
        self = super().__new__(
            cls, year, month, day, hour, minute, second, microsecond, tzinfo, fold=fold
        )
        self._sub_micro = sub_micro
        return self

    @classmethod
    def from_epoch(cls, seconds: int, nanos: int) -> NanoDatetime:
        """Builds the UTC instant `seconds` + `nanos` after the Unix epoch."""
        whole, nanos = divmod(seconds * _NANOS_PER_SECOND + nanos, _NANOS_PER_SECOND)
        base = _EPOCH + datetime.timedelta(seconds=whole)
        return cls(
            base.year,
            base.month,
            base.day,
            base.hour,
            base.minute,
            base.second,
            tzinfo=datetime.UTC,
            nanosecond=nanos,
        )

    @property
    def nanosecond(self) -> int:
        """The fraction of the second in nanoseconds, 0 to 999999999."""
        return self.microsecond * 1000 + self._sub_micro

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, datetime.datetime):
            return NotImplemented
        return super().__eq__(other) is True and self._sub_micro == _sub_micro(other)

    def __ne__(self, other: object) -> bool:
        if not isinstance(other, datetime.datetime):
            return NotImplemented
        return not self == other

    def __lt__(self, other: datetime.datetime) -> bool:  # type: ignore[override]  # as typeshed's datetime: compares with datetimes only
        if super().__eq__(other) is True:
            return self._sub_micro < _sub_micro(other)
        return super().__lt__(other)

    def __le__(self, other: datetime.datetime) -> bool:  # type: ignore[override]  # as typeshed's datetime: compares with datetimes only
        return self == other or self < other

    def __gt__(self, other: datetime.datetime) -> bool:  # type: ignore[override]  # as typeshed's datetime: compares with datetimes only
        if super().__eq__(other) is True:
            return self._sub_micro > _sub_micro(other)
        return super().__gt__(other)

    def __ge__(self, other: datetime.datetime) -> bool:  # type: ignore[override]  # as typeshed's datetime: compares with datetimes only
        return self == other or self > other

    def __hash__(self) -> int:
        base = super().__hash__()
        return base if self._sub_micro == 0 else hash((base, self._sub_micro))

    def __reduce__(self) -> tuple[Callable[..., NanoDatetime], tuple[Any, ...]]:
        # datetime pickles through its constructor, which would drop the
        # sub-microsecond part; copy.deepcopy of a message goes through here.
        fields = (self.year, self.month, self.day, self.hour, self.minute, self.second)
        return _restore_datetime, (fields, self.tzinfo, self.fold, self.nanosecond)

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        return self.__reduce__()

    def __repr__(self) -> str:
        return (
            f"NanoDatetime({self.year}, {self.month}, {self.day}, {self.hour}, {self.minute}, "
            f"{self.second}, nanosecond={self.nanosecond}, tzinfo={self.tzinfo!r})"
        )


def _restore_datetime(
    fields: tuple[int, int, int, int, int, int],
    tzinfo: datetime.tzinfo | None,
    fold: int,
    nanosecond: int,
) -> NanoDatetime:
    return NanoDatetime(*fields, tzinfo=tzinfo, fold=fold, nanosecond=nanosecond)


def _sub_micro(value: datetime.datetime | datetime.timedelta) -> int:
    return value._sub_micro if isinstance(value, NanoDatetime | NanoTimedelta) else 0


class NanoTimedelta(datetime.timedelta):
    """A `timedelta` that also keeps the nanoseconds below its microsecond.

    Durations decoded by `runwire_client` are `NanoTimedelta`s.
    `total_nanoseconds()` is the exact length; equality, hashing and ordering
    take it into account, arithmetic works at microsecond precision.
    """

    __slots__ = ("_sub_micro",)
    _sub_micro: int

    @classmethod
    def from_nanoseconds(cls, nanoseconds: int) -> NanoTimedelta:
        """Builds the duration of exactly `nanoseconds` (may be negative)."""
        micros, sub_micro = divmod(nanoseconds, 1000)
        self = super().__new__(cls, microseconds=micros)
        self._sub_micro = sub_micro
        return self

    def total_nanoseconds(self) -> int:
        """The exact length in nanoseconds."""
        return _timedelta_nanos(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, datetime.timedelta):
            return NotImplemented
        return _timedelta_nanos(self) == _timedelta_nanos(other)

    def __ne__(self, other: object) -> bool:
        if not isinstance(other, datetime.timedelta):
            return NotImplemented
        return not self == other

    def __lt__(self, other: datetime.timedelta) -> bool:
        return _timedelta_nanos(self) < _timedelta_nanos(other)

    def __le__(self, other: datetime.timedelta) -> bool:
        return _timedelta_nanos(self) <= _timedelta_nanos(other)

    def __gt__(self, other: datetime.timedelta) -> bool:
        return _timedelta_nanos(self) > _timedelta_nanos(other)

    def __ge__(self, other: datetime.timedelta) -> bool:
        return _timedelta_nanos(self) >= _timedelta_nanos(other)

    def __hash__(self) -> int:
        base = super().__hash__()
        return base if self._sub_micro == 0 else hash((base, self._sub_micro))

    def __reduce__(self) -> tuple[Callable[[int], NanoTimedelta], tuple[int]]:
        return NanoTimedelta.from_nanoseconds, (self.total_nanoseconds(),)

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        return self.__reduce__()

    def __repr__(self) -> str:
        return f"NanoTimedelta.from_nanoseconds({self.total_nanoseconds()})"


def _timedelta_nanos(value: datetime.timedelta) -> int:
    return (value // _ONE_MICROSECOND) * 1000 + _sub_micro(value)


def _datetime_nanos(value: datetime.datetime) -> int:
    """Nanoseconds since the Unix epoch of an aware datetime."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"a Timestamp needs a timezone-aware datetime, got {value!r}")
    offset = datetime.datetime.__sub__(value, _EPOCH)
    return _timedelta_nanos(offset) + _sub_micro(value)


def _fraction(nanos: int) -> str:
    """The fractional part as proto3 JSON writes it: 0, 3, 6 or 9 digits."""
    if nanos == 0:
        return ""
    if nanos % 1_000_000 == 0:
        return f".{nanos // 1_000_000:03d}"
    if nanos % 1000 == 0:
        return f".{nanos // 1000:06d}"
    return f".{nanos:09d}"


def _parse_fraction(digits: str | None) -> int:
    return int((digits or "").ljust(9, "0"))


def format_timestamp(seconds: int, nanos: int) -> str:
    """Formats a Timestamp as proto3 JSON: RFC 3339 in UTC with a `Z`."""
    if not _TIMESTAMP_SECONDS_MIN <= seconds <= _TIMESTAMP_SECONDS_MAX:
        raise ValueError(f"Timestamp seconds out of range: {seconds}")
    if not 0 <= nanos < _NANOS_PER_SECOND:
        raise ValueError(f"Timestamp nanos out of range: {nanos}")
    base = _EPOCH + datetime.timedelta(seconds=seconds)
    # Not strftime: %Y does not zero-pad years before 1000 on every platform.
    date = f"{base.year:04d}-{base.month:02d}-{base.day:02d}"
    return f"{date}T{base.hour:02d}:{base.minute:02d}:{base.second:02d}{_fraction(nanos)}Z"


def parse_timestamp(text: str) -> tuple[int, int]:
    """Parses a proto3 JSON Timestamp into `(seconds, nanos)` since the epoch."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(f"invalid Timestamp {text!r}: want RFC 3339 like 2026-01-02T03:04:05.123Z")
    year, month, day, hour, minute, second = (int(g) for g in match.group(1, 2, 3, 4, 5, 6))
    base = datetime.datetime(year, month, day, hour, minute, second, tzinfo=datetime.UTC)
    seconds = int((base - _EPOCH).total_seconds())
    if match.group(9) is not None:
        offset = int(match.group(10)) * 3600 + int(match.group(11)) * 60
        seconds -= offset if match.group(9) == "+" else -offset
    if not _TIMESTAMP_SECONDS_MIN <= seconds <= _TIMESTAMP_SECONDS_MAX:
        raise ValueError(f"invalid Timestamp {text!r}: out of range")
    return seconds, _parse_fraction(match.group(7))


def format_duration(seconds: int, nanos: int) -> str:
    """Formats a Duration as proto3 JSON, for example `1.500s` or `-0.000000001s`."""
    total = seconds * _NANOS_PER_SECOND + nanos
    sign = "-" if total < 0 else ""
    whole, frac = divmod(abs(total), _NANOS_PER_SECOND)
    if whole > _DURATION_SECONDS_MAX:
        raise ValueError(f"Duration out of range: {seconds}s {nanos}ns")
    return f"{sign}{whole}{_fraction(frac)}s"


def parse_duration(text: str) -> tuple[int, int]:
    """Parses a proto3 JSON Duration into `(seconds, nanos)` of equal sign."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"invalid Duration {text!r}: want seconds with an `s` suffix like 1.5s")
    whole, nanos = int(match.group(2)), _parse_fraction(match.group(3))
    if whole > _DURATION_SECONDS_MAX:
        raise ValueError(f"invalid Duration {text!r}: out of range")
    sign = -1 if match.group(1) else 1
    return sign * whole, sign * nanos


def _split_duration(total: int) -> tuple[int, int]:
    whole, frac = divmod(abs(total), _NANOS_PER_SECOND)
    sign = -1 if total < 0 else 1
    return sign * whole, sign * frac


# --- the methods installed on the generated classes -----------------------


def _timestamp_to_wrapped(self: _pb.Timestamp) -> NanoDatetime:
    return NanoDatetime.from_epoch(self.seconds, self.nanos)


def _timestamp_from_wrapped(wrapped: datetime.datetime) -> _pb.Timestamp:
    seconds, nanos = divmod(_datetime_nanos(wrapped), _NANOS_PER_SECOND)
    return _pb.Timestamp(seconds=seconds, nanos=nanos)


def _timestamp_to_dict(self: _pb.Timestamp, **_: object) -> str:
    return format_timestamp(self.seconds, self.nanos)


def _timestamp_from_dict(value: Any, *, ignore_unknown_fields: bool = False) -> _pb.Timestamp:
    if isinstance(value, str):
        seconds, nanos = parse_timestamp(value)
        return _pb.Timestamp(seconds=seconds, nanos=nanos)
    raise ValueError(f"invalid Timestamp {value!r}: proto3 JSON writes it as a string")


def _duration_to_wrapped(self: _pb.Duration) -> NanoTimedelta:
    return NanoTimedelta.from_nanoseconds(self.seconds * _NANOS_PER_SECOND + self.nanos)


def _duration_from_wrapped(wrapped: datetime.timedelta) -> _pb.Duration:
    seconds, nanos = _split_duration(_timedelta_nanos(wrapped))
    return _pb.Duration(seconds=seconds, nanos=nanos)


def _duration_to_dict(self: _pb.Duration, **_: object) -> str:
    return format_duration(self.seconds, self.nanos)


def _duration_from_dict(value: Any, *, ignore_unknown_fields: bool = False) -> _pb.Duration:
    if isinstance(value, str):
        seconds, nanos = parse_duration(value)
        return _pb.Duration(seconds=seconds, nanos=nanos)
    raise ValueError(f"invalid Duration {value!r}: proto3 JSON writes it as a string")


_INSTALLED = False


def install() -> None:
    """Installs the nanosecond-exact methods on the generated classes; idempotent."""
    global _INSTALLED
    if _INSTALLED:
        return
    timestamp = cast(Any, _pb.Timestamp)
    timestamp.to_wrapped = _timestamp_to_wrapped
    timestamp.from_wrapped = staticmethod(_timestamp_from_wrapped)
    timestamp.to_dict = _timestamp_to_dict
    timestamp.from_dict = staticmethod(_timestamp_from_dict)
    duration = cast(Any, _pb.Duration)
    duration.to_wrapped = _duration_to_wrapped
    duration.from_wrapped = staticmethod(_duration_from_wrapped)
    duration.to_dict = _duration_to_dict
    duration.from_dict = staticmethod(_duration_from_dict)
    _INSTALLED = True
