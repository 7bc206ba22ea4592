"""Group commit: events from every run are gathered for a few milliseconds and
committed in one transaction, then handed to watchers (durable before visible)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg

from runwire.engine import MAX_EVENT_BYTES, JournalFailed, RunPatch, bound_event
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
    for i, payload in enumerate(p.payloads):
        framed = frame_event(payload)
        if parts and size + len(framed) > CHUNK_BYTES:
            out.append(Chunk(p.seqs[start], p.seqs[i - 1], b"".join(parts), completed=False))
            start, size, parts = i, 0, []
        parts.append(framed)
        size += len(framed)
    if parts:
        out.append(
            Chunk(p.seqs[start], p.seqs[-1], b"".join(parts), p.kinds[-1] == "run_completed")
        )
    return out


def _update_args(p: _Pending) -> tuple[object, ...]:
    patch = p.patch
    return (
        p.run_id,
        p.seqs[-1] if p.seqs else 0,
        patch.get("status"),
        patch.get("succeeded_node_count"),
        patch.get("failed_node_count"),
        patch.get("skipped_node_count"),
        bool(patch.get("finished", False)),
        patch.get("error"),
    )


_INSERT_EVENTS = """
INSERT INTO events (run_id, seq, kind, event)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bytea[])
ON CONFLICT DO NOTHING
"""

_UPDATE_RUN = """
UPDATE runs SET
    last_seq = GREATEST(last_seq, $2),
    update_time = now(),
    status = COALESCE($3, status),
    succeeded_node_count = COALESCE($4, succeeded_node_count),
    failed_node_count = COALESCE($5, failed_node_count),
    skipped_node_count = COALESCE($6, skipped_node_count),
    end_time = CASE WHEN $7 THEN now() ELSE end_time END,
    error = COALESCE($8::jsonb, error),
    lease_expire_time = GREATEST(lease_expire_time, now() + make_interval(secs => $9))
WHERE run_id = $1
"""


class WriterFailed(JournalFailed):
    """The event writer stopped for good: nothing appended from now on will commit."""


# A batch that fails with an error no restart explains is tried this often,
# then the writer gives up and the server dies loudly (a poison batch retried
# forever would leave it alive but committing nothing).
_PERMANENT_ATTEMPTS = 3


class EventWriter:
    """The process's single event writer (implements engine.Journal)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        hub: Hub,
        *,
        owner_id: str,
        lease_seconds: float = 15.0,
        interval: float = 0.004,
        max_pending: int = 100_000,
        commit_timeout: float = 10.0,
        on_health: Callable[[bool], None] | None = None,
    ) -> None:
        self._pool = pool
        self._hub = hub
        self._owner_id = owner_id
        self._lease_seconds = lease_seconds
        self._commit_timeout = commit_timeout
        self._on_health = on_health
        self.failing_since: float | None = None  # monotonic time of the first failed try
        self._interval = interval
        self._max_pending = max_pending
        self._batch: dict[str, _Pending] = {}
        self._count = 0
        self._wakeup = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._committed = asyncio.Condition()
        self._appended_gen = 0
        self._committed_gen = 0
        self._task: asyncio.Task[None] | None = None
        self.batches_committed = 0
        self.events_committed = 0
        self.events_fenced = 0  # events dropped because another server owns their run
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
        pending = self._batch.get(run_id)
        if pending is None:
            pending = self._batch[run_id] = _Pending(run_id, self._lives.get(run_id, 0))
        for event in events:
            if event.ByteSize() > MAX_EVENT_BYTES:
                event = bound_event(event)  # new_event bounds them; this is the backstop
            pending.seqs.append(event.seq)
            pending.kinds.append(event.WhichOneof("event") or "")
            pending.payloads.append(event.SerializeToString(deterministic=True))
        if patch is not None:
            _merge_patch(pending.patch, patch)
        self._count += len(events)
        self._appended_gen += 1
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
        claimed again: a takeover continues from the committed stream, and an
        earlier life's events (queued, or in a batch being retried) must not
        land on top of it. Returns how many queued events were dropped.
        """
        self._lives[run_id] = self._lives.get(run_id, 0) + 1
        self._fenced_runs.discard(run_id)
        pending = self._batch.pop(run_id, None)
        if pending is None:
            return 0
        self._count -= len(pending.seqs)
        return len(pending.seqs)

    def holds(self, run_id: str) -> bool:
        """False once an event of the run was dropped because this server could not
        prove it holds the run's lease (another server owns it, or it expired)."""
        return run_id not in self._fenced_runs

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            # Gather: let concurrent runs add to this batch before committing it.
            await asyncio.sleep(self._interval)
            self._wakeup.clear()
            batch, gen = self._batch, self._appended_gen
            self._batch, self._count = {}, 0
            self._space.set()
            await self._commit_until_done(batch)
            async with self._committed:
                self._committed_gen = gen
                self._committed.notify_all()

    async def _commit_until_done(self, batch: dict[str, _Pending]) -> None:
        backoff = 0.05
        permanent = 0
        while True:
            try:
                await asyncio.wait_for(self._commit(batch), self._commit_timeout)
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
            if self.failing_since is not None:
                log.warning(
                    "event commits work again after %.1fs", time.monotonic() - self.failing_since
                )
                self.failing_since = None
                if self._on_health is not None:
                    self._on_health(True)
            return

    async def _commit(self, batch: dict[str, _Pending]) -> None:
        conn = await self._pool.acquire()
        try:
            kept, seqs = await self._commit_on(conn, batch)
        except BaseException:
            # Whatever state the connection is in now (mid-COMMIT, a dead
            # socket, a confused protocol), it is not used again. (The pool
            # may already have let go of a connection that died.)
            with contextlib.suppress(Exception):
                conn.terminate()
            raise
        finally:
            await self._pool.release(conn)
        self.batches_committed += 1
        self.events_committed += len(seqs)
        for p in kept:
            for chunk in _chunks(p):
                self._hub.publish(p.run_id, chunk)

    async def _commit_on(
        self, conn: asyncpg.pool.PoolConnectionProxy, batch: dict[str, _Pending]
    ) -> tuple[list[_Pending], list[int]]:
        async with conn.transaction():
            # Fencing: only the holder of an unexpired lease may extend a run's
            # stream. Locking the rows also keeps a takeover (FOR UPDATE SKIP
            # LOCKED) from claiming a run while its events are being committed.
            owned = {
                r["run_id"]
                for r in await conn.fetch(
                    """SELECT run_id FROM runs WHERE run_id = ANY($1) AND owner_id = $2
                         AND lease_expire_time > now() FOR UPDATE""",
                    list(batch),
                    self._owner_id,
                )
            }
            # Checked under the row locks: a claim cannot take the run until this
            # transaction ends, and a discard() before the lock drops the events.
            stale = {p.run_id for p in batch.values() if p.life != self._lives.get(p.run_id, 0)}
            for p in batch.values():
                if p.run_id not in stale:
                    continue
                log.warning(
                    "not committing %d events of run %s: this server stopped executing it",
                    len(p.seqs),
                    p.run_id,
                )
                owned.discard(p.run_id)
            kept = [p for p in batch.values() if p.run_id in owned]
            for p in batch.values():
                if p.run_id not in owned and p.run_id not in stale:
                    self.events_fenced += len(p.seqs)
                    self._fenced_runs.add(p.run_id)
                    log.error(
                        "dropping %d events of run %s: this server cannot prove it holds "
                        "its lease (another server owns it, or it expired)",
                        len(p.seqs),
                        p.run_id,
                    )
            run_ids = [p.run_id for p in kept for _ in p.seqs]
            seqs = [s for p in kept for s in p.seqs]
            if seqs:
                await conn.execute(
                    _INSERT_EVENTS,
                    run_ids,
                    seqs,
                    [k for p in kept for k in p.kinds],
                    [b for p in kept for b in p.payloads],
                )
            if kept:
                # A commit proves the lease: it extends it like a renewal does.
                await conn.executemany(
                    _UPDATE_RUN, [(*_update_args(p), self._lease_seconds) for p in kept]
                )
            notices = [f"{self._hub.origin}|{p.run_id}:{p.seqs[-1]}" for p in kept if p.seqs]
            if notices:
                # Delivered to listeners on commit, never before.
                await conn.execute(
                    "SELECT pg_notify($1, n) FROM unnest($2::text[]) AS n", EVENTS_CHANNEL, notices
                )
        return kept, seqs

    async def stop(self, wait: float | None = None) -> None:
        """Commit what is pending (waiting at most `wait` seconds), then stop."""
        if self._task is None:
            return
        if self._batch and not self._dead():
            try:
                await asyncio.wait_for(self.flush(), wait)
            except (TimeoutError, WriterFailed):
                log.error(
                    "stopping with %d events not committed; their runs continue from their "
                    "last committed event on the next owner",
                    sum(len(p.seqs) for p in self._batch.values()),
                )
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task  # a writer that died already said why
