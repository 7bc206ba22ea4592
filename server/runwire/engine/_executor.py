"""Drive one run: schedule its graph, run node attempts, narrate every step as events.

A node *visit* is one scheduling of the node (`iteration` in the envelope); a
loop edge back to an earlier node starts a new visit of it and of everything
downstream of it. Each visit runs one or more *attempts* (retries). An
executor can also pick up a run another process started: it rebuilds its
state from the stored events and continues, so finished nodes are not rerun.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import context as otel_context
from opentelemetry import trace

from runwire import telemetry
from runwire.adapters import ActionFailed, Registry, SandboxRefused
from runwire.engine._events import NodeRef, SpanIds, new_event
from runwire.engine._ports import Decision, GateStore, Journal, RunPatch
from runwire.engine._templates import TemplateError, contains_template, render_value
from runwire.engine._validate import Graph, canonical_json, params_validator
from runwire.v1 import events_pb2 as ev
from runwire.v1 import flow_pb2, run_service_pb2

__all__ = ["EngineSettings", "RunExecutor", "RunPlan"]

log = logging.getLogger(__name__)

_DEFAULT_TIMEOUT = 600.0
_DEFAULT_BACKOFF = 1.0
_DEFAULT_MAX_BACKOFF = 60.0
_SYSTEM = "system"
_VISIT_OPENERS = frozenset(
    {"node_started", "node_skipped", "awaiting_confirmation", "approval_requested"}
)
_LOG_SLICE = 256


@dataclass(frozen=True)
class EngineSettings:
    """Server-wide engine knobs."""

    workspace_root: Path
    heartbeat_interval: float = 5.0
    max_parallel: int = 4


@dataclass
class RunPlan:
    """Everything needed to execute a persisted run."""

    run_id: str
    graph: Graph
    inputs: dict[str, Any]
    flow_digest: str
    principal: str
    trigger: str
    request_id: str
    parent_context: otel_context.Context | None = None
    # Set when taking over a run: its committed events, oldest first.
    history: list[ev.RunEvent] | None = None
    pause_requested: bool = False
    cancel_requested: bool = False


class NodeStatus(enum.Enum):
    """Where a node's current visit is."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


_TERMINAL = {NodeStatus.SUCCEEDED, NodeStatus.FAILED, NodeStatus.SKIPPED}


def _duration(seconds: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def _seconds(d: Duration) -> float:
    return d.seconds + d.nanos / 1e9


def _span_ids(span: trace.Span) -> SpanIds:
    c = span.get_span_context()
    return SpanIds(trace.format_trace_id(c.trace_id), trace.format_span_id(c.span_id))


def _edge_taken(condition: int, source: NodeStatus) -> bool:
    if condition == flow_pb2.EDGE_CONDITION_FAILURE:
        return source is NodeStatus.FAILED
    if condition == flow_pb2.EDGE_CONDITION_ALWAYS:
        return source in _TERMINAL
    return source is NodeStatus.SUCCEEDED


_CONDITION_WORD = {
    flow_pb2.EDGE_CONDITION_UNSPECIFIED: "success",
    flow_pb2.EDGE_CONDITION_SUCCESS: "success",
    flow_pb2.EDGE_CONDITION_FAILURE: "failure",
    flow_pb2.EDGE_CONDITION_ALWAYS: "any outcome",
}


@dataclass
class _Outcome:
    ok: bool
    output: Any = None
    error: ev.ErrorSummary = field(default_factory=ev.ErrorSummary)


def _failure(reason: str, message: str, output: Any = None) -> _Outcome:
    return _Outcome(False, output, ev.ErrorSummary(reason=reason, message=message))


@dataclass
class _Resume:
    """Where an interrupted node stood when its run was taken over."""

    attempt: int = 0  # the last attempt that started
    open_attempt: bool = False  # NodeStarted without a terminal event
    gate_kind: int = 0  # a gate opened but not resolved
    gate_open_span: SpanIds | None = None


class _Attempt:
    """The NodeContext an adapter sees for one attempt."""

    def __init__(self, executor: RunExecutor, ref: NodeRef, span: SpanIds) -> None:
        self._executor = executor
        self.ref = ref
        self.span = span
        self.output_bytes = 0
        self._line_numbers: dict[int, int] = {}

    @property
    def run_id(self) -> str:
        return self._executor.run_id

    @property
    def node_id(self) -> str:
        return self.ref.node_id

    @property
    def workspace(self) -> Path:
        return self._executor.workspace

    def count_output(self, nbytes: int) -> None:
        self.output_bytes += nbytes

    async def log(self, stream: ev.LogStream, lines: list[str], *, truncated: bool = False) -> None:
        for start in range(0, len(lines), _LOG_SLICE):
            if start:
                # A fast producer hands over thousands of lines at once; let the
                # writer, the watchers and other runs in between slices.
                await asyncio.sleep(0)
            payloads: list[tuple[str, Message]] = []
            n = self._line_numbers.get(stream, 0)
            for line in lines[start : start + _LOG_SLICE]:
                n += 1
                log_line = ev.NodeLog(stream=stream, line=line, line_number=n, truncated=truncated)
                payloads.append(("node_log", log_line))
            self._line_numbers[stream] = n
            await self._executor.emit_many(payloads, span=self.span, node=self.ref)


class RunExecutor:
    """Executes one run to exactly one RunCompleted."""

    def __init__(
        self,
        plan: RunPlan,
        journal: Journal,
        gates: GateStore,
        registry: Registry,
        tracer: trace.Tracer,
        settings: EngineSettings,
    ) -> None:
        self.plan = plan
        self.run_id = plan.run_id
        self.graph = plan.graph
        self.workspace = settings.workspace_root / plan.run_id
        self._journal = journal
        self._gates = gates
        self._registry = registry
        self._tracer = tracer
        self._settings = settings
        self._seq = 0
        self._status: ev.RunStatus = ev.RUN_STATUS_PENDING
        self._nodes = dict.fromkeys(self.graph.nodes, NodeStatus.PENDING)
        self._visits = dict.fromkeys(self.graph.nodes, 0)
        self._outputs: dict[str, Any] = {}
        self._resume: dict[str, _Resume] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._inner: dict[str, asyncio.Task[Any]] = {}
        self._gate_waiters: dict[tuple[str, int], asyncio.Future[Decision]] = {}
        self._wake = asyncio.Event()
        self._cancelled = asyncio.Event()
        self._pause_requested = plan.pause_requested
        self._paused_since: float | None = None
        self._control_principal = ""
        self._control_reason = ""
        self._failed_node: str | None = None
        self._capped = False
        self._loops_to_follow: list[str] = []
        self._run_span = SpanIds("", "")
        self._max_parallel = self.graph.flow.settings.max_parallel or settings.max_parallel
        settings_flow = self.graph.flow.settings
        self._confirm = (
            not settings_flow.HasField("confirm_destructive") or settings_flow.confirm_destructive
        )

    # -- events -------------------------------------------------------------

    async def emit(
        self,
        variant: str,
        payload: Message,
        *,
        span: SpanIds | None = None,
        node: NodeRef | None = None,
        patch: RunPatch | None = None,
    ) -> None:
        """Append one event with the next seq."""
        await self.emit_many([(variant, payload)], span=span, node=node, patch=patch)

    async def emit_many(
        self,
        payloads: list[tuple[str, Message]],
        *,
        span: SpanIds | None = None,
        node: NodeRef | None = None,
        patch: RunPatch | None = None,
    ) -> None:
        """Append events with consecutive seqs, in order."""
        await self._journal.wait_for_space()
        # From here to append there is no await: seqs cannot be lost to a cancel.
        events = []
        for variant, payload in payloads:
            self._seq += 1
            events.append(
                new_event(
                    self.run_id, self._seq, variant, payload, span=span or self._run_span, node=node
                )
            )
        self._journal.append(self.run_id, events, patch)

    async def _set_status(self, status: ev.RunStatus, reason: str, principal: str = "") -> None:
        previous, self._status = self._status, status
        await self.emit(
            "run_status_changed",
            ev.RunStatusChanged(
                previous_status=previous, new_status=status, reason=reason, principal=principal
            ),
            patch=RunPatch(status=status),
        )

    # -- control --------------------------------------------------------------

    def control(self, *, pause: bool | None, cancel: bool, principal: str, reason: str) -> None:
        """Apply a pause, resume or cancel request; it takes effect at a node boundary."""
        if cancel and not self._cancelled.is_set():
            self._control_principal, self._control_reason = principal, reason
            self._cancelled.set()
            for inner in self._inner.values():
                inner.cancel()
        elif pause is not None and pause != self._pause_requested:
            self._pause_requested = pause
            self._control_principal, self._control_reason = principal, reason
        self._wake.set()

    def deliver_gate(self, node_id: str, kind: int, decision: Decision) -> None:
        """Hand a gate decision made through the API to the node waiting on it."""
        waiter = self._gate_waiters.get((node_id, kind))
        if waiter is not None and not waiter.done():
            waiter.set_result(decision)

    # -- the run --------------------------------------------------------------

    async def run(self) -> None:
        """Execute (or continue) the run; always ends with RunCompleted unless the process dies."""
        flow = self.graph.flow
        parent = self.plan.parent_context
        if self.plan.history:
            parent = self._rebuild(self.plan.history)
        span = self._tracer.start_span(
            f"{telemetry.SPAN_RUN_PREFIX}{flow.name}",
            context=parent,
            attributes={telemetry.ATTR_RUN_ID: self.run_id, telemetry.ATTR_FLOW_NAME: flow.name},
        )
        self._run_span = _span_ids(span)
        started = time.monotonic()
        try:
            if not self.plan.history:
                await self.emit(
                    "run_started",
                    ev.RunStarted(
                        flow_name=flow.name,
                        flow_digest=self.plan.flow_digest,
                        trigger=self.plan.trigger,
                        principal=self.plan.principal,
                        node_count=len(self.graph.nodes),
                        inputs_json=canonical_json(self.plan.inputs),
                        request_id=self.plan.request_id,
                    ),
                )
                await self._set_status(ev.RUN_STATUS_RUNNING, "run started")
            elif self.plan.cancel_requested:
                self.control(
                    pause=None,
                    cancel=True,
                    principal=_SYSTEM,
                    reason="cancel requested before takeover",
                )
            with trace.use_span(span, end_on_exit=False):
                for source in self._loops_to_follow:
                    await self._follow_loops(source)
                self._restart_interrupted()
                await self._schedule()
            await self._finish(span, started)
        except asyncio.CancelledError:
            # Process shutdown: the run stays unfinished in the store for takeover.
            for task in self._tasks.values():
                task.cancel()
            raise
        except Exception as exc:
            log.exception("run %s crashed", self.run_id)
            await self._finish(span, started, crash=exc)
        finally:
            span.end()

    def _rebuild(self, history: list[ev.RunEvent]) -> otel_context.Context:
        """Restore scheduling state from committed events; returns the run's trace context."""
        self._seq = history[-1].seq
        trace_id = span_id = 0
        # Seqs that tell whether a loop edge was followed before the takeover.
        visit_start: dict[str, int] = {}
        terminal_at: dict[str, int] = {}
        capped_at: dict[str, int] = {}
        for e in history:
            case = e.WhichOneof("event")
            node = e.node_id
            new_visit = e.iteration != self._visits.get(node, 0)
            if new_visit and case in _VISIT_OPENERS:
                visit_start[node] = e.seq
            if case in ("node_succeeded", "node_skipped") or (
                case == "node_failed" and not e.node_failed.will_retry
            ):
                terminal_at[node] = e.seq
            if case == "iteration_capped":
                capped_at[e.iteration_capped.source_node_id] = e.seq
            if not node:
                if case == "run_started":
                    trace_id, span_id = int(e.trace_id or "0", 16), int(e.span_id or "0", 16)
                elif case == "run_status_changed":
                    self._status = e.run_status_changed.new_status
                elif case == "run_paused":
                    self._paused_since = time.monotonic()
                elif case == "run_resumed":
                    self._paused_since = None
                continue
            if node not in self._nodes:
                continue
            state = self._resume.setdefault(node, _Resume())
            if case == "node_started":
                self._visits[node] = e.iteration
                self._nodes[node] = NodeStatus.RUNNING
                state.attempt, state.open_attempt = e.attempt, True
            elif case == "node_succeeded":
                self._nodes[node] = NodeStatus.SUCCEEDED
                self._outputs[node] = json.loads(e.node_succeeded.output_json or "null")
                state.open_attempt = False
            elif case == "node_failed":
                state.open_attempt = False
                # A failure that will be retried leaves the node running.
                self._nodes[node] = (
                    NodeStatus.RUNNING if e.node_failed.will_retry else NodeStatus.FAILED
                )
            elif case == "node_skipped":
                self._visits[node] = e.iteration
                self._nodes[node] = NodeStatus.SKIPPED
            elif case in ("awaiting_confirmation", "approval_requested"):
                self._visits[node] = e.iteration
                self._nodes[node] = NodeStatus.RUNNING
                state.gate_kind = (
                    run_service_pb2.GATE_KIND_CONFIRMATION
                    if case == "awaiting_confirmation"
                    else run_service_pb2.GATE_KIND_APPROVAL
                )
                state.gate_open_span = SpanIds(e.trace_id, e.span_id)
            elif case in ("confirmation_resolved", "approval_resolved"):
                state.gate_kind = 0
            elif case == "iteration_capped":
                self._capped = True
        for node_id, status in self._nodes.items():
            if (
                status is NodeStatus.FAILED
                and not self._handled(node_id)
                and self._failed_node is None
            ):
                self._failed_node = node_id
        # A loop source that finished after its head last started (and was not
        # capped since) had its edge back cut off by the stop: follow it now.
        self._loops_to_follow = [
            source
            for source, edges in self.graph.back_edges.items()
            if edges
            and self._nodes[source] in _TERMINAL
            and any(terminal_at.get(source, 0) > visit_start.get(e.target, 0) for e in edges)
            and capped_at.get(source, 0) < terminal_at.get(source, 0)
        ]
        ctx = trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(1))
        return trace.set_span_in_context(trace.NonRecordingSpan(ctx))

    def _restart_interrupted(self) -> None:
        """Continue nodes that were running when the previous owner stopped."""
        for node_id, status in self._nodes.items():
            if status is NodeStatus.RUNNING:
                self._tasks[node_id] = asyncio.create_task(
                    self._run_node(node_id, resumed=True), name=f"node:{node_id}"
                )

    async def _schedule(self) -> None:
        while True:
            cancelled = self._cancelled.is_set()
            if not cancelled and self._failed_node is None:
                await self._skip_unreachable()
                if not self._pause_requested and self._paused_since is None:
                    self._start_ready()
            running = [n for n, s in self._nodes.items() if s is NodeStatus.RUNNING]
            if not cancelled and not running:
                if self._pause_requested and self._paused_since is None:
                    self._paused_since = time.monotonic()
                    await self.emit(
                        "run_paused",
                        ev.RunPaused(
                            principal=self._control_principal, reason=self._control_reason
                        ),
                    )
                    await self._set_status(ev.RUN_STATUS_PAUSED, "paused", self._control_principal)
                elif not self._pause_requested and self._paused_since is not None:
                    paused_for = time.monotonic() - self._paused_since
                    self._paused_since = None
                    await self.emit(
                        "run_resumed",
                        ev.RunResumed(
                            principal=self._control_principal,
                            reason=self._control_reason,
                            paused_duration=_duration(paused_for),
                        ),
                    )
                    await self._set_status(
                        ev.RUN_STATUS_RUNNING, "resumed", self._control_principal
                    )
                    continue
            if not running and (self._paused_since is None or cancelled):
                pending = [n for n, s in self._nodes.items() if s is NodeStatus.PENDING]
                if cancelled or self._failed_node is not None or not pending:
                    return
                if not any(self._ready(n) for n in pending):
                    return  # unreachable in a validated graph; never spin
                continue
            self._wake.clear()
            await self._wake.wait()

    def _ready(self, node_id: str) -> bool:
        return all(self._nodes[e.source] in _TERMINAL for e in self.graph.incoming[node_id])

    def _handled(self, node_id: str) -> bool:
        edges = (*self.graph.outgoing[node_id], *self.graph.back_edges[node_id])
        return any(
            e.condition in (flow_pb2.EDGE_CONDITION_FAILURE, flow_pb2.EDGE_CONDITION_ALWAYS)
            for e in edges
        )

    async def _skip_unreachable(self) -> None:
        changed = True
        while changed:
            changed = False
            for node_id, status in self._nodes.items():
                if status is not NodeStatus.PENDING or not self._ready(node_id):
                    continue
                blocked = [
                    e
                    for e in self.graph.incoming[node_id]
                    if not _edge_taken(e.condition, self._nodes[e.source])
                ]
                if blocked:
                    e = blocked[0]
                    reason = (
                        f"upstream {e.source!r} {self._nodes[e.source].value}; "
                        f"the edge needs {_CONDITION_WORD[e.condition]}"
                    )
                    await self._skip(node_id, reason)
                    changed = True

    async def _skip(self, node_id: str, reason: str, *, new_visit: bool = True) -> None:
        """Emit NodeSkipped; `new_visit=False` when the visit already started (a rejected gate)."""
        if new_visit:
            self._visits[node_id] += 1
        self._nodes[node_id] = NodeStatus.SKIPPED
        await self.emit(
            "node_skipped",
            ev.NodeSkipped(reason=reason),
            node=NodeRef(node_id, self._visits[node_id], 0),
            patch=RunPatch(skipped_node_count=self._count(NodeStatus.SKIPPED)),
        )

    def _count(self, status: NodeStatus) -> int:
        return sum(1 for s in self._nodes.values() if s is status)

    def _start_ready(self) -> None:
        running = self._count(NodeStatus.RUNNING)
        for node_id, status in self._nodes.items():
            if running >= self._max_parallel:
                return
            if status is NodeStatus.PENDING and self._ready(node_id):
                self._nodes[node_id] = NodeStatus.RUNNING
                self._visits[node_id] += 1
                self._resume.pop(node_id, None)
                self._tasks[node_id] = asyncio.create_task(
                    self._run_node(node_id), name=f"node:{node_id}"
                )
                running += 1

    async def _run_node(self, node_id: str, *, resumed: bool = False) -> None:
        try:
            await self._visit(node_id, resumed=resumed)
            await self._follow_loops(node_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("node %s of run %s crashed", node_id, self.run_id)
            self._nodes[node_id] = NodeStatus.FAILED
            self._failed_node = self._failed_node or node_id
        finally:
            self._tasks.pop(node_id, None)
            self._wake.set()

    async def _follow_loops(self, node_id: str) -> None:
        """Take edges back to earlier nodes: start a new visit of the loop, or cap it."""
        status = self._nodes[node_id]
        if status is NodeStatus.SKIPPED or self._cancelled.is_set():
            return
        for e in self.graph.back_edges[node_id]:
            if not _edge_taken(e.condition, status):
                continue
            head = e.target
            limit = self.graph.nodes[head].max_visits
            if self._visits[head] >= limit:
                self._capped = True
                await self.emit(
                    "iteration_capped",
                    ev.IterationCapped(max_visits=limit, source_node_id=node_id),
                    node=NodeRef(head, self._visits[head], 0),
                )
                continue
            for n in self.graph.downstream(head):
                if self._nodes[n] in _TERMINAL:
                    self._nodes[n] = NodeStatus.PENDING
            if (
                self._failed_node is not None
                and self._nodes.get(self._failed_node) is NodeStatus.PENDING
            ):
                self._failed_node = None

    def _retry_policy(self, node: flow_pb2.Node) -> flow_pb2.RetryPolicy:
        if node.HasField("retry_policy"):
            return node.retry_policy
        return self.graph.flow.settings.default_retry_policy

    def _timeout(self, node: flow_pb2.Node) -> float:
        if node.HasField("timeout"):
            return _seconds(node.timeout)
        settings = self.graph.flow.settings
        return (
            _seconds(settings.default_timeout)
            if settings.HasField("default_timeout")
            else _DEFAULT_TIMEOUT
        )

    def _template_context(self) -> dict[str, Any]:
        return {
            "inputs": self.plan.inputs,
            "nodes": {
                n: {"output": self._outputs.get(n), "status": s.value, "iteration": self._visits[n]}
                for n, s in self._nodes.items()
            },
        }

    async def _visit(self, node_id: str, *, resumed: bool) -> None:
        node = self.graph.nodes[node_id]
        iteration = self._visits[node_id]
        state = self._resume.get(node_id, _Resume()) if resumed else _Resume()
        params: dict[str, Any] = {}
        render_error: TemplateError | None = None
        if node.WhichOneof("kind") == "action":
            try:
                raw = json_format.MessageToDict(node.action.params)
                # The context covers every node: build it only when it is read.
                params = (
                    render_value(raw, self._template_context()) if contains_template(raw) else raw
                )
            except TemplateError as exc:
                render_error = exc
            if render_error is None and self._confirm and state.attempt == 0:
                summary = self._adapter_destructive(node.action, params)
                if summary is not None:
                    decision = await self._gate(
                        NodeRef(node_id, iteration, 0),
                        run_service_pb2.GATE_KIND_CONFIRMATION,
                        summary,
                        None,
                        resumed=state.gate_kind == run_service_pb2.GATE_KIND_CONFIRMATION,
                        details=ev.AwaitingConfirmation(
                            action_summary=summary,
                            adapter=node.action.adapter,
                            action=node.action.action,
                            params_json=canonical_json(params),
                        ),
                    )
                    if decision.decision != ev.GATE_DECISION_APPROVED:
                        word = (
                            ev.GateDecision.Name(decision.decision)
                            .removeprefix("GATE_DECISION_")
                            .lower()
                        )
                        await self._skip(
                            node_id, f"confirmation {word} by {decision.principal}", new_visit=False
                        )
                        return
        await self._attempts(node, iteration, params, render_error, state)

    def _adapter_destructive(
        self, action: flow_pb2.ActionNode, params: Mapping[str, Any]
    ) -> str | None:
        adapter = self._registry.get(action.adapter)
        return None if adapter is None else adapter.describe_destructive(action.action, params)

    async def _gate(
        self,
        ref: NodeRef,
        kind: int,
        message: str,
        expires_in: float | None,
        *,
        resumed: bool,
        details: Message,
        span: SpanIds | None = None,
    ) -> Decision:
        """Open a durable gate, announce it, wait for a decision (or expiry or cancel), record it."""
        expire = datetime.now(UTC) + timedelta(seconds=expires_in) if expires_in else None
        waiter: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._gate_waiters[(ref.node_id, kind)] = waiter
        try:
            standing = await self._gates.open_gate(
                self.run_id, ref.node_id, ref.iteration, kind, message, expire
            )
            if not resumed:
                if isinstance(details, ev.ApprovalRequested) and expire is not None:
                    ts = Timestamp()
                    ts.FromDatetime(expire)
                    details.expire_time.CopyFrom(ts)
                variant = (
                    "awaiting_confirmation"
                    if kind == run_service_pb2.GATE_KIND_CONFIRMATION
                    else "approval_requested"
                )
                await self.emit(variant, details, node=ref, span=span)
            if standing is None:
                standing = await self._wait_gate(ref, kind, waiter, expires_in)
        finally:
            self._gate_waiters.pop((ref.node_id, kind), None)
        confirmation = kind == run_service_pb2.GATE_KIND_CONFIRMATION
        resolved = ev.ConfirmationResolved if confirmation else ev.ApprovalResolved
        await self.emit(
            "confirmation_resolved" if confirmation else "approval_resolved",
            resolved(
                decision=standing.decision, principal=standing.principal, comment=standing.comment
            ),
            node=ref,
            span=span,
        )
        return standing

    async def _wait_gate(
        self, ref: NodeRef, kind: int, waiter: asyncio.Future[Decision], expires_in: float | None
    ) -> Decision:
        cancelled = asyncio.ensure_future(self._cancelled.wait())
        try:
            waits: set[asyncio.Future[Any]] = {waiter, cancelled}
            await asyncio.wait(waits, timeout=expires_in, return_when=asyncio.FIRST_COMPLETED)
        finally:
            cancelled.cancel()
        if waiter.done():
            return waiter.result()
        # Expired or cancelled: record it, unless a person decided first.
        if self._cancelled.is_set():
            mine = Decision(ev.GATE_DECISION_CANCELLED, _SYSTEM, "run cancelled")
        else:
            mine = Decision(ev.GATE_DECISION_EXPIRED, _SYSTEM, "timed out")
        return await self._gates.decide_gate(self.run_id, ref.node_id, ref.iteration, kind, mine)

    async def _attempts(
        self,
        node: flow_pb2.Node,
        iteration: int,
        params: dict[str, Any],
        render_error: TemplateError | None,
        state: _Resume,
    ) -> None:
        node_id = node.id
        policy = self._retry_policy(node)
        max_attempts = max(1, policy.max_attempts)
        backoff = (
            _seconds(policy.initial_backoff)
            if policy.HasField("initial_backoff")
            else _DEFAULT_BACKOFF
        )
        multiplier = policy.backoff_multiplier or 2.0
        max_backoff = (
            _seconds(policy.max_backoff) if policy.HasField("max_backoff") else _DEFAULT_MAX_BACKOFF
        )
        first = state.attempt or 1
        if state.attempt and state.open_attempt and node.WhichOneof("kind") != "approval":
            # The previous owner died mid-attempt: close it, then run it again.
            ref = NodeRef(node_id, iteration, state.attempt)
            await self.emit(
                "node_failed",
                ev.NodeFailed(
                    error=ev.ErrorSummary(
                        reason="INTERRUPTED", message="the server running this attempt stopped"
                    ),
                    duration=_duration(0),
                    will_retry=True,
                    output_json="null",
                ),
                node=ref,
            )
            first = state.attempt + 1
            max_attempts = max(max_attempts, first)
            await self.emit(
                "node_retrying",
                ev.NodeRetrying(
                    next_attempt=first, backoff=_duration(0), max_attempts=max_attempts
                ),
                node=ref,
            )
        elif state.attempt and not state.open_attempt and node.WhichOneof("kind") != "approval":
            first = state.attempt + 1  # a retry was due when the previous owner stopped
            max_attempts = max(max_attempts, first)
        for attempt in range(first, max_attempts + 1):
            ref = NodeRef(node_id, iteration, attempt)
            resume_gate = state.open_attempt and attempt == state.attempt
            outcome = await self._attempt(
                node, ref, params, render_error, max_attempts, resume_gate, state
            )
            if outcome.ok:
                self._outputs[node_id] = outcome.output
                self._nodes[node_id] = NodeStatus.SUCCEEDED
                return
            if (
                attempt < max_attempts
                and not self._cancelled.is_set()
                and outcome.error.reason not in ("TEMPLATE",)
            ):
                wait = min(backoff, max_backoff)
                await self.emit(
                    "node_retrying",
                    ev.NodeRetrying(
                        next_attempt=attempt + 1,
                        backoff=_duration(wait),
                        max_attempts=max_attempts,
                        error=outcome.error,
                    ),
                    node=ref,
                )
                backoff *= multiplier
                try:
                    await asyncio.wait_for(self._cancelled.wait(), wait)
                except TimeoutError:
                    continue
            break
        self._nodes[node_id] = NodeStatus.FAILED
        if not self._handled(node_id) and self._failed_node is None:
            self._failed_node = node_id

    async def _attempt(
        self,
        node: flow_pb2.Node,
        ref: NodeRef,
        params: dict[str, Any],
        render_error: TemplateError | None,
        max_attempts: int,
        resume_gate: bool,
        state: _Resume,
    ) -> _Outcome:
        kind = node.WhichOneof("kind")
        with self._tracer.start_as_current_span(
            f"{telemetry.SPAN_NODE_PREFIX}{ref.node_id}",
            attributes={
                telemetry.ATTR_RUN_ID: self.run_id,
                telemetry.ATTR_NODE_ID: ref.node_id,
                telemetry.ATTR_ATTEMPT: ref.attempt,
                telemetry.ATTR_ITERATION: ref.iteration,
            },
        ) as span:
            ids = state.gate_open_span if resume_gate and state.gate_open_span else _span_ids(span)
            ctx = _Attempt(self, ref, ids)
            if not resume_gate:
                if kind == "approval":
                    started = ev.NodeStarted(adapter="approval", params_json=canonical_json({}))
                else:
                    started = ev.NodeStarted(
                        adapter=node.action.adapter,
                        action=node.action.action,
                        params_json=canonical_json(
                            params or json_format.MessageToDict(node.action.params)
                        ),
                    )
                await self.emit("node_started", started, span=ids, node=ref)
            t0 = time.monotonic()
            heartbeat = asyncio.create_task(self._heartbeats(ctx, t0))
            try:
                if render_error is not None:
                    outcome = _failure("TEMPLATE", str(render_error))
                elif kind == "approval":
                    outcome = await self._approval(node, ref, ids, resume_gate)
                else:
                    outcome = await self._execute(ctx, node, params)
            finally:
                heartbeat.cancel()
                await asyncio.gather(heartbeat, return_exceptions=True)
            elapsed = _duration(time.monotonic() - t0)
            if outcome.ok:
                await self.emit(
                    "node_succeeded",
                    ev.NodeSucceeded(output_json=canonical_json(outcome.output), duration=elapsed),
                    span=ids,
                    node=ref,
                    patch=RunPatch(succeeded_node_count=self._count(NodeStatus.SUCCEEDED) + 1),
                )
                return outcome
            will_retry = (
                ref.attempt < max_attempts
                and not self._cancelled.is_set()
                and outcome.error.reason != "TEMPLATE"
            )
            final_failures = self._count(NodeStatus.FAILED) + (0 if will_retry else 1)
            await self.emit(
                "node_failed",
                ev.NodeFailed(
                    error=outcome.error,
                    duration=elapsed,
                    will_retry=will_retry,
                    output_json=canonical_json(outcome.output),
                ),
                span=ids,
                node=ref,
                patch=None if will_retry else RunPatch(failed_node_count=final_failures),
            )
            span.set_status(trace.Status(trace.StatusCode.ERROR, outcome.error.message))
            span.set_attribute(telemetry.ATTR_ERROR_REASON, outcome.error.reason)
            return outcome

    async def _approval(
        self, node: flow_pb2.Node, ref: NodeRef, span: SpanIds, resumed: bool
    ) -> _Outcome:
        approval = node.approval
        try:
            message = (
                str(render_value(approval.message, self._template_context()))
                or f"Approve {node.id}?"
            )
        except TemplateError as exc:
            return _failure("TEMPLATE", str(exc))
        timeout = _seconds(approval.timeout) if approval.HasField("timeout") else None
        decision = await self._gate(
            ref,
            run_service_pb2.GATE_KIND_APPROVAL,
            message,
            timeout,
            resumed=resumed,
            details=ev.ApprovalRequested(message=message),
            span=span,
        )
        word = ev.GateDecision.Name(decision.decision).removeprefix("GATE_DECISION_")
        output = {"decision": word, "principal": decision.principal, "comment": decision.comment}
        if decision.decision == ev.GATE_DECISION_APPROVED:
            return _Outcome(True, output)
        reason = "CANCELLED" if decision.decision == ev.GATE_DECISION_CANCELLED else word
        return _failure(reason, f"approval {word.lower()} by {decision.principal}", output)

    async def _execute(
        self, ctx: _Attempt, node: flow_pb2.Node, params: Mapping[str, Any]
    ) -> _Outcome:
        action = node.action
        adapter = self._registry.get(action.adapter)
        if adapter is None:  # validated at StartRun; a server restarted with less may differ
            return _failure("ADAPTER_UNKNOWN", f"adapter {action.adapter!r} is not available")
        spec = adapter.actions.get(action.action)
        if spec is not None:
            problems = list(params_validator(spec).iter_errors(params))
            if problems:
                where = ".".join(map(str, problems[0].absolute_path)) or "params"
                return _failure(
                    "PARAMS_INVALID", f"rendered params: {where}: {problems[0].message}"
                )
        if self._cancelled.is_set():
            return _failure("CANCELLED", "run cancelled")
        limit = self._timeout(node)
        inner = asyncio.create_task(adapter.execute(ctx, action.action, params))
        self._inner[ctx.node_id] = inner
        try:
            done, _ = await asyncio.wait({inner}, timeout=limit)
            if not done:
                inner.cancel()
                await asyncio.wait({inner})
                return _failure("TIMEOUT", f"attempt timed out after {limit:g}s")
        finally:
            self._inner.pop(ctx.node_id, None)
        if inner.cancelled():
            return _failure("CANCELLED", "run cancelled")
        exc = inner.exception()
        if exc is None:
            return _Outcome(True, inner.result())
        if isinstance(exc, SandboxRefused):
            await self.emit(
                "sandbox_violation",
                ev.SandboxViolation(
                    kind=exc.kind, adapter=action.adapter, target=exc.target, detail=exc.detail
                ),
                span=ctx.span,
                node=ctx.ref,
            )
        if isinstance(exc, ActionFailed):
            return _Outcome(
                False,
                exc.output,
                ev.ErrorSummary(reason=exc.reason, message=exc.message, exit_code=exc.exit_code),
            )
        log.error("adapter %s failed unexpectedly", action.adapter, exc_info=exc)
        return _failure("ADAPTER_ERROR", f"{type(exc).__name__}: {exc}")

    async def _heartbeats(self, ctx: _Attempt, started: float) -> None:
        interval = self._settings.heartbeat_interval
        last_bytes, stagnant = 0, 0
        while True:
            await asyncio.sleep(interval)
            stagnant = stagnant + 1 if ctx.output_bytes == last_bytes else 0
            last_bytes = ctx.output_bytes
            await self.emit(
                "node_heartbeat",
                ev.NodeHeartbeat(
                    elapsed=_duration(time.monotonic() - started),
                    output_bytes=ctx.output_bytes,
                    stagnant_count=stagnant,
                ),
                span=ctx.span,
                node=ctx.ref,
            )

    async def _finish(
        self, span: trace.Span, started: float, crash: Exception | None = None
    ) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        error: ev.ErrorSummary | None = None
        if crash is not None:
            status = ev.RUN_STATUS_FAILED
            error = ev.ErrorSummary(
                reason="INTERNAL", message="the engine failed; see the server log"
            )
            why = "internal error"
        elif self._cancelled.is_set():
            status = ev.RUN_STATUS_CANCELLED
            error = ev.ErrorSummary(
                reason="CANCELLED", message=self._control_reason or "run cancelled"
            )
            why = "cancelled"
        elif self._failed_node is not None:
            status = ev.RUN_STATUS_FAILED
            error = ev.ErrorSummary(
                reason="NODE_FAILED", message=f"node {self._failed_node!r} failed"
            )
            why = f"node {self._failed_node!r} failed"
        elif self._capped:
            status = ev.RUN_STATUS_PARTIAL
            error = ev.ErrorSummary(
                reason="ITERATION_CAPPED", message="a loop reached its node's max_visits"
            )
            why = "a loop was capped"
        else:
            status, why = ev.RUN_STATUS_SUCCEEDED, "all nodes finished"
        for node_id, node_status in self._nodes.items():
            if node_status is NodeStatus.PENDING:
                await self._skip(node_id, f"run {why}")
        principal = self._control_principal if self._cancelled.is_set() else ""
        await self._set_status(status, why, principal)
        counts = RunPatch(
            status=status,
            succeeded_node_count=self._count(NodeStatus.SUCCEEDED),
            failed_node_count=self._count(NodeStatus.FAILED),
            skipped_node_count=self._count(NodeStatus.SKIPPED),
            finished=True,
            error=error,
        )
        completed = ev.RunCompleted(
            status=status,
            succeeded_node_count=counts.succeeded_node_count or 0,
            failed_node_count=counts.failed_node_count or 0,
            skipped_node_count=counts.skipped_node_count or 0,
            duration=_duration(time.monotonic() - started),
        )
        if error is not None:
            completed.error.CopyFrom(error)
            span.set_status(trace.Status(trace.StatusCode.ERROR, error.message))
        await self.emit("run_completed", completed, patch=counts)
        await self._journal.flush()
