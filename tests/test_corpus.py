"""The golden corpus against the protobuf runtime the server uses (fixtures/corpus/README.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format, unknown_fields

from runwire.v1 import events_pb2

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
GOLDEN_SUFFIXES = (".json", ".binpb")
ONEOF = "event"


def canonical_json(value: Any) -> str:
    """The corpus README's canonical JSON: sorted keys, compact, non-ASCII unescaped."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def oneof_cases() -> set[str]:
    """The variants of RunEvent.event, reflected from the generated descriptor."""
    return {field.name for field in events_pb2.RunEvent.DESCRIPTOR.oneofs_by_name[ONEOF].fields}


def golden_names() -> set[str]:
    return {path.stem for path in CORPUS.iterdir() if path.suffix in GOLDEN_SUFFIXES}


def to_json(event: events_pb2.RunEvent) -> str:
    return json_format.MessageToJson(event, ensure_ascii=False)


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
    event = json_format.Parse(golden, events_pb2.RunEvent())
    assert event.WhichOneof(ONEOF) == case
    assert canonical_json(json.loads(to_json(event))) == canonical_json(json.loads(golden))


def test_corpus_binary_round_trips_to_identical_bytes(case: str) -> None:
    golden = (CORPUS / f"{case}.binpb").read_bytes()
    event = events_pb2.RunEvent.FromString(golden)
    assert event.WhichOneof(ONEOF) == case
    assert event.SerializeToString(deterministic=True) == golden


def test_corpus_json_and_binary_decode_to_equal_events(case: str) -> None:
    from_json = json_format.Parse(
        (CORPUS / f"{case}.json").read_text(encoding="utf-8"), events_pb2.RunEvent()
    )
    from_binary = events_pb2.RunEvent.FromString((CORPUS / f"{case}.binpb").read_bytes())
    assert from_json == from_binary


def test_corpus_goldens_set_every_payload_field(case: str) -> None:
    """Each golden sets every field of its variant, so a dropped or renamed field shows up."""
    event = events_pb2.RunEvent.FromString((CORPUS / f"{case}.binpb").read_bytes())
    payload = getattr(event, case)
    unset = [
        field.name
        for field in payload.DESCRIPTOR.fields
        if field.name not in {f.name for f, _ in payload.ListFields()}
    ]
    assert not unset, f"{case} golden leaves payload fields at their defaults: {unset}"


def test_corpus_sets_every_envelope_field_somewhere() -> None:
    envelope = {
        field.name
        for field in events_pb2.RunEvent.DESCRIPTOR.fields
        if field.containing_oneof is None
    }
    seen: set[str] = set()
    for case in oneof_cases():
        event = events_pb2.RunEvent.FromString((CORPUS / f"{case}.binpb").read_bytes())
        seen |= {field.name for field, _ in event.ListFields()}
    assert envelope <= seen, f"envelope fields no golden sets: {sorted(envelope - seen)}"


def test_runevent_unknown_variant_is_detectable() -> None:
    """A variant from a newer contract decodes to no known case plus unknown fields, never silently to nothing."""
    known = events_pb2.RunEvent(run_id="run_1", seq=12).SerializeToString(deterministic=True)
    # Field 127, wire type 2 (length-delimited), carrying a 5-byte payload.
    crafted = known + b"\xfa\x07\x05\x0a\x03new"

    event = events_pb2.RunEvent.FromString(crafted)

    assert event.WhichOneof(ONEOF) is None
    assert (event.run_id, event.seq) == ("run_1", 12)
    assert [field.field_number for field in unknown_fields.UnknownFieldSet(event)] == [127]
    # Unknown fields survive a re-encode, so a relay does not lose the event.
    assert event.SerializeToString(deterministic=True) == crafted
