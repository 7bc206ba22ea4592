"""Stored RunEvent bytes framed as WatchRunResponse entries decode as what was stored,
at every varint width of the length."""

from __future__ import annotations

import pytest

from runwire.store._framing import _varint, frame_event, frame_events, frame_resume_after
from runwire.v1 import events_pb2, run_service_pb2


def _event(line_length: int) -> events_pb2.RunEvent:
    return events_pb2.RunEvent(
        run_id="r", seq=7, node_log=events_pb2.NodeLog(line="x" * line_length, line_number=1)
    )


@pytest.mark.parametrize("line_length", [0, 100, 116, 117, 120, 16_000, 16_370, 16_400, 300_000])
def test_a_framed_event_decodes_as_the_event(line_length: int) -> None:
    event = _event(line_length)
    payload = event.SerializeToString(deterministic=True)
    framed = frame_event(payload)
    assert run_service_pb2.WatchRunResponse.FromString(framed).events == [event]
    # The framing is the one protobuf itself writes.
    assert framed == run_service_pb2.WatchRunResponse(events=[event]).SerializeToString(
        deterministic=True
    )


def test_the_length_widths_cover_their_boundaries() -> None:
    """The prefix is the field tag and the length as protobuf's varint (the
    general loop, _varint, is the reference) at each width's edges."""
    widths = set()
    for n in (0, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152):
        framed = frame_event(b"\x00" * n)
        prefix = framed[: len(framed) - n]
        assert prefix == b"\x0a" + _varint(n), n
        widths.add(len(prefix) - 1)
    assert widths == {1, 2, 3, 4}
    assert (
        run_service_pb2.WatchRunResponse.FromString(frame_resume_after(300)).resume_after_seq == 300
    )


def test_framed_events_concatenate() -> None:
    events = [_event(n) for n in (1, 200, 20_000)]
    framed = frame_events(e.SerializeToString(deterministic=True) for e in events)
    assert list(run_service_pb2.WatchRunResponse.FromString(framed).events) == events
