"""A watcher that joins a busy run reads the store only up to the first live chunk
queued for it, then goes on from the live queue: not for as long as the writer
stays ahead of its page reads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from runwire.rpc._service import _REPLAY_PAGE, RunService, _Cursor
from runwire.store import EventWriter, Hub, NewRun, Store, new_run_id
from runwire.v1 import events_pb2, run_service_pb2

OWNER = "catch-up-test"


def _log(run_id: str, seq: int) -> events_pb2.RunEvent:
    return events_pb2.RunEvent(
        run_id=run_id, seq=seq, node_log=events_pb2.NodeLog(line=f"{seq}", line_number=seq)
    )


class CountingStore(Store):
    """The real store, counting the pages WatchRun reads."""

    reads = 0

    async def read_events(self, *args: Any, **kwargs: Any) -> Any:
        self.reads += 1
        return await super().read_events(*args, **kwargs)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        yield p
    finally:
        await p.close()


async def test_catch_up_stops_where_the_live_queue_begins(
    pool: asyncpg.Pool, database_url: str
) -> None:
    store = CountingStore(pool)
    hub = Hub()
    run_id = new_run_id()
    await store.create_run(
        NewRun(run_id, "f", "d", {}, {}, {}, None, "", "", 2, 1),
        owner_id=OWNER,
        lease_seconds=60,
    )

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(database_url)

    writer = EventWriter(connect, hub, owner_id=OWNER, lease_seconds=60)
    writer.start()
    try:
        stored = 2 * _REPLAY_PAGE + 500  # committed before the watcher subscribed
        writer.append(run_id, [_log(run_id, s) for s in range(1, stored + 1)])
        await writer.flush()
        sub = hub.subscribe(run_id)
        # Committed after it subscribed: in the store and in its live queue.
        writer.append(run_id, [_log(run_id, s) for s in range(stored + 1, stored + 301)])
        await writer.flush()
        assert sub.live_from() == stored + 1

        service = RunService(store, hub, None, server_id=OWNER, lease_seconds=60)  # type: ignore[arg-type]
        cursor = _Cursor(0)
        seqs = [
            e.seq
            async for response in service._catch_up(run_id, cursor, None, sub)
            for e in run_service_pb2.WatchRunResponse.FromString(response).events
        ]
        assert seqs == list(range(1, stored + 1)), "the store up to the live queue, no further"
        assert cursor.last == stored
        assert store.reads == 3  # two full pages and the part page before the queue
        chunks, overflowed, _ = sub.take()
        assert not overflowed
        assert chunks[0].first_seq == cursor.last + 1
        assert chunks[-1].last_seq == stored + 300
        sub.close()
    finally:
        await writer.stop(wait=5)
