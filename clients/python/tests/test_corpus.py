"""The golden corpus, decoded and re-encoded by runwire_client (fixtures/corpus/README.md)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from runwire_client import (
    EVENT_CASES,
    RunEvent,
    UnknownEventError,
    decode_event,
    encode_event,
    event_case,
    event_from_json,
    event_to_json,
)

CORPUS = Path(__file__).resolve().parents[3] / "fixtures" / "corpus"
GOLDEN_SUFFIXES = (".json", ".binpb")


def canonical_json(value: Any) -> str:
    """The corpus README's canonical JSON: sorted keys, compact, non-ASCII unescaped."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def oneof_cases() -> set[str]:
    """The variants of RunEvent.event as the generated betterproto2 class declares them."""
    return {
        field.name
        for field in dataclasses.fields(RunEvent)
        if "betterproto" in field.metadata and field.metadata["betterproto"].group == "event"
    }


def golden_names() -> set[str]:
    return {path.stem for path in CORPUS.iterdir() if path.suffix in GOLDEN_SUFFIXES}


def test_corpus_event_cases_match_generated_oneof() -> None:
    assert oneof_cases() == EVENT_CASES
    assert len(EVENT_CASES) >= 24


def test_corpus_has_both_files_for_every_variant() -> None:
    missing = sorted(
        f"{case}{suffix}"
        for case in oneof_cases()
        for suffix in GOLDEN_SUFFIXES
        if not (CORPUS / f"{case}{suffix}").is_file()
    )
    assert not missing, f"variants without golden files: {missing}"


def test_corpus_files_each_name_a_variant() -> None:
    orphans = sorted(golden_names() - oneof_cases())
    assert not orphans, f"golden files naming no RunEvent variant: {orphans}"


@pytest.fixture(params=sorted(oneof_cases()))
def case(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_corpus_json_round_trips_to_canonical_json(case: str) -> None:
    golden = (CORPUS / f"{case}.json").read_text(encoding="utf-8")
    event = event_from_json(golden)
    assert event_case(event) == case
    assert canonical_json(json.loads(event_to_json(event))) == canonical_json(json.loads(golden))


def test_corpus_binary_round_trips_to_identical_bytes(case: str) -> None:
    golden = (CORPUS / f"{case}.binpb").read_bytes()
    event = decode_event(golden)
    assert event_case(event) == case
    assert encode_event(event) == golden


def test_corpus_json_and_binary_decode_to_equal_events(case: str) -> None:
    from_json = event_from_json((CORPUS / f"{case}.json").read_text(encoding="utf-8"))
    from_binary = decode_event((CORPUS / f"{case}.binpb").read_bytes())
    assert from_json == from_binary
    # And the other way round: the binary decoding prints the golden JSON.
    golden = json.loads((CORPUS / f"{case}.json").read_text(encoding="utf-8"))
    assert canonical_json(json.loads(event_to_json(from_binary))) == canonical_json(golden)


def _unknown_variant_bytes(seq: int) -> bytes:
    # Field 127, wire type 2 (length-delimited): no variant uses it, so this is
    # what a newer server's new event looks like to this client.
    tag = bytes([0xFA, 0x07])  # varint of (127 << 3) | 2
    payload = b"\x0a\x03new"  # its own field 1 = "new"
    return encode_event(RunEvent(run_id="run_1", seq=seq)) + tag + bytes([len(payload)]) + payload


def test_decode_event_rejects_unknown_variant() -> None:
    with pytest.raises(UnknownEventError) as caught:
        decode_event(_unknown_variant_bytes(seq=12))
    assert caught.value.seq == 12
    assert caught.value.field_numbers == (127,)
    assert str(caught.value) == "unknown event at seq 12 (field 127), upgrade the client"


def test_decode_event_rejects_event_without_variant() -> None:
    with pytest.raises(UnknownEventError, match="upgrade the client"):
        decode_event(encode_event(RunEvent(run_id="run_1", seq=3)))


def test_event_from_json_rejects_unknown_variant() -> None:
    text = json.dumps({"runId": "run_1", "seq": "12", "nodeTeleported": {"where": "mars"}})
    with pytest.raises(
        UnknownEventError, match=r"seq 12, upgrade the client: unknown field\(s\) nodeTeleported"
    ):
        event_from_json(text)


def test_event_from_json_accepts_proto_field_names() -> None:
    event = event_from_json('{"run_id": "run_1", "seq": "1", "run_started": {"flow_name": "f"}}')
    assert event.run_started is not None
    assert event.run_started.flow_name == "f"


def test_event_from_json_rejects_malformed_payload() -> None:
    with pytest.raises(ValueError, match="invalid RunEvent JSON"):
        event_from_json('{"seq": "1", "runStarted": {"flowNom": "f"}}')


def test_event_to_json_is_one_line_of_utf8() -> None:
    event = decode_event((CORPUS / "run_started.binpb").read_bytes())
    text = event_to_json(event)
    assert "\n" not in text
    assert "déploiement" in text


EDGE = CORPUS / "edge"
EDGE_CASES = sorted(path.stem for path in EDGE.glob("*.json"))


def test_edge_corpus_has_its_cases() -> None:
    assert len(EDGE_CASES) >= 10


@pytest.mark.parametrize("name", EDGE_CASES)
def test_edge_corpus_round_trips(name: str) -> None:
    """fixtures/corpus/edge/: BOMs, astral and combining characters, escapes,
    int64 limits, the first and last timestamps, negative durations, enum
    numbers this client does not name, empty payloads."""
    golden_json = (EDGE / f"{name}.json").read_text(encoding="utf-8")
    golden_binary = (EDGE / f"{name}.binpb").read_bytes()
    from_json = event_from_json(golden_json)
    from_binary = decode_event(golden_binary)
    assert from_json == from_binary
    assert canonical_json(json.loads(event_to_json(from_binary))) == canonical_json(
        json.loads(golden_json)
    )
    assert encode_event(from_json) == golden_binary
