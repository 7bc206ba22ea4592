"""The shared log tail (store/_log_tail.py) behind caught-up WatchEvents streams:
its Python filter agrees with read_log's SQL, many readers on two servers get
every selected event exactly once in log order and resume by cursor while the
tail (not each reader) reads Postgres, a slow reader falls out of the bounded
window without holding anyone back or losing an event, and retention's horizon
still expires a caught-up reader (real servers, real Postgres)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import grpc
import pytest
from conftest import Harness, edge, error_reason, shell_node, util_node, wait_for_event

from runwire.store import LogFilter, decode_cursor, log_bounds, mark_pruned, read_log
from runwire.store._log_tail import read_tail
from runwire.v1 import events_pb2, flow_pb2, run_service_pb2, run_service_pb2_grpc

DEADLINE = 60.0
ALL = 1 << 30


def _flow(name: str, lines: int = 3, *, fail: bool = False) -> flow_pb2.Flow:
    last = shell_node("boom", "false") if fail else shell_node("more", "seq", "1", "2")
    return flow_pb2.Flow(
        name=name,
        nodes=[
            shell_node("count", "seq", "1", str(lines)),
            util_node("shape", "set", value={"ok": True}),
            last,
        ],
        edges=[edge("count", "shape"), edge("shape", last.id)],
    )


def _kind(e: events_pb2.RunEvent) -> str:
    return e.WhichOneof("event") or ""


class Reader:
    """One WatchEvents call read in the background: events, and the cursor and
    event count after each response."""

    def __init__(self, stub: run_service_pb2_grpc.RunServiceStub, **request: Any) -> None:
        self.call = stub.WatchEvents(run_service_pb2.WatchEventsRequest(**request))
        self.events: list[events_pb2.RunEvent] = []
        self.cursors: list[tuple[str, int]] = []
        self.changed = asyncio.Event()
        self.error: grpc.aio.AioRpcError | None = None
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            async for response in self.call:
                self.events.extend(response.events)
                self.cursors.append((response.cursor, len(self.events)))
                self.changed.set()
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.CANCELLED:
                self.error = err
        self.changed.set()

    async def until(self, done: Any) -> list[events_pb2.RunEvent]:
        async with asyncio.timeout(DEADLINE):
            while not done(self):
                assert self.error is None, self.error
                assert not self.task.done(), "the stream ended"
                self.changed.clear()
                await self.changed.wait()
        return self.events

    def completed(self) -> int:
        return sum(_kind(e) == "run_completed" for e in self.events)

    async def close(self) -> None:
        self.call.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def _ids(events: list[Any]) -> list[tuple[str, int]]:
    return [(e.run_id, e.seq) for e in events]


def _service(h: Harness) -> Any:
    return h.server.watch_events  # type: ignore[attr-defined]


async def test_the_tails_python_filter_agrees_with_read_logs_sql(harness: Harness) -> None:
    """The same log through both paths, for every combination of filter fields."""
    specs = [
        ("alpha", {"team": "a", "env": "prod"}, False),
        ("alpha", {"team": "b"}, True),
        ("beta", {"team": "a"}, False),
        ("beta", {}, True),
        ("gamma", {"team": "a", "env": "dev"}, False),
    ]
    for name, labels, fail in specs:
        run = await harness.start(_flow(name, fail=fail), labels=labels)
        await harness.events(run.run_id)
    running = await harness.start(
        flow_pb2.Flow(name="delta", nodes=[shell_node("hold", "sh", "-c", "echo up; sleep 30")]),
        labels={"team": "a"},
    )
    await wait_for_event(harness.stub, running.run_id, lambda e: _kind(e) == "node_log")
    pool = harness.server.store.pool  # type: ignore[union-attr]
    tail, looked, _ = await read_tail(pool, 0, ALL)  # the running run goes on logging
    assert len(tail) > 40

    flows = ["", "alpha", "beta", "delta", "nope"]
    label_sets: list[tuple[tuple[str, str], ...]] = [
        (),
        (("team", "a"),),
        (("env", "prod"), ("team", "a")),
        (("team", "c"),),
    ]
    statuses: list[tuple[int, ...]] = [
        (),
        (events_pb2.RUN_STATUS_SUCCEEDED,),
        (events_pb2.RUN_STATUS_FAILED, events_pb2.RUN_STATUS_RUNNING),
    ]
    kinds: list[frozenset[str]] = [
        frozenset(),
        frozenset({"node_log"}),
        frozenset({"node_started", "node_completed"}),
    ]
    nodes: list[frozenset[str]] = [frozenset(), frozenset({"count"}), frozenset({"boom", "hold"})]
    sizes = set()
    for flow_name, labels, run_statuses, kind, node in itertools.product(
        flows, label_sets, statuses, kinds, nodes
    ):
        flt = LogFilter(flow_name, labels, run_statuses, kind, node)
        sql = [e for e in (await read_log(pool, 0, ALL, flt))[0] if e.pos <= looked]
        python = [e.entry for e in tail if e.selected_by(flt)]
        assert python == sql, flt
        sizes.add(len(sql))
    assert 0 in sizes
    assert len(tail) in sizes
    assert len(sizes) > 20


async def test_many_readers_on_two_servers_get_every_selected_event_once_through_one_tail(
    harness_factory: Any,
) -> None:
    a: Harness = await harness_factory()
    b: Harness = await harness_factory()
    pool = a.server.store.pool  # type: ignore[union-attr]
    svc = _service(a)
    team_a = run_service_pb2.RunEventsFilter(labels={"team": "a"})
    logs = run_service_pb2.RunEventsFilter(
        events=run_service_pb2.EventFilter(kinds=["node_log"], node_ids=["count"])
    )
    # (Not by run status: live, that selects by the status when each event is read.)
    by_flow = run_service_pb2.RunEventsFilter(flow_name="r1")
    plans: list[tuple[Harness, run_service_pb2.RunEventsFilter | None, int]] = []
    for i in range(12):
        flt = [None, team_a, logs, by_flow][i % 4]
        start = run_service_pb2.STREAM_START_EARLIEST if i % 3 == 0 else 0
        plans.append((a if i < 10 else b, flt, start))
    readers = [Reader(h.stub, filter=flt, start=start) for h, flt, start in plans]
    await asyncio.gather(*(r.until(lambda r: r.cursors) for r in readers))
    store_reads, tail_reads = svc.store_reads, svc.tail.reads

    # Runs committed by both servers, one after the other: many changes of the log,
    # and those of b reach a's readers by NOTIFY.
    runs = []
    for i in range(6):
        h = a if i % 2 else b
        run = await h.start(_flow(f"r{i}", lines=4), labels={"team": "a" if i % 3 else "b"})
        await h.events(run.run_id)
        runs.append(run.run_id)
    on_a = sum(h is a for h, _, _ in plans)
    for reader, (_, flt, _) in zip(readers, plans, strict=True):
        want = {
            None: 6,
            id(team_a): 4,
            id(logs): 6,
            id(by_flow): 1,
        }[None if flt is None else id(flt)]
        await reader.until(lambda r, want=want: r.completed() >= want)
    # One read per change for all of a's readers, not one per reader: each
    # reader read the store only while the tail had not started.
    assert svc.tail.reads - tail_reads >= 6
    assert svc.store_reads - store_reads <= 2 * on_a, (svc.store_reads - store_reads, on_a)
    assert svc.tail.readers == on_a

    for reader, (_, flt, _) in zip(readers, plans, strict=True):
        first = decode_cursor(reader.cursors[0][0])
        expected, _ = await read_log(pool, first, ALL, LogFilter.from_proto(flt))
        assert _ids(reader.events) == _ids(expected)  # every one, once, in log order
    # Resume from a cursor in the middle, on the other server: exactly the rest.
    whole = readers[0]
    cursor, count = whole.cursors[len(whole.cursors) // 2]
    resumed = Reader(b.stub, cursor=cursor)
    rest = await resumed.until(lambda r: len(r.events) >= len(whole.events) - count)
    assert whole.events[:count] + rest == whole.events
    for reader in [*readers, resumed]:
        await reader.close()


async def test_a_slow_reader_falls_out_of_the_bounded_window_and_holds_back_nobody(
    harness: Harness,
) -> None:
    svc = _service(harness)
    svc.tail.max_entries, svc.tail.page = 50, 20
    fast = Reader(harness.stub)
    slow = harness.stub.WatchEvents(run_service_pb2.WatchEventsRequest())
    first = await slow.read()  # its starting cursor; then it reads nothing for a while
    await fast.until(lambda r: r.cursors)
    run = await harness.start(_flow("big", lines=3000))
    events = await fast.until(lambda r: r.completed() >= 1)
    assert _ids(events) == _ids(await harness.stored(run.run_id))
    _, latest = await log_bounds(harness.server.store.pool)  # type: ignore[union-attr]
    async with asyncio.timeout(DEADLINE):
        await svc.tail.wait_past(latest - 1)  # the tail has read the whole run too
    start, looked, held = svc.tail.window
    assert held <= 50
    assert svc.tail.dropped >= len(events) - 50
    assert looked - start >= held
    # The slow reader, behind the window, reads the store: every event, once.
    got: list[events_pb2.RunEvent] = []
    async with asyncio.timeout(DEADLINE):
        while sum(_kind(e) == "run_completed" for e in got) < 1:
            response = await slow.read()
            got.extend(response.events)
    assert _ids(got) == _ids(events)
    assert first.cursor
    slow.cancel()
    await fast.close()


async def test_retention_passing_a_caught_up_reader_expires_it_through_the_tail(
    harness: Harness,
) -> None:
    svc = _service(harness)
    pool = harness.server.store.pool  # type: ignore[union-attr]
    reader = Reader(harness.stub)
    await reader.until(lambda r: r.cursors)
    run = await harness.start(_flow("before"))
    await reader.until(lambda r: r.completed() >= 1)
    store_reads = svc.store_reads
    _, latest = await log_bounds(pool)
    await mark_pruned(pool, latest + 1)  # as retention does, past the reader
    await harness.start(_flow("after"))
    with pytest.raises(AssertionError):
        await reader.until(lambda r: False)
    assert reader.error is not None
    assert (reader.error.code(), error_reason(reader.error)) == (
        grpc.StatusCode.OUT_OF_RANGE,
        "CURSOR_EXPIRED",
    )
    assert svc.store_reads == store_reads  # the tail's read told it
    assert [e.run_id for e in reader.events] == [run.run_id] * len(reader.events)
