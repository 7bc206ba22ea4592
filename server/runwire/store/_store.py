"""Runs and events in Postgres."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from runwire.engine import LeaseLost
from runwire.store._hub import CONTROL_CHANNEL
from runwire.store._partitions import drop_pruned_partitions, ensure_partitions
from runwire.store._prune import count_prunable, existing_runs, prune_batch

__all__ = ["NewRun", "RunHead", "RunRow", "Store", "StoredEvent"]


@dataclass(frozen=True)
class NewRun:
    """What StartRun persists."""

    run_id: str
    flow_name: str
    flow_digest: str
    flow_json: dict[str, Any]
    inputs: dict[str, Any]
    labels: dict[str, str]
    request_id: str | None
    request_digest: str
    principal: str
    status: int
    node_count: int


@dataclass(frozen=True)
class RunRow:
    """A run as stored."""

    run_id: str
    flow_name: str
    flow_digest: str
    flow_json: dict[str, Any]
    inputs: dict[str, Any]
    labels: dict[str, str]
    request_id: str | None
    request_digest: str | None
    principal: str
    status: int
    create_time: datetime
    update_time: datetime
    end_time: datetime | None
    node_count: int
    succeeded_node_count: int
    failed_node_count: int
    skipped_node_count: int
    last_seq: int
    error: dict[str, Any] | None
    pause_requested: bool
    cancel_requested: bool
    control_principal: str
    control_reason: str
    owner_id: str | None

    @property
    def finished(self) -> bool:
        """True once RunCompleted is committed."""
        return self.end_time is not None


@dataclass(frozen=True)
class RunHead:
    """What a watcher needs of its run: how far its stream is committed and how it ended."""

    run_id: str
    last_seq: int
    status: int
    finished: bool  # RunCompleted is committed


@dataclass(frozen=True)
class StoredEvent:
    """One committed event, still in its binary encoding."""

    seq: int
    kind: str
    payload: bytes


@dataclass(frozen=True)
class GateRow:
    """A human gate as stored."""

    run_id: str
    node_id: str
    iteration: int
    kind: int
    message: str
    create_time: datetime
    expire_time: datetime | None
    decision: int | None
    principal: str
    comment: str
    output_json: str
    item_index: int | None = None  # the fan-out item held; None for the node's own gate
    call_index: int | None = None  # the visit's held tool call, from 1; None: no tool call
    tool_call_id: str = ""  # the model's id of that call
    context_json: str = ""  # what the engine needs to go on after the decision


_NODE_GATE = -1  # gates.item_index of a node's own gate
_NO_CALL = -1  # gates.call_index of a gate that holds no tool call


def _gate(r: asyncpg.Record) -> GateRow:
    return GateRow(
        run_id=r["run_id"],
        node_id=r["node_id"],
        iteration=r["iteration"],
        kind=r["kind"],
        message=r["message"],
        create_time=r["create_time"],
        expire_time=r["expire_time"],
        decision=r["decision"],
        principal=r["principal"],
        comment=r["comment"],
        output_json=r["output_json"],
        item_index=None if r["item_index"] == _NODE_GATE else r["item_index"],
        call_index=None if r["call_index"] == _NO_CALL else r["call_index"],
        tool_call_id=r["tool_call_id"],
        context_json=r["context_json"],
    )


def _row(r: asyncpg.Record) -> RunRow:
    def _j(v: Any) -> Any:
        return json.loads(v) if isinstance(v, str) else v

    return RunRow(
        run_id=r["run_id"],
        flow_name=r["flow_name"],
        flow_digest=r["flow_digest"],
        flow_json=_j(r["flow"]),
        inputs=_j(r["inputs"]),
        labels=_j(r["labels"]),
        request_id=r["request_id"],
        request_digest=r["request_digest"],
        principal=r["principal"],
        status=r["status"],
        create_time=r["create_time"],
        update_time=r["update_time"],
        end_time=r["end_time"],
        node_count=r["node_count"],
        succeeded_node_count=r["succeeded_node_count"],
        failed_node_count=r["failed_node_count"],
        skipped_node_count=r["skipped_node_count"],
        last_seq=r["last_seq"],
        error=_j(r["error"]),
        pause_requested=r["pause_requested"],
        cancel_requested=r["cancel_requested"],
        control_principal=r["control_principal"],
        control_reason=r["control_reason"],
        owner_id=r["owner_id"],
    )


def _created(run: NewRun, times: asyncpg.Record, owner_id: str) -> RunRow:
    """The row create_run inserted: what it wrote, the column defaults, and the
    times Postgres stamped (RETURNING only those: sending the flow's JSON back
    and parsing it again cost both sides CPU on every StartRun)."""
    return RunRow(
        run_id=run.run_id,
        flow_name=run.flow_name,
        flow_digest=run.flow_digest,
        flow_json=run.flow_json,
        inputs=run.inputs,
        labels=run.labels,
        request_id=run.request_id,
        request_digest=run.request_digest,
        principal=run.principal,
        status=run.status,
        create_time=times["create_time"],
        update_time=times["update_time"],
        end_time=None,
        node_count=run.node_count,
        succeeded_node_count=0,
        failed_node_count=0,
        skipped_node_count=0,
        last_seq=0,
        error=None,
        pause_requested=False,
        cancel_requested=False,
        control_principal="",
        control_reason="",
        owner_id=owner_id,
    )


async def _fence(conn: asyncpg.pool.PoolConnectionProxy, run_id: str, owner_id: str | None) -> None:
    """Raise LeaseLost unless `owner_id` (when given) holds the run's unexpired lease."""
    if owner_id is None:
        return
    held = await conn.fetchval(
        """SELECT 1 FROM runs WHERE run_id = $1 AND owner_id = $2
             AND lease_expire_time > now() FOR SHARE""",
        run_id,
        owner_id,
    )
    if held is None:
        raise LeaseLost(run_id)


class Store:
    """Queries over a connection pool; the event writer owns event inserts."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.event_reads = 0  # read_events and open_stream calls: watchers going to the store
        self.run_reads = 0  # get_run calls

    async def create_run(
        self, run: NewRun, *, owner_id: str, lease_seconds: float
    ) -> tuple[RunRow, bool]:
        """Insert the run; with a known request id return the existing run instead.

        Returns the row and whether it was created by this call.
        """
        async with self.pool.acquire() as conn:
            # Retention may delete the run holding the request id between the
            # two statements: then the insert is tried again, and succeeds.
            while True:
                record = await conn.fetchrow(
                    """INSERT INTO runs (run_id, flow_name, flow_digest, flow, inputs, labels,
                                         request_id, request_digest, principal, status, node_count,
                                         owner_id, lease_expire_time)
                       VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6::jsonb, $7, $8, $9, $10, $11,
                               $12, now() + make_interval(secs => $13))
                       ON CONFLICT (request_id) DO NOTHING
                       RETURNING create_time, update_time""",
                    run.run_id,
                    run.flow_name,
                    run.flow_digest,
                    json.dumps(run.flow_json),
                    json.dumps(run.inputs),
                    json.dumps(run.labels),
                    run.request_id,
                    run.request_digest,
                    run.principal,
                    run.status,
                    run.node_count,
                    owner_id,
                    lease_seconds,
                )
                if record is not None:
                    return _created(run, record, owner_id), True
                existing = await conn.fetchrow(
                    "SELECT * FROM runs WHERE request_id = $1", run.request_id
                )
                if existing is not None:
                    return _row(existing), False

    async def get_run(self, run_id: str) -> RunRow | None:
        """The run, or None."""
        self.run_reads += 1
        record = await self.pool.fetchrow("SELECT * FROM runs WHERE run_id = $1", run_id)
        return None if record is None else _row(record)

    async def list_runs(
        self,
        *,
        status: int | None,
        labels: dict[str, str],
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[RunRow]:
        """Runs newest first, after the (create_time, run_id) cursor."""
        clauses: list[str] = []
        args: list[Any] = []
        if status is not None:
            args.append(status)
            clauses.append(f"status = ${len(args)}")
        if labels:
            args.append(json.dumps(labels))
            clauses.append(f"labels @> ${len(args)}::jsonb")
        if after is not None:
            args.extend(after)
            clauses.append(f"(create_time, run_id) < (${len(args) - 1}, ${len(args)})")
        args.append(limit)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        records = await self.pool.fetch(
            f"SELECT * FROM runs {where} ORDER BY create_time DESC, run_id DESC LIMIT ${len(args)}",
            *args,
        )
        return [_row(r) for r in records]

    async def read_events(
        self, run_id: str, after_seq: int, limit: int
    ) -> list[StoredEvent] | None:
        """Committed events with seq > after_seq, in order; None when the run is
        not stored (never was, or retention deleted it).

        Events are read through their run, in one statement: retention deletes
        the run first and its events later (with their partition), so a page
        read after the run is gone is None, never a stream cut short.
        """
        opened = await self.open_stream(run_id, after_seq, limit)
        return None if opened is None else opened[1]

    async def open_stream(
        self, run_id: str, after_seq: int, limit: int
    ) -> tuple[RunHead, list[StoredEvent]] | None:
        """The run's head and its first page of committed events after `after_seq`,
        read in one statement (one snapshot); None when the run is not stored.

        WatchRun opens a stream with it: one round trip instead of a read of the
        run and then one of its events.
        """
        self.event_reads += 1
        records = await self.pool.fetch(
            """SELECT r.last_seq, r.status, r.end_time IS NOT NULL AS finished,
                      e.seq, e.kind, e.event
               FROM runs r
               LEFT JOIN LATERAL (
                   SELECT seq, kind, event FROM events
                   WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3) e ON true
               WHERE r.run_id = $1""",
            run_id,
            after_seq,
            limit,
        )
        if not records:
            return None
        first = records[0]
        head = RunHead(run_id, first["last_seq"], first["status"], first["finished"])
        return head, [
            StoredEvent(r["seq"], r["kind"], r["event"]) for r in records if r["seq"] is not None
        ]

    async def request_control(
        self, run_id: str, *, pause: bool | None, cancel: bool, principal: str, reason: str
    ) -> RunRow | None:
        """Record a pause/resume/cancel request and wake the run's owner.

        Who asked and why are recorded only by a request that changes what is
        asked (as the engine applies them): a second pause of a pausing run
        keeps the first one's reason. Otherwise the owner, reading the row on
        the first request's NOTIFY after the second request wrote it, would
        announce the pause with the second's (often empty) reason.
        """
        if cancel:
            changes = "NOT cancel_requested"
        elif pause is not None:
            changes = f"pause_requested IS DISTINCT FROM {'true' if pause else 'false'}"
        else:
            changes = "true"
        # SET expressions read the row as it was before this UPDATE.
        sets = [
            f"control_principal = CASE WHEN {changes} THEN $2 ELSE control_principal END",
            f"control_reason = CASE WHEN {changes} THEN $3 ELSE control_reason END",
            "update_time = now()",
        ]
        if pause is not None:
            sets.append(f"pause_requested = {'true' if pause else 'false'}")
        if cancel:
            sets.append("cancel_requested = true")
        async with self.pool.acquire() as conn, conn.transaction():
            record = await conn.fetchrow(
                f"UPDATE runs SET {', '.join(sets)} WHERE run_id = $1 AND end_time IS NULL RETURNING *",
                run_id,
                principal,
                reason,
            )
            if record is not None:
                await conn.execute("SELECT pg_notify($1, $2)", CONTROL_CHANNEL, run_id)
        return None if record is None else _row(record)

    # -- gates ------------------------------------------------------------------

    async def open_gate(
        self,
        run_id: str,
        node_id: str,
        iteration: int,
        kind: int,
        message: str,
        expire_time: datetime | None,
        *,
        owner_id: str | None = None,
        item_index: int | None = None,
        call_index: int | None = None,
        tool_call_id: str = "",
        context_json: str = "",
        renew: bool = False,
    ) -> GateRow:
        """Record a pending gate; returns the stored row (it may already be decided).

        With `owner_id`, raises LeaseLost unless that server holds the run's
        unexpired lease (the engine's own gates are fenced like its events).
        `renew` (a tool call's gate that was never announced) replaces a row a
        dead server left under the same key: it held another call.
        """
        item = _NODE_GATE if item_index is None else item_index
        call = _NO_CALL if call_index is None else call_index
        conflict = (
            """ON CONFLICT (run_id, node_id, iteration, kind, item_index, call_index) DO UPDATE
               SET message = EXCLUDED.message, expire_time = EXCLUDED.expire_time,
                   tool_call_id = EXCLUDED.tool_call_id, context_json = EXCLUDED.context_json,
                   create_time = now(), decision = NULL, principal = '', comment = '',
                   output_json = '', resolve_time = NULL"""
            if renew
            else "ON CONFLICT DO NOTHING"
        )
        async with self.pool.acquire() as conn, conn.transaction():
            await _fence(conn, run_id, owner_id)
            await conn.execute(
                f"""INSERT INTO gates (run_id, node_id, iteration, kind, message, expire_time,
                                      item_index, call_index, tool_call_id, context_json)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) {conflict}""",
                run_id,
                node_id,
                iteration,
                kind,
                message,
                expire_time,
                item,
                call,
                tool_call_id,
                context_json,
            )
            record = await conn.fetchrow(
                """SELECT * FROM gates
                   WHERE run_id = $1 AND node_id = $2 AND iteration = $3 AND kind = $4
                     AND item_index = $5 AND call_index = $6""",
                run_id,
                node_id,
                iteration,
                kind,
                item,
                call,
            )
        assert record is not None
        return _gate(record)

    async def gate_context(
        self, run_id: str, node_id: str, iteration: int, kind: int, *, call_index: int
    ) -> str:
        """The context_json a tool call's gate was opened with ("" when there is no such gate)."""
        value = await self.pool.fetchval(
            """SELECT context_json FROM gates
               WHERE run_id = $1 AND node_id = $2 AND iteration = $3 AND kind = $4
                 AND item_index = $5 AND call_index = $6""",
            run_id,
            node_id,
            iteration,
            kind,
            _NODE_GATE,
            call_index,
        )
        return str(value or "")

    async def decide_gate(
        self,
        run_id: str,
        node_id: str,
        kind: int,
        *,
        decision: int,
        principal: str,
        comment: str,
        output_json: str = "",
        iteration: int | None = None,
        owner_id: str | None = None,
        item_index: int | None = None,
        call_index: int | None = None,
        tool_call_id: str = "",
    ) -> tuple[GateRow | None, bool]:
        """Decide the node's newest gate of `kind` if it is pending, and wake its run's owner.

        Returns the gate (None when the node never had one) and whether this
        call decided it; when it did not, the row shows the decision that stands.
        With `owner_id` (the engine deciding an expiry or a cancel), raises
        LeaseLost unless that server holds the run's unexpired lease; a person's
        decision through the API (no `owner_id`) is taken on any replica.
        `call_index` (the engine) or `tool_call_id` (a person) names one held
        tool call; without either the newest gate of the node is meant.
        """
        item = _NODE_GATE if item_index is None else item_index
        async with self.pool.acquire() as conn, conn.transaction():
            await _fence(conn, run_id, owner_id)
            record = await conn.fetchrow(
                """SELECT * FROM gates WHERE run_id = $1 AND node_id = $2 AND kind = $3
                     AND ($4::int IS NULL OR iteration = $4) AND item_index = $5
                     AND ($6::int IS NULL OR call_index = $6)
                     AND ($7::text = '' OR tool_call_id = $7)
                   ORDER BY iteration DESC, call_index DESC LIMIT 1 FOR UPDATE""",
                run_id,
                node_id,
                kind,
                iteration,
                item,
                call_index,
                tool_call_id,
            )
            if record is None:
                return None, False
            if record["decision"] is not None:
                return _gate(record), False
            record = await conn.fetchrow(
                """UPDATE gates SET decision = $5, principal = $6, comment = $7, output_json = $8,
                          resolve_time = now()
                   WHERE run_id = $1 AND node_id = $2 AND iteration = $3 AND kind = $4
                     AND item_index = $9 AND call_index = $10
                   RETURNING *""",
                run_id,
                node_id,
                record["iteration"],
                kind,
                decision,
                principal,
                comment,
                output_json,
                item,
                record["call_index"],
            )
            await conn.execute("SELECT pg_notify($1, $2)", CONTROL_CHANNEL, run_id)
        assert record is not None
        return _gate(record), True

    async def gates(self, run_id: str, *, pending: bool | None = None) -> list[GateRow]:
        """The run's gates, oldest first; only pending (or only decided) ones when asked."""
        clause = (
            ""
            if pending is None
            else ("AND decision IS NULL" if pending else "AND decision IS NOT NULL")
        )
        records = await self.pool.fetch(
            f"SELECT * FROM gates WHERE run_id = $1 {clause}"
            " ORDER BY create_time, node_id, item_index, call_index",
            run_id,
        )
        return [_gate(r) for r in records]

    # -- leases -----------------------------------------------------------------

    async def renew_leases(
        self, owner_id: str, run_ids: Sequence[str], seconds: float
    ) -> list[str]:
        """Extend this owner's unexpired leases; returns the runs it still owns.

        A lease that expired is lost even if nobody has claimed it yet: the
        server cannot prove it held the run all along, so it stops the run and
        a claim (by any server, itself included) resumes it from the store.
        """
        records = await self.pool.fetch(
            """UPDATE runs SET lease_expire_time = now() + make_interval(secs => $3)
               WHERE run_id = ANY($2) AND owner_id = $1 AND end_time IS NULL
                 AND lease_expire_time > now()
               RETURNING run_id""",
            owner_id,
            list(run_ids),
            seconds,
        )
        return [r["run_id"] for r in records]

    async def claim_runs(self, owner_id: str, seconds: float, limit: int) -> list[RunRow]:
        """Take over unfinished runs whose lease expired (or was released)."""
        records = await self.pool.fetch(
            """UPDATE runs SET owner_id = $1, lease_expire_time = now() + make_interval(secs => $2)
               WHERE run_id IN (
                   SELECT run_id FROM runs
                   WHERE end_time IS NULL AND (lease_expire_time IS NULL OR lease_expire_time < now())
                   ORDER BY create_time
                   LIMIT $3
                   FOR UPDATE SKIP LOCKED)
               RETURNING *""",
            owner_id,
            seconds,
            limit,
        )
        return [_row(r) for r in records]

    async def all_events(self, run_id: str) -> list[StoredEvent]:
        """Every committed event of the run (tests and tools)."""
        return await self.read_events(run_id, 0, 1 << 62) or []

    # -- retention --------------------------------------------------------------

    async def prune_batch(self, older_than: float, limit: int) -> list[str]:
        """Delete up to `limit` runs finished more than `older_than` seconds ago."""
        return await prune_batch(self.pool, older_than, limit)

    async def count_prunable(self, older_than: float) -> int:
        """How many runs finished more than `older_than` seconds ago."""
        return await count_prunable(self.pool, older_than)

    async def existing_runs(self, run_ids: Sequence[str]) -> set[str]:
        """Which of these runs are stored."""
        return await existing_runs(self.pool, run_ids)

    async def ensure_partitions(self, ahead_days: int = 3) -> list[str]:
        """Create the missing events partitions of today and the next days."""
        return await ensure_partitions(self.pool, ahead_days=ahead_days)

    async def drop_pruned_partitions(self) -> list[str]:
        """Drop past events partitions whose runs are all deleted."""
        return await drop_pruned_partitions(self.pool)

    async def release_leases(self, run_ids: Sequence[str]) -> None:
        """Release leases of runs this process stops driving, for another to take over."""
        await self.pool.execute(
            "UPDATE runs SET owner_id = NULL, lease_expire_time = now() WHERE run_id = ANY($1)",
            list(run_ids),
        )
