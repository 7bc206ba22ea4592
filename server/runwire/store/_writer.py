"""Group commit: events from every run are committed in one statement (one
transaction, one round trip), then handed to watchers (durable before visible).
An idle writer commits at once; under load a batch is whatever accumulated while
the previous commit was in flight, up to a bounded size."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg

from runwire.engine import MAX_EVENT_BYTES, JournalFailed, RunPatch, bound_event
from runwire.metrics import NOOP_METRICS, Metrics
from runwire.store._framing import frame_event
from runwire.store._hub import EVENTS_CHANNEL, Chunk, Hub
from runwire.store._transient import is_transient
from runwire.v1 import events_pb2

__all__ = ["EventWriter", "WriterFailed"]

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    run_id: str
    life: int = 0  # the run's life in this writer when these events were appended
    seqs: list[int] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)
    patch: dict[str, object] = field(default_factory=dict)


@dataclass
class _Append:
    """One append(): events of one run, serialized, and the run patch they carry."""

    run_id: str
    life: int
    patch: RunPatch | None
    seqs: list[int] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)
    size: int = 0
    gen: int = 0


def _merge_patch(into: dict[str, object], patch: RunPatch) -> None:
    for name in ("status", "succeeded_node_count", "failed_node_count", "skipped_node_count"):
        value = getattr(patch, name)
        if value is not None:
            into[name] = value
    if patch.finished:
        into["finished"] = True
    if patch.error is not None:
        into["error"] = json.dumps(
            {
                "reason": patch.error.reason,
                "message": patch.error.message,
                "exit_code": patch.error.exit_code,
            }
        )


# Live chunks are cut at this size so one commit of a chatty run never makes
# a WatchRunResponse bigger than WatchRun's response budget.
CHUNK_BYTES = 256 * 1024


def _chunks(p: _Pending) -> list[Chunk]:
    out: list[Chunk] = []
    start, size = 0, 0
    parts: list[bytes] = []
    ends: list[int] = []

    def cut(stop: int, completed: bool) -> None:
        out.append(
            Chunk(
                p.seqs[start],
                p.seqs[stop - 1],
                b"".join(parts),
                completed,
                tuple(p.kinds[start:stop]),
                tuple(ends),
            )
        )

    for i, payload in enumerate(p.payloads):
        framed = frame_event(payload)
        if parts and size + len(framed) > CHUNK_BYTES:
            cut(i, False)
            start, size, parts, ends = i, 0, [], []
        parts.append(framed)
        size += len(framed)
        ends.append(size)
    if parts:
        cut(len(p.payloads), p.kinds[-1] == "run_completed")
    return out


# One statement is one transaction and, once prepared, one round trip: the
# `locked` SELECT fences (only the holder of an unexpired lease may extend a
# run's stream; it locks the rows, so a takeover's FOR UPDATE SKIP LOCKED
# cannot claim a run while its events commit) and reads each run's last
# committed seq from the row's newest version; `proved` applies the run
# patches; the INSERT writes only the events of runs proved, and only those
# past the run's last committed seq; pg_notify tells other processes on
# commit, never before.
#
# Why not INSERT ... ON CONFLICT DO NOTHING for idempotence: a speculative
# insertion per row costs an extra index probe and WAL record each, and
# measured about a third of the statement's Postgres time (see the commit
# that made this change). A batch is retried only after a lost reply; whatever of it
# committed then committed whole, with the run's last_seq, so `seq > prev_seq`
# skips exactly it. Only this statement inserts events.
#
# Log positions (events.pos, read across runs by runwire.store._log): the
# `head` UPDATE takes $17 (the batch's event count) positions from the one-row
# counter event_log_head, after the run rows are locked (nothing else locks
# the counter: no lock cycle). Its row lock is held until this transaction
# commits, so a second writer (a worker or another replica) takes its
# positions only after this commit is visible: positions follow commit order
# and every uncommitted position lies above every committed one. A reader
# that has seen position N therefore never finds a committed event below N
# later. The price is that commits of different processes serialise on that
# row for the tail of the statement and the COMMIT itself; within a process
# there is one writer connection, so they were serial already. (The
# alternative, an xid8 visibility watermark, keeps commits concurrent but
# lets any long transaction in the database hold every cross-run stream
# back, and orders by transaction start, not commit.) Events of a fenced run
# and a batch retried after a lost reply leave unused positions behind:
# positions are increasing, not dense.
_COMMIT = """-- runwire: event commit
WITH locked AS (
    SELECT r.run_id, r.last_seq AS prev_seq FROM runs AS r
    WHERE r.run_id = ANY($1::text[]) AND r.owner_id = $9 AND r.lease_expire_time > now()
    FOR UPDATE
), proved AS (
    UPDATE runs AS r SET
        last_seq = GREATEST(r.last_seq, b.last_seq),
        update_time = now(),
        status = COALESCE(b.status, r.status),
        succeeded_node_count = COALESCE(b.succeeded, r.succeeded_node_count),
        failed_node_count = COALESCE(b.failed, r.failed_node_count),
        skipped_node_count = COALESCE(b.skipped, r.skipped_node_count),
        end_time = CASE WHEN b.finished THEN now() ELSE r.end_time END,
        error = COALESCE(b.error::jsonb, r.error),
        -- A commit proves the lease: it extends it like a renewal does.
        lease_expire_time = GREATEST(r.lease_expire_time, now() + make_interval(secs => $10))
    FROM locked AS l,
         unnest($1::text[], $2::bigint[], $3::smallint[], $4::int[], $5::int[], $6::int[],
                $7::bool[], $8::text[])
         AS b(run_id, last_seq, status, succeeded, failed, skipped, finished, error)
    WHERE r.run_id = l.run_id AND b.run_id = l.run_id
    RETURNING r.run_id, l.prev_seq, b.last_seq
), head AS (
    UPDATE event_log_head SET pos = pos + $17
    WHERE $17 > 0 AND EXISTS (SELECT 1 FROM proved)
    RETURNING pos - $17 AS base
), written AS (
    INSERT INTO events (run_id, seq, kind, event, pos)
    SELECT e.run_id, e.seq, e.kind, e.event, head.base + e.ord
    FROM (
        SELECT ($1::text[])[u.run] AS run_id, u.seq, u.kind, u.ord,
               substring($14::bytea FROM u.off + 1 FOR u.len) AS event
        FROM unnest(string_to_array($11, ',')::int[], string_to_array($12, ',')::bigint[],
                    string_to_array($13, ','), string_to_array($18, ',')::int[],
                    string_to_array($19, ',')::int[])
             WITH ORDINALITY AS u(run, seq, kind, off, len, ord)
    ) AS e
    JOIN proved AS p ON p.run_id = e.run_id AND e.seq > p.prev_seq
    CROSS JOIN head
)
SELECT run_id, CASE WHEN last_seq > 0
    THEN pg_notify($15, $16 || '|' || run_id || ':' || last_seq) END AS notified
FROM proved
"""


def commit_args(
    runs: list[_Pending], owner_id: str, lease_seconds: float, origin: str
) -> tuple[object, ...]:
    """The parameters of `_COMMIT` for one batch, runs in the order given.

    The events go as one bytea of their payloads end to end and comma-separated
    texts of their run (an index into the runs), seq, kind, offset and length,
    which Postgres splits: asyncpg encodes an array element by element with two
    abstract-base-class checks each, about 1 µs per element (2.2 ms of client
    CPU for a batch of 2 000 events in four arrays, against 0.05 ms for the
    texts and the blob; measured in the commit that made this change).
    """
    payloads = [b for p in runs for b in p.payloads]
    lengths = list(map(len, payloads))
    return (
        [p.run_id for p in runs],
        [p.seqs[-1] if p.seqs else 0 for p in runs],
        [p.patch.get("status") for p in runs],
        [p.patch.get("succeeded_node_count") for p in runs],
        [p.patch.get("failed_node_count") for p in runs],
        [p.patch.get("skipped_node_count") for p in runs],
        [bool(p.patch.get("finished", False)) for p in runs],
        [p.patch.get("error") for p in runs],
        owner_id,
        lease_seconds,
        ",".join(",".join(itertools.repeat(str(i), len(p.seqs))) for i, p in enumerate(runs, 1)),
        ",".join(str(s) for p in runs for s in p.seqs),
        ",".join(k for p in runs for k in p.kinds),
        b"".join(payloads),
        EVENTS_CHANNEL,
        origin,
        len(payloads),
        ",".join(map(str, itertools.accumulate(lengths[:-1], initial=0))) if lengths else "",
        ",".join(map(str, lengths)),
    )


class WriterFailed(JournalFailed):
    """The event writer stopped for good: nothing appended from now on will commit."""


# A batch that fails with an error no restart explains is tried this often,
# then the writer gives up and the server dies loudly (a poison batch retried
# forever would leave it alive but committing nothing).
_PERMANENT_ATTEMPTS = 3


class EventWriter:
    """The process's single event writer (implements engine.Journal).

    It commits at once when it is idle; what is appended while a commit is in
    flight makes the next batch (group commit under load only), cut at
    `max_batch_events` / `max_batch_bytes` so that no loop step of the write
    path handles an unbounded batch. It owns one connection (made again after
    a transient error) and commits a batch in one statement.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        hub: Hub,
        *,
        owner_id: str,
        lease_seconds: float = 15.0,
        interval: float = 0.0,
        max_pending: int = 100_000,
        max_batch_events: int = 2_000,
        max_batch_bytes: int = 1 << 20,
        commit_timeout: float = 10.0,
        on_health: Callable[[bool], None] | None = None,
        metrics: Metrics = NOOP_METRICS,
    ) -> None:
        self._connect = connect
        self._metrics = metrics
        self._conn: asyncpg.Connection | None = None
        self._hub = hub
        self._owner_id = owner_id
        self._lease_seconds = lease_seconds
        self._commit_timeout = commit_timeout
        self._on_health = on_health
        self.failing_since: float | None = None  # monotonic time of the first failed try
        self._interval = interval
        self._max_pending = max_pending
        self._max_batch_events = max_batch_events
        self._max_batch_bytes = max_batch_bytes
        self._queue: deque[_Append] = deque()
        self._count = 0
        self._wakeup = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._committed = asyncio.Condition()
        self._appended_gen = 0
        self._committed_gen = 0
        self._task: asyncio.Task[None] | None = None
        # Runs whose events the current commit attempt carries, and its end.
        self._in_flight: frozenset[str] = frozenset()
        self._attempt_over = asyncio.Event()
        self.batches_committed = 0
        self.events_committed = 0
        self.events_fenced = 0  # events dropped because another server owns their run
        self.largest_batch = 0  # events in the largest batch sent
        self._fenced_runs: set[str] = set()
        # A run's life ends when this server stops executing it without
        # finishing it (discard): events of an earlier life are never committed.
        self._lives: dict[str, int] = {}

    def start(self) -> None:
        """Begin committing in the background."""
        self._task = asyncio.create_task(self._run(), name="runwire-event-writer")
        self._task.add_done_callback(lambda _t: asyncio.ensure_future(self._wake_flushers()))

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The background task; its end (other than by stop()) is fatal to the server."""
        return self._task

    def _dead(self) -> bool:
        return self._task is not None and self._task.done()

    async def _wake_flushers(self) -> None:
        async with self._committed:
            self._committed.notify_all()

    async def wait_for_space(self) -> None:
        """Wait while too many events are pending commit."""
        while self._count >= self._max_pending:
            self._space.clear()
            await self._space.wait()

    def append(
        self, run_id: str, events: list[events_pb2.RunEvent], patch: RunPatch | None = None
    ) -> None:
        """Queue events for the next commit; never blocks."""
        item = _Append(run_id, self._lives.get(run_id, 0), patch)
        for event in events:
            payload = event.SerializeToString(deterministic=True)
            if len(payload) > MAX_EVENT_BYTES:
                # new_event bounds them; this is the backstop. (Not ByteSize()
                # first: upb computes it by serializing, so it would cost a
                # second encoding of every event.)
                event = bound_event(event)
                payload = event.SerializeToString(deterministic=True)
            item.seqs.append(event.seq)
            item.kinds.append(event.WhichOneof("event") or "")
            item.payloads.append(payload)
            item.size += len(payload)
        self._count += len(events)
        self._appended_gen += 1
        item.gen = self._appended_gen
        self._queue.append(item)
        self._wakeup.set()

    async def flush(self) -> None:
        """Wait until everything appended before this call is committed."""
        target = self._appended_gen
        async with self._committed:
            await self._committed.wait_for(lambda: self._committed_gen >= target or self._dead())
        if self._committed_gen < target:
            raise WriterFailed("the event writer stopped; pending events were not committed")

    def discard(self, run_id: str) -> int:
        """Forget the uncommitted events of a run this server stopped executing.

        Call it after the run's executor has stopped and before the run may be
        claimed again (and await `settled` before claiming): a takeover
        continues from the committed stream, and an earlier life's events
        (queued, or in a batch being retried) must not land on top of it.
        Returns how many queued events were dropped.
        """
        self._lives[run_id] = self._lives.get(run_id, 0) + 1
        self._fenced_runs.discard(run_id)
        kept: deque[_Append] = deque()
        dropped = 0
        for item in self._queue:
            if item.run_id == run_id:
                dropped += len(item.seqs)
            else:
                kept.append(item)
        if dropped or len(kept) != len(self._queue):
            self._queue = kept
            self._count -= dropped
            self._wakeup.set()  # flushers of the dropped appends are answered
        return dropped

    async def settled(self, run_id: str) -> None:
        """Wait until no commit in flight carries events of the run.

        A discarded life's events are checked when a commit is sent, so one
        sent just before `discard` may still land; a claim made after this
        returns reads a stream nothing of the earlier life is added to.
        """
        while run_id in self._in_flight:
            await self._attempt_over.wait()

    @property
    def pending(self) -> int:
        """Events appended and not yet taken into a commit."""
        return self._count

    def holds(self, run_id: str) -> bool:
        """False once an event of the run was dropped because this server could not
        prove it holds the run's lease (another server owns it, or it expired)."""
        return run_id not in self._fenced_runs

    def _take(self) -> tuple[dict[str, _Pending], int]:
        """The next batch, oldest appends first, and the generation it completes."""
        batch: dict[str, _Pending] = {}
        events = size = 0
        gen = self._committed_gen
        queue = self._queue
        while queue and (
            not batch or (events < self._max_batch_events and size < self._max_batch_bytes)
        ):
            item = queue.popleft()
            pending = batch.get(item.run_id)
            if pending is None:
                pending = batch[item.run_id] = _Pending(item.run_id, item.life)
            pending.seqs += item.seqs
            pending.kinds += item.kinds
            pending.payloads += item.payloads
            if item.patch is not None:
                _merge_patch(pending.patch, item.patch)
            events += len(item.seqs)
            size += item.size
            gen = item.gen
        self._count -= events
        self.largest_batch = max(self.largest_batch, events)
        if not queue:
            gen = self._appended_gen  # anything else appended was discarded
        return batch, gen

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            if self._interval > 0:
                # Optional gather: let concurrent runs add to this batch.
                await asyncio.sleep(self._interval)
            else:
                # One turn of the loop: whatever is ready to run (the runs
                # woken by the last commit, RPCs that arrived meanwhile) adds
                # to this batch first.
                await asyncio.sleep(0)
            self._wakeup.clear()
            batch, gen = self._take()
            if self._queue:
                self._wakeup.set()  # the rest makes the next batch, at once
            if self._count < self._max_pending:
                self._space.set()
            if batch:
                await self._commit_until_done(batch)
            async with self._committed:
                self._committed_gen = max(self._committed_gen, gen)
                self._committed.notify_all()

    async def _commit_until_done(self, batch: dict[str, _Pending]) -> None:
        backoff = 0.05
        permanent = 0
        while True:
            self._drop_stale(batch)
            if not batch:
                return
            self._in_flight = frozenset(batch)
            try:
                async with asyncio.timeout(self._commit_timeout):
                    await self._commit(batch)
            except Exception as exc:
                # Keep the batch and retry on a fresh connection (the failed one
                # was terminated). Inserts are idempotent under (run_id, seq) and
                # the run update sets absolute values, so repeating a commit
                # whose reply was lost is harmless.
                if not is_transient(exc):
                    permanent += 1
                    if permanent >= _PERMANENT_ATTEMPTS:
                        log.critical(
                            "event commit failed %d times with %r; the writer gives up",
                            permanent,
                            exc,
                            exc_info=exc,
                        )
                        raise
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                    if self._on_health is not None:
                        self._on_health(False)
                log.warning(
                    "event commit failed (%s: %s); retrying in %.2fs",
                    type(exc).__name__,
                    exc,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            finally:
                self._in_flight = frozenset()
                self._attempt_over.set()
                self._attempt_over = asyncio.Event()
            if self.failing_since is not None:
                log.warning(
                    "event commits work again after %.1fs", time.monotonic() - self.failing_since
                )
                self.failing_since = None
                if self._on_health is not None:
                    self._on_health(True)
            return

    def _stale(self, p: _Pending) -> bool:
        return p.life != self._lives.get(p.run_id, 0)

    def _drop_stale(self, batch: dict[str, _Pending]) -> None:
        for p in [p for p in batch.values() if self._stale(p)]:
            log.warning(
                "not committing %d events of run %s: this server stopped executing it",
                len(p.seqs),
                p.run_id,
            )
            del batch[p.run_id]

    async def _commit(self, batch: dict[str, _Pending]) -> None:
        if self._conn is None or self._conn.is_closed():
            self._conn = await self._connect()
        conn = self._conn
        runs = list(batch.values())
        began = time.perf_counter()
        try:
            rows = await conn.fetch(
                _COMMIT, *commit_args(runs, self._owner_id, self._lease_seconds, self._hub.origin)
            )
        except BaseException:
            # Whatever state the connection is in now (mid-statement, a dead
            # socket, a confused protocol), it is not used again.
            self._conn = None
            with contextlib.suppress(Exception):
                conn.terminate()
            raise
        elapsed = time.perf_counter() - began
        proved = {r["run_id"] for r in rows}
        events = 0
        for p in runs:
            if p.run_id in proved:
                events += len(p.seqs)
            elif self._stale(p):
                # discard() came while the commit was in flight: the server
                # stopped executing the run, which is not a fencing.
                log.warning(
                    "%d events of run %s were not committed: its lease was gone, and this "
                    "server stopped executing it meanwhile",
                    len(p.seqs),
                    p.run_id,
                )
            else:
                self.events_fenced += len(p.seqs)
                self._fenced_runs.add(p.run_id)
                log.error(
                    "dropping %d events of run %s: this server cannot prove it holds "
                    "its lease (another server owns it, or it expired)",
                    len(p.seqs),
                    p.run_id,
                )
        self.batches_committed += 1
        self.events_committed += events
        # One record per batch, never per event.
        m = self._metrics
        m.events_committed.add(events)
        m.commit_batch_size.record(events)
        m.commit_duration.record(elapsed)
        for p in runs:
            if p.run_id in proved and p.seqs:
                for chunk in _chunks(p):
                    self._hub.publish(p.run_id, chunk)
        if events:
            self._hub.wake_log()  # this process's cross-run readers (see store/_log.py)

    async def stop(self, wait: float | None = None) -> None:
        """Commit what is pending (waiting at most `wait` seconds), then stop."""
        if self._task is None:
            return
        if self._queue and not self._dead():
            try:
                async with asyncio.timeout(wait):
                    await self.flush()
            except (TimeoutError, WriterFailed):
                log.error(
                    "stopping with %d events not committed; their runs continue from their "
                    "last committed event on the next owner",
                    self._count,
                )
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task  # a writer that died already said why
        if self._conn is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self._conn.close()
            self._conn = None
