"""A filtered watcher picks events out of the writer's pre-framed live chunks by
the kinds and ends the writer recorded: exactly the events a decode of the
chunk would select, byte for byte, at every length-varint width."""

from __future__ import annotations

import pytest

from runwire.rpc._service import _select
from runwire.store import LogFilter
from runwire.store._writer import _chunks, _Pending
from runwire.v1 import events_pb2, run_service_pb2


def _events() -> list[events_pb2.RunEvent]:
    out = []
    for seq in range(1, 61):
        node = ("a", "b", "")[seq % 3]
        if seq % 4 == 0:
            e = events_pb2.RunEvent(node_started=events_pb2.NodeStarted(adapter="shell"))
        else:
            # Lines from a few bytes to past 16 KiB: 1-, 2- and 3-byte lengths.
            e = events_pb2.RunEvent(
                node_log=events_pb2.NodeLog(line="x" * (seq**3 % 20_000), line_number=seq)
            )
        e.run_id, e.seq, e.node_id = "r", seq, node
        out.append(e)
    out.append(
        events_pb2.RunEvent(
            run_id="r",
            seq=61,
            run_completed=events_pb2.RunCompleted(status=2),  # type: ignore[arg-type]
        )
    )
    return out


@pytest.mark.parametrize(
    ("kinds", "node_ids"),
    [(["node_log"], []), ([], ["a"]), (["node_started"], ["b", "a"]), (["ai_invocation"], [])],
)
def test_select_picks_what_decoding_would(kinds: list[str], node_ids: list[str]) -> None:
    events = _events()
    pending = _Pending(
        "r",
        seqs=[e.seq for e in events],
        kinds=[e.WhichOneof("event") or "" for e in events],
        payloads=[e.SerializeToString(deterministic=True) for e in events],
    )
    chunks = _chunks(pending)
    flt = LogFilter.for_run(run_service_pb2.EventFilter(kinds=kinds, node_ids=node_ids))
    assert flt is not None
    got = [
        e
        for chunk in chunks
        for e in run_service_pb2.WatchRunResponse.FromString(_select(chunk, flt)).events
    ]
    want = [e for e in events if flt.selects(e.WhichOneof("event") or "", e.SerializeToString())]
    assert got == want
    assert got[-1].HasField("run_completed")
    assert len(chunks) >= 2  # the chunk cut is crossed too
