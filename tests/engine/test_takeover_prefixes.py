"""The prefix-takeover property: a run taken over after any prefix of its stream ends as if never interrupted.

For each flow, the uninterrupted run's stream E is recorded; then for every
k in 1..len(E)-1 a fresh executor takes the run over from E[:k] (as a server
does from the store) and runs it to its end. The joined stream must be
grammatical, no node visit that had finished in E[:k] may start again, and
the run's status, outputs and counters must equal the uninterrupted run's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _engine_flows import FLOWS, INPUTS
from _engine_kit import MemoryGates, flow_of, fold, run_engine, summary
from conftest import assert_grammar

from runwire.v1 import events_pb2


def _key(e: events_pb2.RunEvent) -> tuple[str, int, int | None]:
    """A node visit, or one item of a fan-out visit."""
    return (e.node_id, e.iteration, e.item_index if e.HasField("item_index") else None)


def _finished_visits(events: list[events_pb2.RunEvent]) -> set[tuple[str, int, int | None]]:
    done: set[tuple[str, int, int | None]] = set()
    for e in events:
        case = e.WhichOneof("event")
        if case in ("node_succeeded", "node_skipped") or (
            case == "node_failed" and not e.node_failed.will_retry
        ):
            done.add(_key(e))
    return done


def _completed(events: list[events_pb2.RunEvent]) -> events_pb2.RunCompleted:
    assert events[-1].WhichOneof("event") == "run_completed"
    return events[-1].run_completed


@pytest.mark.parametrize("name", list(FLOWS))
async def test_takeover_after_every_prefix_ends_like_the_uninterrupted_run(
    name: str, tmp_path: Path
) -> None:
    spec, decisions = FLOWS[name]
    flow = flow_of(spec)
    whole = await run_engine(flow, tmp_path, gates=MemoryGates(decisions), inputs=INPUTS)
    full = whole.events
    assert_grammar(full)
    expected = summary(fold(flow, full))
    want = _completed(full)
    for k in range(1, len(full)):
        prefix = full[:k]
        rest = await run_engine(
            flow, tmp_path, history=prefix, gates=MemoryGates(decisions), inputs=INPUTS
        )
        joined = prefix + rest.events
        where = f"{name}: taken over after seq {k} ({prefix[-1].WhichOneof('event')})"
        assert_grammar(joined)
        restarted = {
            _key(e)
            for e in rest.events
            if e.WhichOneof("event") in ("node_started", "awaiting_confirmation")
        }
        assert not restarted & _finished_visits(prefix), where
        assert summary(fold(flow, joined)) == expected, where
        got = _completed(joined)
        assert (got.status, got.succeeded_node_count, got.failed_node_count) == (
            want.status,
            want.succeeded_node_count,
            want.failed_node_count,
        ), where
        assert got.skipped_node_count == want.skipped_node_count, where


@pytest.mark.parametrize("name", list(FLOWS))
async def test_recorded_run_replayed_through_the_state_matches_the_live_state(
    name: str, tmp_path: Path
) -> None:
    spec, decisions = FLOWS[name]
    flow = flow_of(spec)
    run = await run_engine(flow, tmp_path, gates=MemoryGates(decisions), inputs=INPUTS)
    live = run.executor.state
    replayed = fold(flow, run.events)
    assert summary(replayed) == summary(live)
    assert replayed.seq == live.seq == len(run.events)
    assert {n: (s.visit, s.attempt) for n, s in replayed.nodes.items()} == {
        n: (s.visit, s.attempt) for n, s in live.nodes.items()
    }
