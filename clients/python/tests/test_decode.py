"""decode_event follows the protobuf spec when a field appears more than once."""

from __future__ import annotations

from runwire_client import decode_event, encode_event, event_case, v1
from runwire_client._watch import _SpecWatchRunResponse


def _bytes(**fields: object) -> bytes:
    return bytes(v1.RunEvent(**fields))  # type: ignore[arg-type]


def test_decode_event_two_oneof_cases_last_wins() -> None:
    """betterproto2 alone kept both cases and raised RuntimeError on asking which."""
    data = _bytes(run_id="r", seq=4, node_log=v1.NodeLog(line="a")) + _bytes(
        node_token=v1.NodeToken(delta="b")
    )
    event = decode_event(data)
    assert event_case(event) == "node_token"
    assert event.node_log is None
    assert (event.run_id, event.seq) == ("r", 4)


def test_decode_event_a_oneof_case_after_another_starts_fresh() -> None:
    data = (
        _bytes(node_log=v1.NodeLog(line="first"))
        + _bytes(node_token=v1.NodeToken(delta="b"))
        + _bytes(node_log=v1.NodeLog(stream=v1.LogStream.STDERR))
    )
    event = decode_event(data)
    assert event.node_log == v1.NodeLog(stream=v1.LogStream.STDERR)


def test_decode_event_a_message_field_twice_merges() -> None:
    """betterproto2 alone replaced the first occurrence with the second."""
    data = _bytes(node_log=v1.NodeLog(line="kept")) + _bytes(
        node_log=v1.NodeLog(stream=v1.LogStream.STDERR)
    )
    event = decode_event(data)
    assert event.node_log == v1.NodeLog(line="kept", stream=v1.LogStream.STDERR)
    # Re-encoded, it is the one canonical encoding.
    assert encode_event(event) == _bytes(
        node_log=v1.NodeLog(line="kept", stream=v1.LogStream.STDERR)
    )


def test_decode_event_scalars_twice_last_wins() -> None:
    log = v1.NodeLog(line="l")
    event = decode_event(_bytes(seq=1, run_id="a", node_log=log) + _bytes(seq=9))
    assert (event.seq, event.run_id) == (9, "a")


def test_watch_responses_decode_by_the_same_rules() -> None:
    first = bytes(v1.WatchRunResponse(events=[v1.RunEvent(seq=1, node_log=v1.NodeLog(line="x"))]))
    event_bytes = _bytes(seq=2, node_log=v1.NodeLog(line="y")) + _bytes(
        node_token=v1.NodeToken(delta="z")
    )
    second = b"\x0a" + bytes([len(event_bytes)]) + event_bytes
    response = _SpecWatchRunResponse.FromString(first + second)
    assert [event_case(e) for e in response.events] == ["node_log", "node_token"]
