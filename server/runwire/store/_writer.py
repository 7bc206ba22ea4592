"""Group commit: events from every run are gathered for a few milliseconds and
committed in one transaction, then handed to watchers (durable before visible)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field

import asyncpg

from runwire.engine import RunPatch
from runwire.store._framing import frame_event
from runwire.store._hub import EVENTS_CHANNEL, Chunk, Hub
from runwire.v1 import events_pb2

__all__ = ["EventWriter"]

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    run_id: str
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
    error = COALESCE($8::jsonb, error)
WHERE run_id = $1
"""


class EventWriter:
    """The process's single event writer (implements engine.Journal)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        hub: Hub,
        *,
        owner_id: str,
        interval: float = 0.004,
        max_pending: int = 100_000,
    ) -> None:
        self._pool = pool
        self._hub = hub
        self._owner_id = owner_id
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

    def start(self) -> None:
        """Begin committing in the background."""
        self._task = asyncio.create_task(self._run(), name="runwire-event-writer")

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
            pending = self._batch[run_id] = _Pending(run_id)
        for event in events:
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
            await self._committed.wait_for(lambda: self._committed_gen >= target)

    def holds(self, run_id: str) -> bool:
        """False once an event of the run was dropped because another server owns it."""
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
        while True:
            try:
                await self._commit(batch)
                return
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                # The database went away: keep the batch and retry. Inserts are
                # idempotent (ON CONFLICT DO NOTHING), so a commit whose reply
                # was lost is harmless to repeat.
                log.warning("event commit failed (%s); retrying in %.2fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _commit(self, batch: dict[str, _Pending]) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            # Fencing: only the lease holder may extend a run's stream. Locking
            # the rows also keeps a takeover (FOR UPDATE SKIP LOCKED) from
            # claiming a run while its events are being committed.
            owned = {
                r["run_id"]
                for r in await conn.fetch(
                    "SELECT run_id FROM runs WHERE run_id = ANY($1) AND owner_id = $2 FOR UPDATE",
                    list(batch),
                    self._owner_id,
                )
            }
            kept = [p for p in batch.values() if p.run_id in owned]
            for p in batch.values():
                if p.run_id not in owned:
                    self.events_fenced += len(p.seqs)
                    self._fenced_runs.add(p.run_id)
                    log.error(
                        "dropping %d events of run %s: this server no longer holds its lease",
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
                await conn.executemany(_UPDATE_RUN, [_update_args(p) for p in kept])
            notices = [f"{self._hub.origin}|{p.run_id}:{p.seqs[-1]}" for p in kept if p.seqs]
            if notices:
                # Delivered to listeners on commit, never before.
                await conn.execute(
                    "SELECT pg_notify($1, n) FROM unnest($2::text[]) AS n", EVENTS_CHANNEL, notices
                )
        self.batches_committed += 1
        self.events_committed += len(seqs)
        for p in kept:
            for chunk in _chunks(p):
                self._hub.publish(p.run_id, chunk)

    async def stop(self) -> None:
        """Commit what is pending, then stop."""
        if self._task is None:
            return
        if self._batch:
            await self.flush()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
