"""What a person sees of a run's events: a live table with a row per node visit, or one line per event.

The watch loop (`_render.py`) feeds events to `RunView.apply`; the live
display calls `RunView.render` on its own refresh thread, so running times
tick between events. `render` reads snapshots (`list(...)`), which CPython
takes without letting `apply` interleave.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Group
from rich.table import Table
from rich.text import Text

from runwire.v1 import events_pb2

__all__ = ["RunView", "event_line"]

_STYLE = {
    "pending": "dim",
    "running": "yellow",
    "succeeded": "green",
    "failed": "red",
    "skipped": "dim",
    "retrying": "magenta",
}
_FINISHED = {"succeeded", "failed", "skipped"}


_ANSWER_TAIL = 240


def _seconds(ts: Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def _clock(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class _Visit:
    """One visit of a node (its `iteration`); attempts replace each other in place."""

    node_id: str
    iteration: int
    status: str = "pending"
    attempt: int = 0
    action: str = ""
    started: float | None = None
    duration: float | None = None
    latest: str = ""
    answer: str = ""  # the streamed answer's tail (NodeTokens)
    model_calls: int = 0
    tokens: int = 0
    cost_micros: int = 0
    # A fan-out visit: how many items its NodeStarted listed, each item's
    # status, and the failed items' errors (shown as rows under the node).
    item_total: int = 0
    items: dict[int, str] = field(default_factory=dict)
    item_errors: dict[int, str] = field(default_factory=dict)

    def item_counts(self) -> str:
        """`3/10 done · 1 failed · 2 running` for a fan-out visit."""
        statuses = list(self.items.values())
        done = statuses.count("succeeded")
        parts = [f"{done}/{self.item_total or len(statuses)} done"]
        for word in ("failed", "running", "retrying", "skipped"):
            if n := statuses.count(word):
                parts.append(f"{n} {word}")
        return " · ".join(parts)


_MAX_FAILED_ROWS = 5


@dataclass
class RunView:
    """The state of one run as its events arrive."""

    run_id: str
    node_ids: Sequence[str] = ()
    flow: str = ""
    status: str = "PENDING"
    node_count: int = 0
    started: float | None = None
    ended: float | None = None
    visits: dict[tuple[str, int], _Visit] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    gates: dict[str, str] = field(default_factory=dict)
    last_seq: int = 0
    final: events_pb2.RunCompleted | None = None

    def __post_init__(self) -> None:
        for node_id in self.node_ids:
            self.visits[(node_id, 1)] = _Visit(node_id, 1)
        self.node_count = self.node_count or len(self.node_ids)

    def _visit(self, e: events_pb2.RunEvent) -> _Visit:
        key = (e.node_id, max(e.iteration, 1))
        visit = self.visits.get(key)
        if visit is None:
            visit = self.visits[key] = _Visit(*key)
        return visit

    def apply(self, e: events_pb2.RunEvent) -> None:
        """Fold one event into the view."""
        self.last_seq = e.seq
        case = e.WhichOneof("event")
        if case == "run_started":
            self.flow = e.run_started.flow_name
            self.node_count = e.run_started.node_count or self.node_count
            self.started = _seconds(e.event_time)
        elif case == "run_status_changed":
            self.status = events_pb2.RunStatus.Name(e.run_status_changed.new_status).removeprefix(
                "RUN_STATUS_"
            )
        elif case == "run_paused":
            self.notes.append(f"paused by {e.run_paused.principal} {e.run_paused.reason}".strip())
        elif case == "run_resumed":
            self.notes.append(f"resumed by {e.run_resumed.principal}")
        elif case == "run_completed":
            self.final = e.run_completed
            self.ended = _seconds(e.event_time)
        elif case == "iteration_capped":
            self.notes.append(
                f"loop at {e.node_id} capped at {e.iteration_capped.max_visits} visits"
            )
        elif e.node_id:
            self._apply_node(e, case or "")

    def _apply_item(self, visit: _Visit, e: events_pb2.RunEvent, case: str) -> None:
        i = e.item_index
        name = f"{e.node_id}[{i}]" + (f" {e.item_key}" if e.item_key else "")
        if case == "node_started":
            visit.items[i] = "running"
        elif case == "node_succeeded":
            visit.items[i] = "succeeded"
            visit.item_errors.pop(i, None)
        elif case == "node_failed":
            visit.items[i] = "retrying" if e.node_failed.will_retry else "failed"
            visit.item_errors[i] = f"{name}: {e.node_failed.error.message}"
        elif case == "node_skipped":
            visit.items[i] = "skipped"
        elif case == "awaiting_confirmation":
            self.gates[name] = (
                f"⚠ {name} waits for confirmation: {e.awaiting_confirmation.action_summary}"
                f" — runwire confirm|reject {self.run_id} {e.node_id} --item {i}"
            )
        elif case == "confirmation_resolved":
            self.gates.pop(name, None)

    def _apply_node(self, e: events_pb2.RunEvent, case: str) -> None:
        visit = self._visit(e)
        if e.HasField("item_index"):
            self._apply_item(visit, e, case)
            return
        if case == "node_started":
            visit.status, visit.attempt = "running", e.attempt
            visit.action = f"{e.node_started.adapter}.{e.node_started.action}".rstrip(".")
            visit.started, visit.duration = _seconds(e.event_time), None
            visit.latest = visit.answer = ""
            with contextlib.suppress(ValueError):
                params = json.loads(e.node_started.params_json or "null")
                if isinstance(params, dict) and isinstance(params.get("for_each"), list):
                    visit.item_total = len(params["for_each"])
        elif case == "node_succeeded":
            visit.status = "succeeded"
            visit.duration = e.node_succeeded.duration.ToTimedelta().total_seconds()
            if not visit.latest:
                output = json.loads(e.node_succeeded.output_json or "null")
                visit.latest = "" if output is None else "→ " + json.dumps(output)
        elif case == "node_failed":
            visit.status = "retrying" if e.node_failed.will_retry else "failed"
            visit.duration = e.node_failed.duration.ToTimedelta().total_seconds()
            visit.latest = f"! {e.node_failed.error.message}"
        elif case == "node_retrying":
            r = e.node_retrying
            visit.latest = (
                f"! attempt {e.attempt} failed: {r.error.message}; attempt {r.next_attempt}"
                f"/{r.max_attempts} in {_clock(r.backoff.ToTimedelta().total_seconds())}"
            )
        elif case == "node_skipped":
            visit.status, visit.latest = "skipped", e.node_skipped.reason
        elif case == "node_log":
            visit.latest = e.node_log.line
        elif case == "node_token":
            # The answer as it streams: the tail of it, on one line.
            visit.answer = (visit.answer + e.node_token.delta)[-_ANSWER_TAIL:]
            visit.latest = "✎ " + " ".join(visit.answer.split())
        elif case == "tool_call":
            visit.answer = ""
            visit.latest = f"⚙ {e.tool_call.tool_name}: {e.tool_call.summary}"
        elif case == "ai_routing_decision":
            d = e.ai_routing_decision
            route = events_pb2.AiRoute.Name(d.route).removeprefix("AI_ROUTE_")
            if d.route == events_pb2.AI_ROUTE_MODEL:
                visit.latest = f"→ {d.provider}/{d.model} ({d.reason})"
            else:
                visit.latest = f"{route.lower().replace('_', ' ')}: {d.reason}"
        elif case == "ai_invocation":
            a = e.ai_invocation
            visit.model_calls += 1
            visit.tokens += a.input_token_count + a.output_token_count
            visit.cost_micros += a.cost_micros
            visit.action = (
                f"ai {a.provider}/{a.model} · {visit.model_calls} calls · {visit.tokens} tokens"
                + (f" · ${visit.cost_micros / 1e6:.4f}" if visit.cost_micros else "")
            )
        elif case == "ai_review_required":
            held = e.ai_review_required
            self.gates[e.node_id] = (
                f"⚠ {e.node_id} answer held for review ({held.reason}): "
                f"{_short(held.output_json, 80)}"
                f" — runwire review {self.run_id} {e.node_id} --approve|--reject [--answer FILE]"
            )
            visit.latest = "awaiting review"
        elif case == "sandbox_violation":
            visit.latest = f"sandbox: {e.sandbox_violation.detail}"
        elif case == "awaiting_confirmation":
            confirm = e.awaiting_confirmation
            call = f" --tool-call {confirm.tool_call_id}" if confirm.tool_call_id else ""
            self.gates[e.node_id] = (
                f"⚠ {e.node_id} waits for confirmation: {confirm.action_summary}"
                f" — runwire confirm|reject {self.run_id} {e.node_id}{call}"
            )
            visit.latest = "awaiting confirmation"
        elif case == "approval_requested":
            self.gates[e.node_id] = (
                f"⚠ {e.node_id} waits for approval: {e.approval_requested.message}"
                f" — runwire approve|reject {self.run_id} {e.node_id}"
            )
            visit.latest = "awaiting approval"
        elif case in {"confirmation_resolved", "approval_resolved", "ai_review_resolved"}:
            self.gates.pop(e.node_id, None)
            payload = getattr(e, case)
            decision = (
                events_pb2.GateDecision.Name(payload.decision)
                .removeprefix("GATE_DECISION_")
                .lower()
            )
            visit.latest = f"{decision} by {payload.principal}"

    def progress(self) -> tuple[int, int]:
        """(nodes whose latest visit finished, nodes in the flow)."""
        latest: dict[str, _Visit] = {}
        for (node_id, _), visit in sorted(self.visits.items(), key=lambda kv: kv[0][1]):
            latest[node_id] = visit
        done = sum(1 for v in latest.values() if v.status in _FINISHED)
        return done, max(self.node_count, len(latest))

    def render(self, now: float | None = None) -> Group:
        """The table as of `now` (wall-clock seconds; default the current time)."""
        now = time.time() if now is None else now
        done, total = self.progress()
        title = f"{self.flow or '…'} · {self.run_id} · {self.status} · {done}/{total} nodes"
        if self.started is not None:
            title += f" · {_clock((self.ended or now) - self.started)}"
        table = Table(title=title, expand=True)
        table.add_column("node")
        table.add_column("status")
        table.add_column("time", justify="right")
        table.add_column("latest", overflow="fold")
        visits = list(self.visits.values())
        revisited = {v.node_id for v in visits if v.iteration > 1}
        for v in visits:
            name = v.node_id + (f" ·{v.iteration}" if v.node_id in revisited else "")
            status = v.status + (f" #{v.attempt}" if v.attempt > 1 else "")
            if v.duration is not None:
                elapsed = _clock(v.duration)
            elif v.status == "running" and v.started is not None:
                elapsed = _clock(max(now - v.started, 0.0)) + "…"
            else:
                elapsed = ""
            style = _STYLE.get(v.status, "")
            latest = v.latest or v.action
            if v.item_total or v.items:
                latest = v.item_counts() + ("" if v.status == "running" else f" {latest}")
            table.add_row(
                Text(name, style="dim" if v.status == "pending" else ""),
                Text(status, style=style),
                elapsed,
                Text(_short(latest), style="dim" if v.status == "pending" else ""),
            )
            failures = [
                (i, text) for i, text in sorted(v.item_errors.items()) if v.items[i] == "failed"
            ]
            for _, text in failures[:_MAX_FAILED_ROWS]:
                table.add_row(
                    Text("  └ item", style="dim"), Text("failed", "red"), "", _short(text)
                )
            if len(failures) > _MAX_FAILED_ROWS:
                more = len(failures) - _MAX_FAILED_ROWS
                table.add_row(
                    Text(f"  └ +{more} more failed items", style="dim"), Text("failed", "red")
                )
        unseen = total - len({v.node_id for v in visits})
        if unseen > 0:
            table.add_row(Text(f"+{unseen} not started", style="dim"), Text("pending", "dim"))
        return Group(
            table,
            *(Text(g, style="bold black on yellow") for g in list(self.gates.values())),
            *(Text(n, style="bold yellow") for n in self.notes[-5:]),
        )


def event_line(e: events_pb2.RunEvent) -> str:
    """One event as one line: seq, variant, node with its visit and attempt, payload."""
    case = e.WhichOneof("event") or "unknown"
    payload = getattr(e, case) if case != "unknown" else None
    text = str(payload).replace("\n", " ").strip() if payload is not None else ""
    where = ""
    if e.node_id:
        item = ""
        if e.HasField("item_index"):
            item = f", item {e.item_index}" + (f" {e.item_key!r}" if e.item_key else "")
        where = f" {e.node_id} (visit {e.iteration}{item}" + (
            f", attempt {e.attempt})" if e.attempt else ")"
        )
    return f"{e.seq:>6} {case}{where} {text}"
