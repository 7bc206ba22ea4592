"""Randomized cross-language test: every implementation decodes and re-encodes
seeded random events of every variant to the same bytes and the same JSON.

The reference is the protobuf runtime (deterministic binary, `json_format`).
Each client (betterproto2 in process; Go, Rust and TypeScript through a small
roundtrip tool each) decodes every event from binary and from proto3 JSON,
and re-encodes both ways. Binary must match byte for byte, JSON as the
corpus README's canonical JSON. `make test` runs a fixed seed set;
`make test-random` runs a fresh seed (printed, for replay with
RUNWIRE_RANDOM_SEED) and many more events.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from _random_events import VARIANTS, random_events, scrambled
from google.protobuf import json_format

from runwire.v1 import events_pb2
from runwire_client import decode_event, encode_event, event_from_json, event_to_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILDS = {
    "go": ["make", "-s", "-C", "clients/go", "build"],
    "rust": ["make", "-s", "-C", "clients/rust", "example"],
    "ts": ["make", "-s", "-C", "clients/ts", "build"],
}
TOOLS = {
    "go": ["clients/go/.bin/roundtrip"],
    "rust": ["clients/rust/target/debug/examples/runwire-roundtrip"],
    "ts": ["node", "clients/ts/build/test/roundtrip.js"],
}

FIXED_SEEDS = (1, 2, 3, 20261130)
PER_VARIANT = int(os.environ.get("RUNWIRE_RANDOM_PER_VARIANT", "8"))


def _seeds() -> tuple[int, ...]:
    chosen = os.environ.get("RUNWIRE_RANDOM_SEED")
    if chosen == "fresh":
        return (random.SystemRandom().randrange(2**32),)
    return (int(chosen),) if chosen else FIXED_SEEDS


def _numbers(value: Any) -> Any:
    """Integral doubles as integers, as RFC 8785 prints them: Go and TypeScript
    write a double 1.0 as `1`, Python's protobuf runtime as `1.0`."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    return value


def canonical(text: str) -> str:
    """The corpus README's canonical JSON."""
    return json.dumps(
        _numbers(json.loads(text)), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


def reference(event: events_pb2.RunEvent) -> tuple[str, str]:
    """(hex of the deterministic binary, proto3 JSON) from the protobuf runtime."""
    binary = event.SerializeToString(deterministic=True)
    text = json.dumps(json_format.MessageToDict(event), ensure_ascii=False, separators=(",", ":"))
    return binary.hex(), text


def _betterproto(line: str) -> str:
    hex_text, json_text = line.split("\t", 1)
    try:
        from_binary = decode_event(bytes.fromhex(hex_text))
        from_json = event_from_json(json_text)
        return "\t".join(
            part
            for e in (from_binary, from_json)
            for part in (encode_event(e).hex(), event_to_json(e))
        )
    except Exception as exc:  # reported per event below
        return f"ERROR\t{type(exc).__name__}: {exc}"


def _tool(argv: list[str]) -> Callable[[list[str]], list[str]]:
    def run(lines: list[str]) -> list[str]:
        done = subprocess.run(
            argv,
            cwd=ROOT,
            input="".join(f"{line}\n" for line in lines).encode(),
            capture_output=True,
            check=False,
            timeout=300,
        )
        assert done.returncode == 0, f"{argv} exited {done.returncode}: {done.stderr.decode()}"
        # Not splitlines(): it also splits at U+2028, U+0085, \x1c..\x1e.
        return done.stdout.decode("utf-8").removesuffix("\n").split("\n")

    return run


@pytest.fixture(scope="module")
def implementations() -> dict[str, Callable[[list[str]], list[str]]]:
    for lang, argv in BUILDS.items():
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.fail(f"building the {lang} roundtrip tool failed:\n{done.stdout}\n{done.stderr}")
    impls: dict[str, Callable[[list[str]], list[str]]] = {
        "python-betterproto2": lambda lines: [_betterproto(line) for line in lines]
    }
    impls.update({lang: _tool(argv) for lang, argv in TOOLS.items()})
    return impls


def _problems(
    name: str,
    events: list[events_pb2.RunEvent],
    lines: list[str],
    answers: list[str],
    expected: list[str] | None = None,
) -> Iterable[str]:
    """What differs from the reference; `expected` when the input is not it."""
    assert len(answers) == len(lines), f"{name}: {len(answers)} answers to {len(lines)} events"
    for event, line, answer in zip(events, expected or lines, answers, strict=True):
        ref_hex, ref_json = line.split("\t", 1)
        where = f"{name}, seq {event.seq}, {event.WhichOneof('event')}"
        if answer.startswith("ERROR\t"):
            yield f"{where}: {answer[6:]}\n  json: {ref_json}"
            continue
        bin_hex, bin_json, json_hex, json_json = answer.split("\t")
        for what, got, want in (
            ("binary -> binary", bin_hex, ref_hex),
            ("json -> binary", json_hex, ref_hex),
        ):
            if got != want:
                yield f"{where}: {what} differs\n  got  {got}\n  want {want}\n  json: {ref_json}"
        for what, got in (("binary -> json", bin_json), ("json -> json", json_json)):
            if canonical(got) != canonical(ref_json):
                yield f"{where}: {what} differs\n  got  {got}\n  want {ref_json}"


@pytest.mark.parametrize("seed", _seeds())
def test_random_events_round_trip_identically_in_every_language(
    seed: int, implementations: dict[str, Callable[[list[str]], list[str]]]
) -> None:
    """Seed {seed}: replay with RUNWIRE_RANDOM_SEED={seed}."""
    print(f"random events: seed {seed}, {PER_VARIANT} per variant")  # noqa: T201 (for replay)
    events = list(random_events(seed, PER_VARIANT))
    assert {e.WhichOneof("event") for e in events} == set(VARIANTS)
    lines = ["\t".join(reference(e)) for e in events]
    problems: list[str] = []
    for name, run in implementations.items():
        found = list(_problems(name, events, lines, run(lines)))
        problems += found[:5]
        if len(found) > 5:
            problems.append(f"{name}: ... and {len(found) - 5} more")
    assert not problems, f"seed {seed} (RUNWIRE_RANDOM_SEED={seed}):\n\n" + "\n\n".join(problems)


@pytest.mark.parametrize("seed", _seeds())
def test_random_events_in_any_valid_encoding_decode_alike(
    seed: int, implementations: dict[str, Callable[[list[str]], list[str]]]
) -> None:
    """The same events, encoded as a parser must also accept them: fields out
    of order, a scalar sent twice (the last wins), another oneof case first
    (the last case wins), the payload split in two (messages merge). Every
    client decodes the event itself and re-encodes its deterministic bytes.
    betterproto2 alone raised RuntimeError or lost the first half here."""
    rng = random.Random(seed)
    events = list(random_events(seed, PER_VARIANT))
    expected = ["\t".join(reference(e)) for e in events]
    lines = [
        f"{scrambled(e, rng).hex()}\t{want.split(chr(9), 1)[1]}"
        for e, want in zip(events, expected, strict=True)
    ]
    problems: list[str] = []
    for name, run in implementations.items():
        found = list(_problems(name, events, lines, run(lines), expected))
        problems += found[:5] + ([f"{name}: ... and {len(found) - 5} more"] if found[5:] else [])
    assert not problems, f"seed {seed} (RUNWIRE_RANDOM_SEED={seed}):\n\n" + "\n\n".join(problems)


EDGE = os.path.join(ROOT, "fixtures", "corpus", "edge")


def _edge_cases() -> list[str]:
    return sorted(name[: -len(".json")] for name in os.listdir(EDGE) if name.endswith(".json"))


def test_edge_corpus_is_what_the_protobuf_runtime_writes() -> None:
    """Each edge pair: the binary and the JSON hold the same event, the
    variant its name says, and re-encode to themselves."""
    cases = _edge_cases()
    assert len(cases) >= 10
    for name in cases:
        with open(os.path.join(EDGE, f"{name}.binpb"), "rb") as f:
            binary = f.read()
        with open(os.path.join(EDGE, f"{name}.json"), encoding="utf-8") as f:
            text = f.read()
        event = events_pb2.RunEvent.FromString(binary)
        assert event.WhichOneof("event") == name.split("--")[0], name
        assert json_format.Parse(text, events_pb2.RunEvent()) == event, name
        assert reference(event) == (binary.hex(), reference(event)[1]), name
        assert canonical(reference(event)[1]) == canonical(text), name


def test_edge_corpus_round_trips_identically_in_every_language(
    implementations: dict[str, Callable[[list[str]], list[str]]],
) -> None:
    """The edge corpus through every client, as the random events go."""
    events, lines = [], []
    for name in _edge_cases():
        with open(os.path.join(EDGE, f"{name}.binpb"), "rb") as f:
            binary = f.read()
        with open(os.path.join(EDGE, f"{name}.json"), encoding="utf-8") as f:
            text = json.dumps(json.loads(f.read()), ensure_ascii=False, separators=(",", ":"))
        events.append(events_pb2.RunEvent.FromString(binary))
        lines.append(f"{binary.hex()}\t{text}")
    problems: list[str] = []
    for impl, run in implementations.items():
        problems += list(_problems(impl, events, lines, run(lines)))
    assert not problems, "\n\n".join(problems)
