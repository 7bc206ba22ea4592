"""The event log across runs: committed events in commit order, by position.

Every stored event has a log position (events.pos) that the writer's commit
statement takes from the one-row counter event_log_head while it holds that
row's lock until COMMIT (see `_COMMIT` in store/_writer.py for why that design
over a visibility watermark). So positions grow in commit order and every
position not yet committed lies above every committed one: a reader that has
looked through position N never later finds a committed event at or below N.
`read_log` reads the counter and the events in one statement (one snapshot),
so what it reports as looked-through is never past an uncommitted event.

Cursors are opaque strings around a position (`encode_cursor`,
`decode_cursor`). Retention deletes old events and raises the horizon
(`mark_pruned`); a cursor below it would resume over a gap, so
`log_bounds` lets the caller refuse it (CURSOR_EXPIRED).

New entries: wait on `Hub.log_changed()` (store/_hub.py), which is set by this
process's writer after each commit and by other processes' commits through
their NOTIFY on the events channel. Caught-up WatchEvents streams share one
reader of the newest entries instead (`LogTail`, store/_log_tail.py), which
filters with `LogFilter.selects_run` and `selects`: keep those in step with
`read_log`'s SQL.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from runwire.errors import CursorInvalid, FieldViolation, InvalidArgument
from runwire.v1 import events_pb2, run_service_pb2

__all__ = [
    "EVENT_KINDS",
    "LogEntry",
    "LogFilter",
    "decode_cursor",
    "encode_cursor",
    "log_bounds",
    "mark_pruned",
    "read_log",
]

# The names of RunEvent's `event` oneof cases: what a filter's `kinds` may name.
EVENT_KINDS = frozenset(
    f.name for f in events_pb2.RunEvent.DESCRIPTOR.oneofs_by_name["event"].fields
)
_COMPLETED = "run_completed"
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_MAX_ITEMS = 256  # kinds, node ids, statuses or labels in one filter
# One read looks at no more than this many positions, so a filter that selects
# little over a long log answers in bounded time (the reader goes on from the
# position it looked through).
SCAN_WINDOW = 20_000

Conn = asyncpg.Connection | asyncpg.Pool | asyncpg.pool.PoolConnectionProxy


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One committed event at its log position; `event` is the stored RunEvent bytes."""

    pos: int
    run_id: str
    seq: int
    kind: str
    event: bytes


def _check_events(f: run_service_pb2.EventFilter, path: str) -> list[FieldViolation]:
    out: list[FieldViolation] = []
    if len(f.kinds) > _MAX_ITEMS:
        out.append(FieldViolation(f"{path}.kinds", f"must name at most {_MAX_ITEMS} kinds"))
    for i, kind in enumerate(f.kinds[:_MAX_ITEMS]):
        if kind not in EVENT_KINDS:
            out.append(
                FieldViolation(
                    f"{path}.kinds[{i}]",
                    f"{kind[:80]!r} is not a RunEvent kind (a case of its `event` oneof, "
                    "such as node_log or run_completed)",
                )
            )
    if len(f.node_ids) > _MAX_ITEMS:
        out.append(FieldViolation(f"{path}.node_ids", f"must name at most {_MAX_ITEMS} nodes"))
    for i, node_id in enumerate(f.node_ids[:_MAX_ITEMS]):
        if not node_id or len(node_id) > 64 or "\x00" in node_id:
            out.append(
                FieldViolation(
                    f"{path}.node_ids[{i}]", "must be 1 to 64 characters without NUL characters"
                )
            )
    return out


@dataclass(frozen=True)
class LogFilter:
    """Which events a reader wants: run fields (across runs) and event fields.

    RunCompleted always passes `kinds` and `node_ids`; run-level events (no
    node id) are not narrowed by `node_ids`.
    """

    flow_name: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    run_statuses: tuple[int, ...] = ()
    kinds: frozenset[str] = field(default_factory=frozenset)
    node_ids: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_proto(
        cls, f: run_service_pb2.RunEventsFilter | None, *, path: str = "filter"
    ) -> LogFilter:
        """Check and convert a RunEventsFilter; raises InvalidArgument naming each bad
        field under `path` (e.g. `filter.events.kinds[0]`)."""
        if f is None:
            return cls()
        out = _check_events(f.events, f"{path}.events")
        if len(f.flow_name) > 256 or "\x00" in f.flow_name:
            out.append(
                FieldViolation(
                    f"{path}.flow_name", "must be at most 256 characters without NUL characters"
                )
            )
        if len(f.labels) > _MAX_ITEMS:
            out.append(FieldViolation(f"{path}.labels", f"must hold at most {_MAX_ITEMS} labels"))
        for key, value in sorted(f.labels.items()):
            if not _LABEL_KEY.match(key):
                out.append(
                    FieldViolation(
                        f"{path}.labels[{key[:80]!r}]", "label keys are [a-z][a-z0-9_-]{0,62}"
                    )
                )
            elif len(value) > 256 or "\x00" in value:
                out.append(
                    FieldViolation(
                        f"{path}.labels[{key!r}]",
                        "label values are at most 256 characters without NUL characters",
                    )
                )
        known = set(events_pb2.RunStatus.values()) - {events_pb2.RUN_STATUS_UNSPECIFIED}
        for i, status in enumerate(f.run_statuses):
            if status not in known:
                out.append(
                    FieldViolation(f"{path}.run_statuses[{i}]", f"{status} is not a run status")
                )
        if out:
            raise InvalidArgument(out)
        return cls(
            flow_name=f.flow_name,
            labels=tuple(sorted(f.labels.items())),
            run_statuses=tuple(sorted(set(f.run_statuses))),
            kinds=frozenset(f.events.kinds),
            node_ids=frozenset(f.events.node_ids),
        )

    @classmethod
    def for_run(cls, f: run_service_pb2.EventFilter | None, *, path: str = "filter") -> LogFilter:
        """Check and convert WatchRun's EventFilter (event fields only)."""
        if f is None:
            return cls()
        if out := _check_events(f, path):
            raise InvalidArgument(out)
        return cls(kinds=frozenset(f.kinds), node_ids=frozenset(f.node_ids))

    @property
    def selects_all_events(self) -> bool:
        """True when the event fields select every event of a selected run."""
        return not self.kinds and not self.node_ids

    @property
    def selects_all_runs(self) -> bool:
        """True when the run fields select every run."""
        return not self.flow_name and not self.labels and not self.run_statuses

    def selects(self, kind: str, event: bytes, *, node_id: Callable[[], str] | None = None) -> bool:
        """Whether the event fields select this stored event (run fields aside).
        `node_id`, if given, returns the event's node id (a cached decode)."""
        if kind == _COMPLETED:
            return True
        if self.kinds and kind not in self.kinds:
            return False
        if self.node_ids:
            node = node_id() if node_id else events_pb2.RunEvent.FromString(event).node_id
            return not node or node in self.node_ids
        return True

    def selects_run(
        self, flow_name: str | None, labels: dict[str, Any], status: int | None
    ) -> bool:
        """Whether the run fields select a run with these fields (flow_name None: no
        run row), as `read_log`'s SQL does: `runs` joined, `labels @>` (each
        label of the filter present with that value), `status = ANY`."""
        if self.selects_all_runs:
            return True
        if flow_name is None:
            return False  # the SQL's inner JOIN finds no run row
        if self.flow_name and flow_name != self.flow_name:
            return False
        if any(labels.get(key) != value for key, value in self.labels):
            return False
        return not self.run_statuses or status in self.run_statuses


def encode_cursor(pos: int) -> str:
    """The opaque cursor of a log position."""
    return base64.urlsafe_b64encode(b"rwl1" + pos.to_bytes(8, "big")).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The position of a cursor from `encode_cursor`; raises CursorInvalid otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    if len(cursor) > 64 or len(raw) != 12 or not raw.startswith(b"rwl1"):
        raise CursorInvalid("is not a cursor this server issued (pass one from a response)")
    pos = int.from_bytes(raw[4:], "big")
    if pos >= 1 << 63:
        raise CursorInvalid("is not a cursor this server issued (pass one from a response)")
    return pos


async def read_log(
    conn: Conn, after_pos: int, limit: int, flt: LogFilter, *, window: int = SCAN_WINDOW
) -> tuple[list[LogEntry], int]:
    """Committed entries with pos > after_pos that pass `flt`, in commit order, and
    the position this read looked through: at least the last entry's, past
    the entries the filter skipped, never past an uncommitted event (the
    counter and the events are read in one snapshot). At most `limit`
    entries and `window` positions per call."""
    args: list[Any] = [after_pos, window, limit]
    clauses: list[str] = []
    run_join = ""
    if not flt.selects_all_runs:  # keep in step with LogFilter.selects_run
        run_join = "JOIN runs r ON r.run_id = e.run_id"
        if flt.flow_name:
            args.append(flt.flow_name)
            clauses.append(f"r.flow_name = ${len(args)}")
        if flt.labels:
            args.append(json.dumps(dict(flt.labels)))
            clauses.append(f"r.labels @> ${len(args)}::jsonb")
        if flt.run_statuses:
            args.append(list(flt.run_statuses))
            clauses.append(f"r.status = ANY(${len(args)}::smallint[])")
    if flt.kinds:
        args.append(sorted(flt.kinds | {_COMPLETED}))
        clauses.append(f"e.kind = ANY(${len(args)}::text[])")
    where = "".join(f" AND {c}" for c in clauses)
    records = await conn.fetch(
        f"""WITH h AS (SELECT pos FROM event_log_head)
            SELECT h.pos AS head, x.pos, x.run_id, x.seq, x.kind, x.event
            FROM h LEFT JOIN LATERAL (
                SELECT e.pos, e.run_id, e.seq, e.kind, e.event FROM events e {run_join}
                WHERE e.pos > $1 AND e.pos <= LEAST(h.pos, $1 + $2){where}
                ORDER BY e.pos LIMIT $3
            ) x ON true
            ORDER BY x.pos""",
        *args,
    )
    if not records:  # no counter row: the migration is missing
        raise RuntimeError("event_log_head is empty; migration 0005 did not run")
    head = int(records[0]["head"])
    entries = [
        LogEntry(r["pos"], r["run_id"], r["seq"], r["kind"], r["event"])
        for r in records
        if r["pos"] is not None and (not flt.node_ids or flt.selects(r["kind"], r["event"]))
    ]
    if len(records) >= limit and records[-1]["pos"] is not None:
        looked = int(records[-1]["pos"])
    else:
        looked = max(after_pos, min(head, after_pos + window))
    return entries, looked


async def log_bounds(conn: Conn) -> tuple[int, int]:
    """(horizon, latest): cursors below `horizon` are expired (retention deleted
    events at or below it); `latest` is the newest committed position."""
    record = await conn.fetchrow("SELECT pruned_through, pos FROM event_log_head")
    if record is None:
        raise RuntimeError("event_log_head is empty; migration 0005 did not run")
    return int(record["pruned_through"]), int(record["pos"])


async def mark_pruned(conn: Conn, through_pos: int) -> None:
    """Retention deleted events at or below `through_pos`: raise the horizon."""
    await conn.execute(
        "UPDATE event_log_head SET pruned_through = GREATEST(pruned_through, $1)", through_pos
    )
