"""One shared reader of the log's newest entries per process, for caught-up log readers.

A WatchEvents stream that has caught up would otherwise run its own
`read_log` (and `log_bounds`) at every change of the log: R readers and C
commits/s cost Postgres ~2·R·C identical queries a second. Instead, while at
least one reader is attached, ONE task per process reads the new entries once
per change (`Hub.log_changed()`), unfiltered and with the run fields filters
need (flow name, labels, status; LEFT JOIN, so an event whose run row is gone
still reaches an unfiltered reader), and keeps a bounded window of the newest
entries in memory. Readers take their entries from the window and apply their
`LogFilter` in Python (`LogFilter.selects_run` and `selects`, which agree with
`read_log`'s SQL). The webhook deliverer's caught-up subscriptions read the
same tail (the server hands one to both): see runwire.webhooks._deliverer.

The window holds every committed entry in (start, looked]: the statement reads
the counter, the horizon and the events in one snapshot, as `read_log` does,
so `looked` is never past an uncommitted position. A reader whose position is
below `start` (it began behind, or it was slow and the window moved past it)
gets None from `take` and reads the store as before until it is back in the
window; so a slow reader holds back nobody and the window's memory is bounded
by `max_entries` and `max_bytes`, whatever the readers do. The horizon
(`pruned_through`) comes with every read, so a reader that retention passed is
told without a query of its own.

If the task fails (Postgres unreachable), readers fall back to the store (and
see the error there, as before); the next `take` restarts the task, at most
once per RETRY_AFTER seconds. On drain (`Hub.closing`) the task wakes every
reader and ends.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg

from runwire.store._hub import Hub
from runwire.store._log import LogEntry, LogFilter
from runwire.v1 import events_pb2

__all__ = ["LogTail", "TailEntry"]

log = logging.getLogger(__name__)

# Entries per read of the tail, and the window's default bounds.
TAIL_PAGE = 1000
MAX_ENTRIES = 10_000
MAX_BYTES = 16 << 20
RETRY_AFTER = 1.0  # seconds between restarts of a failed tail task

_READ = """WITH h AS (SELECT pos, pruned_through FROM event_log_head)
SELECT h.pos AS head, h.pruned_through, x.pos, x.run_id, x.seq, x.kind, x.event,
       x.flow_name, x.labels, x.status
FROM h LEFT JOIN LATERAL (
    SELECT e.pos, e.run_id, e.seq, e.kind, e.event,
           r.flow_name, r.labels::text AS labels, r.status
    FROM events e LEFT JOIN runs r ON r.run_id = e.run_id
    WHERE e.pos > $1 AND e.pos <= h.pos
    ORDER BY e.pos LIMIT $2
) x ON true
ORDER BY x.pos"""


class TailEntry:
    """A log entry with the fields of its run that filters need (None: no run row)."""

    __slots__ = ("_node_id", "entry", "flow_name", "labels", "status")

    def __init__(
        self, entry: LogEntry, flow_name: str | None, labels: dict[str, Any], status: int | None
    ) -> None:
        self.entry = entry
        self.flow_name = flow_name
        self.labels = labels
        self.status = status
        self._node_id: str | None = None

    def node_id(self) -> str:
        """The event's node id, decoded once for every reader that asks."""
        if self._node_id is None:
            self._node_id = events_pb2.RunEvent.FromString(self.entry.event).node_id
        return self._node_id

    def selected_by(self, flt: LogFilter) -> bool:
        """What `read_log` with `flt` would return for this entry."""
        if not flt.selects_run(self.flow_name, self.labels, self.status):
            return False
        if flt.selects_all_events:
            return True
        return flt.selects(self.entry.kind, self.entry.event, node_id=self.node_id)


async def read_tail(
    conn: asyncpg.Connection | asyncpg.Pool, after_pos: int, limit: int = TAIL_PAGE
) -> tuple[list[TailEntry], int, int]:
    """Committed entries after `after_pos` (at most `limit`) with their run fields,
    the position looked through, and the retention horizon, all in one snapshot."""
    records = await conn.fetch(_READ, after_pos, limit)
    if not records:  # no counter row: the migration is missing
        raise RuntimeError("event_log_head is empty; migration 0005 did not run")
    head = int(records[0]["head"])
    horizon = int(records[0]["pruned_through"])
    entries = [
        TailEntry(
            LogEntry(r["pos"], r["run_id"], r["seq"], r["kind"], r["event"]),
            r["flow_name"],
            json.loads(r["labels"]) if r["labels"] is not None else {},
            r["status"],
        )
        for r in records
        if r["pos"] is not None
    ]
    looked = entries[-1].entry.pos if len(entries) >= limit else max(after_pos, head)
    return entries, looked, horizon


class LogTail:
    """The per-process shared tail reader (see the module doc)."""

    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        hub: Hub,
        *,
        max_entries: int = MAX_ENTRIES,
        max_bytes: int = MAX_BYTES,
        page: int = TAIL_PAGE,
    ) -> None:
        self._pool = pool
        self._hub = hub
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.page = page
        self._readers = 0
        self._task: asyncio.Task[None] | None = None
        self._failed_at = -RETRY_AFTER
        # Every committed entry in (_start, _looked] is in _entries (while live).
        self._live = False
        self._start = 0
        self._looked = 0
        self._horizon = 0
        self._entries: list[TailEntry] = []
        self._positions: list[int] = []
        self._bytes = 0
        self._advanced = asyncio.Event()
        # Counters for tests and benchmarks.
        self.reads = 0  # statements the tail ran
        self.dropped = 0  # entries that left the window by its bounds

    @property
    def readers(self) -> int:
        """Attached readers."""
        return self._readers

    @property
    def live(self) -> bool:
        """The task is reading: `take` answers from the window (when it reaches back)."""
        return self._live

    @property
    def window(self) -> tuple[int, int, int]:
        """(start, looked, entries): the window covers positions in (start, looked]."""
        return self._start, self._looked, len(self._entries)

    @contextlib.contextmanager
    def attached(self) -> Iterator[None]:
        """While inside, the tail runs (it stops when the last reader leaves)."""
        self._readers += 1
        self._ensure_running()
        try:
            yield
        finally:
            self._readers -= 1
            if self._readers == 0 and self._task is not None:
                self._task.cancel()
                self._task = None
                self._reset()

    def take(
        self, after_pos: int, limit: int, flt: LogFilter
    ) -> tuple[list[LogEntry], int, int] | None:
        """Entries after `after_pos` that `flt` selects (at most `limit`), the
        position looked through, and the horizon; None when the window does not
        reach back to `after_pos` (read the store instead)."""
        if not self._live or after_pos < self._start:
            self._ensure_running()
            return None
        entries = self._entries
        out: list[LogEntry] = []
        looked = max(after_pos, self._looked)
        for i in range(bisect.bisect_right(self._positions, after_pos), len(entries)):
            e = entries[i]
            if e.selected_by(flt):
                out.append(e.entry)
                if len(out) >= limit:
                    looked = e.entry.pos
                    break
        return out, looked, self._horizon

    async def wait_past(self, pos: int) -> None:
        """Until the tail has looked past `pos`, or it stopped (then read the store)."""
        while self._live and self._looked <= pos and not self._hub.closing:
            await self._advanced.wait()

    def _wake(self) -> None:
        event, self._advanced = self._advanced, asyncio.Event()
        event.set()

    def _reset(self) -> None:
        self._live = False
        self._entries, self._positions, self._bytes = [], [], 0
        self._wake()

    def _ensure_running(self) -> None:
        if (
            self._task is None
            and self._readers > 0
            and not self._hub.closing
            and time.monotonic() - self._failed_at >= RETRY_AFTER
        ):
            self._task = asyncio.create_task(self._run(), name="runwire-log-tail")

    def _add(self, entries: list[TailEntry], looked: int, horizon: int) -> None:
        self._entries.extend(entries)
        self._positions.extend(e.entry.pos for e in entries)
        self._bytes += sum(len(e.entry.event) for e in entries)
        self._looked = looked
        self._horizon = horizon
        drop = 0
        size = self._bytes
        count = len(self._entries)
        while count - drop > self.max_entries or (size > self.max_bytes and drop < count):
            size -= len(self._entries[drop].entry.event)
            drop += 1
        if drop:
            self._start = self._positions[drop - 1]
            del self._entries[:drop]
            del self._positions[:drop]
            self._bytes = size
            self.dropped += drop

    async def _run(self) -> None:
        me = asyncio.current_task()
        try:
            pool = self._pool()
            record = await pool.fetchrow("SELECT pos, pruned_through FROM event_log_head")
            self.reads += 1
            if record is None:
                raise RuntimeError("event_log_head is empty; migration 0005 did not run")
            self._start = self._looked = int(record["pos"])
            self._horizon = int(record["pruned_through"])
            self._entries, self._positions, self._bytes = [], [], 0
            self._live = True
            self._wake()
            while not self._hub.closing:
                # Taken before the read: a commit after the read has set it.
                changed = self._hub.log_changed()
                entries, looked, horizon = await read_tail(pool, self._looked, self.page)
                self.reads += 1
                advanced = looked > self._looked or horizon != self._horizon
                self._add(entries, looked, horizon)
                if advanced:
                    self._wake()
                if len(entries) >= self.page:
                    continue  # there may be more: read again before waiting
                await changed.wait()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("shared log tail failed; readers read the store", exc_info=True)
            self._failed_at = time.monotonic()
        finally:
            if self._task is me:
                self._task = None
                self._reset()
