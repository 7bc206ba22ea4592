"""Drive one run: start node visits as the run state says they are ready, and narrate it.

A node *visit* is one scheduling of the node (`iteration` in the envelope); a
loop edge back to an earlier node starts a new visit of it and of everything
downstream of it. Each visit runs one or more *attempts* (`_attempts`), and
may wait at a human gate (`_gates`).

The executor changes the run only through `emit`: each event is built,
folded into the `RunState` and handed to the journal. Taking over a run that
another process started folds its stored events through the same state, then
continues exactly as the live path would have: finished nodes are not rerun.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry import context as otel_context
from opentelemetry import trace

from runwire import telemetry
from runwire.adapters import Registry
from runwire.engine._attempts import duration_of, run_visit
from runwire.engine._events import NodeRef, SpanIds, new_event
from runwire.engine._fan_out import run_fan_out
from runwire.engine._gates import SYSTEM, GateKey, gate_key
from runwire.engine._metering import METERED, RunMeter
from runwire.engine._ports import (
    Decision,
    GateStore,
    Journal,
    JournalFailed,
    LeaseLost,
    ModelGateway,
    RunPatch,
)
from runwire.engine._run_state import NodeStatus, RunState
from runwire.engine._templates import contains_template
from runwire.engine._validate import Graph, canonical_json
from runwire.metrics import NOOP_METRICS, Metrics
from runwire.v1 import events_pb2 as ev
from runwire.v1 import flow_pb2

__all__ = ["EngineSettings", "RunExecutor", "RunPlan"]

log = logging.getLogger(__name__)

# Events after which the run's row (status and node counts) changes.
_ROW_EVENTS = frozenset(
    {"node_succeeded", "node_failed", "node_skipped", "run_status_changed", "run_completed"}
)


@dataclass(frozen=True)
class EngineSettings:
    """Server-wide engine knobs."""

    workspace_root: Path
    heartbeat_interval: float = 5.0
    max_parallel: int = 4
    ai: ModelGateway | None = None  # the configured model providers; None: ai nodes refused
    metrics: Metrics = NOOP_METRICS  # runs, attempts and AI usage are counted as emitted


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


def _span_ids(span: trace.Span) -> SpanIds:
    c = span.get_span_context()
    return SpanIds(trace.format_trace_id(c.trace_id), trace.format_span_id(c.span_id))


class RunExecutor:
    """Executes one run to exactly one RunCompleted (unless the process dies or loses the run)."""

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
        self.journal = journal
        self.gates = gates
        self.registry = registry
        self.tracer = tracer
        self.settings = settings
        self.state = RunState(plan.run_id, plan.graph)
        self._meter = RunMeter(settings.metrics, plan.graph)
        self.cancelled = asyncio.Event()
        # (node_id, GATE_KIND_*, item_index or None) -> the visit or item waiting on it
        self.gate_waiters: dict[GateKey, asyncio.Future[Decision]] = {}
        self.inner: dict[NodeRef, asyncio.Task[Any]] = {}  # adapter calls, cancelled on cancel
        flow_settings = self.graph.flow.settings
        self.flow_retry_policy = flow_settings.default_retry_policy
        self.confirm = (
            not flow_settings.HasField("confirm_destructive") or flow_settings.confirm_destructive
        )
        self.max_parallel = flow_settings.max_parallel or settings.max_parallel
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # Fan-out nodes whose task runs items; an item in flight, not its
        # node, counts against the run's max_parallel.
        self._fan_outs: set[str] = set()
        self.items_running = 0
        self._room_waiters: list[asyncio.Future[None]] = []
        self._wake = asyncio.Event()
        self._pause_requested = plan.pause_requested
        self._control_principal = ""
        self._control_reason = ""
        self._stop: BaseException | None = None  # a node task crashed or the lease was lost
        self._raw_params: dict[str, tuple[dict[str, Any], bool]] = {}

    # -- events -------------------------------------------------------------

    async def emit(
        self,
        variant: str,
        payload: Message,
        *,
        span: SpanIds | None = None,
        node: NodeRef | None = None,
        error: ev.ErrorSummary | None = None,
    ) -> None:
        """Append one event with the next seq."""
        await self.emit_many([(variant, payload)], span=span, node=node, error=error)

    async def emit_many(
        self,
        payloads: list[tuple[str, Message]],
        *,
        span: SpanIds | None = None,
        node: NodeRef | None = None,
        error: ev.ErrorSummary | None = None,
    ) -> None:
        """Build events with consecutive seqs, fold them into the state, journal them."""
        await self.journal.wait_for_space()
        # From here to append there is no await: seqs cannot be lost to a cancel.
        if not self.journal.holds(self.run_id):
            raise LeaseLost(self.run_id)
        st = self.state
        events = []
        row = False
        for variant, payload in payloads:
            event = new_event(
                self.run_id, st.seq + 1, variant, payload, span=span or st.run_span, node=node
            )
            st.apply(event)
            events.append(event)
            if variant in METERED:
                self._meter.saw(variant, payload, node)
            row = row or variant in _ROW_EVENTS
        patch = None
        if row:
            patch = RunPatch(
                status=st.status,
                succeeded_node_count=st.count(NodeStatus.SUCCEEDED),
                failed_node_count=st.count(NodeStatus.FAILED),
                skipped_node_count=st.count(NodeStatus.SKIPPED),
                finished=st.finished,
                error=error,
            )
        self.journal.append(self.run_id, events, patch)

    async def _set_status(self, status: int, reason: str, principal: str = "") -> None:
        await self.emit(
            "run_status_changed",
            ev.RunStatusChanged(
                previous_status=self.state.status,  # type: ignore[arg-type]  # an enum number
                new_status=status,  # type: ignore[arg-type]  # an enum number
                reason=reason,
                principal=principal,
            ),
        )

    # -- what attempts and gates ask -------------------------------------------

    def raw_params(self, node_id: str) -> tuple[dict[str, Any], bool]:
        """An action node's params as the flow has them, and whether any is a template."""
        found = self._raw_params.get(node_id)
        if found is None:
            raw = json_format.MessageToDict(self.graph.nodes[node_id].action.params)
            found = self._raw_params[node_id] = (raw, contains_template(raw))
        return found

    def template_context(self) -> dict[str, Any]:
        """`inputs` and `nodes` for templates; node entries are built only when read."""
        return {"inputs": self.plan.inputs, "nodes": self.state.nodes_view()}

    def describe_destructive(
        self, action: flow_pb2.ActionNode, params: Mapping[str, Any]
    ) -> str | None:
        """The confirmation line of a destructive action, or None."""
        adapter = self.registry.get(action.adapter)
        return None if adapter is None else adapter.describe_destructive(action.action, params)

    async def skip(self, node_id: str, reason: str, *, new_visit: bool = True) -> None:
        """Emit NodeSkipped; `new_visit=False` when the visit already started (a rejected gate)."""
        n = self.state.nodes[node_id]
        await self.emit(
            "node_skipped",
            ev.NodeSkipped(reason=reason),
            node=NodeRef(node_id, n.visit + 1 if new_visit else n.visit, 0),
        )

    # -- control --------------------------------------------------------------

    def control(self, *, pause: bool | None, cancel: bool, principal: str, reason: str) -> None:
        """Apply a pause, resume or cancel request; it takes effect at a node boundary."""
        if cancel and not self.cancelled.is_set():
            self._control_principal, self._control_reason = principal, reason
            self.cancelled.set()
            for inner in self.inner.values():
                inner.cancel()
        elif pause is not None and pause != self._pause_requested:
            self._pause_requested = pause
            self._control_principal, self._control_reason = principal, reason
        self._wake.set()

    def deliver_gate(
        self,
        node_id: str,
        kind: int,
        decision: Decision,
        item_index: int | None = None,
        *,
        iteration: int,
        call_index: int | None = None,
    ) -> None:
        """Hand a gate decision made through the API to the node (item, tool call) waiting on it.

        A decision reaches only the gate it was made on: the visit's
        iteration and the held tool call are part of the key, so an earlier
        call's or visit's decision never resolves a later one.
        """
        waiter = self.gate_waiters.get(gate_key(node_id, iteration, kind, item_index, call_index))
        if waiter is not None and not waiter.done():
            waiter.set_result(decision)

    # -- the run --------------------------------------------------------------

    async def run(self) -> None:
        """Execute (or continue) the run; ends with RunCompleted unless the process dies."""
        flow = self.graph.flow
        parent = self.plan.parent_context
        history = self.plan.history or []
        for event in history:
            self.state.apply(event)
        if self.state.finished:
            return
        if history:
            parent = self._remote_parent()
        span = self.tracer.start_span(
            f"{telemetry.SPAN_RUN_PREFIX}{flow.name}",
            context=parent,
            attributes={telemetry.ATTR_RUN_ID: self.run_id, telemetry.ATTR_FLOW_NAME: flow.name},
        )
        try:
            if not history:
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
                    span=_span_ids(span),
                )
                await self._set_status(ev.RUN_STATUS_RUNNING, "run started")
            else:
                # Events of this life ride on this life's span.
                self.state.run_span = _span_ids(span)
                if self.plan.cancel_requested:
                    self.control(
                        pause=None,
                        cancel=True,
                        principal=SYSTEM,
                        reason="cancel requested before takeover",
                    )
            with trace.use_span(span, end_on_exit=False):
                await self._announce_caps()
                for node_id in self.state.open_nodes():
                    self._launch(node_id, resume=True)
                await self._schedule()
            await self._finish(span)
        except (asyncio.CancelledError, LeaseLost, JournalFailed) as exc:
            # Process shutdown, another server owns the run now, or nothing can
            # be recorded any more: the run stays unfinished in the store for
            # whoever holds its lease next.
            await self._cancel_tasks()
            if isinstance(exc, asyncio.CancelledError):
                raise
            log.error("run %s: %s; stopped here without finishing it", self.run_id, exc)
        except Exception as exc:
            log.exception("run %s crashed", self.run_id)
            await self._finish(span, crash=exc)
        finally:
            span.end()

    def _remote_parent(self) -> otel_context.Context:
        ids = self.state.run_span
        ctx = trace.SpanContext(
            int(ids.trace_id or "0", 16),
            int(ids.span_id or "0", 16),
            is_remote=True,
            trace_flags=trace.TraceFlags(1),
        )
        return trace.set_span_in_context(trace.NonRecordingSpan(ctx))

    async def _schedule(self) -> None:
        st = self.state
        while True:
            # Cleared before looking, not before waiting: a wake-up raised while
            # this pass emits (a control request, a node finishing) is kept.
            self._wake.clear()
            if self._stop is not None:
                raise self._stop
            cancelled = self.cancelled.is_set()
            if not cancelled and st.failed_node is None:
                await self._skip_unreachable()
                if not self._pause_requested and not st.paused:
                    self._start_ready()
            if not cancelled and not self._tasks:
                if self._pause_requested and not st.paused:
                    await self.emit(
                        "run_paused",
                        ev.RunPaused(
                            principal=self._control_principal, reason=self._control_reason
                        ),
                    )
                    await self._set_status(ev.RUN_STATUS_PAUSED, "paused", self._control_principal)
                elif not self._pause_requested and st.paused:
                    await self.emit(
                        "run_resumed",
                        ev.RunResumed(
                            principal=self._control_principal,
                            reason=self._control_reason,
                            paused_duration=duration_of(max(0, time.time_ns() - st.paused_ns)),
                        ),
                    )
                    await self._set_status(
                        ev.RUN_STATUS_RUNNING, "resumed", self._control_principal
                    )
                    continue
            if not self._tasks and (not st.paused or cancelled):
                if cancelled or st.failed_node is not None or not st.count(NodeStatus.PENDING):
                    return
                if not st.has_candidates():
                    return  # unreachable in a validated graph; never spin
                continue
            await self._wake.wait()

    async def _skip_unreachable(self) -> None:
        while (found := self.state.unreachable()) is not None:
            node_id, reason = found
            await self.skip(node_id, reason)

    def _start_ready(self) -> None:
        room = self.max_parallel - self._units()
        if room > 0:
            for node_id in self.state.ready(room, set(self._tasks)):
                self._launch(node_id, resume=False)

    # -- the run's max_parallel, shared by nodes and fan-out items -------------

    def _units(self) -> int:
        return len(self._tasks) - len(self._fan_outs) + self.items_running

    def has_room(self, mine: int) -> bool:
        """A fan-out with `mine` items in flight may start another (it may always start one)."""
        return mine == 0 or self._units() < self.max_parallel

    async def room_changed(self) -> None:
        """Wait until a node or an item ends."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._room_waiters.append(waiter)
        await waiter

    def item_done(self) -> None:
        """A fan-out item ended: its slot is free for a node or another item."""
        self.items_running -= 1
        self._notify_room()

    def _notify_room(self) -> None:
        waiters, self._room_waiters = self._room_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._wake.set()

    def _launch(self, node_id: str, *, resume: bool) -> None:
        if self.graph.nodes[node_id].HasField("for_each"):
            self._fan_outs.add(node_id)
        self._tasks[node_id] = asyncio.create_task(
            self._run_node(node_id, resume=resume), name=f"node:{node_id}"
        )

    async def _run_node(self, node_id: str, *, resume: bool) -> None:
        try:
            if node_id in self._fan_outs:
                await run_fan_out(self, node_id, resume=resume)
            else:
                await run_visit(self, node_id, resume=resume)
            await self._announce_caps()
        except asyncio.CancelledError:
            raise
        except (LeaseLost, JournalFailed) as exc:
            self._stop = self._stop or exc
        except Exception as exc:
            log.exception("node %s of run %s crashed", node_id, self.run_id)
            self._stop = self._stop or exc
        finally:
            self._tasks.pop(node_id, None)
            self._fan_outs.discard(node_id)
            self._notify_room()

    async def _announce_caps(self) -> None:
        """Emit IterationCapped for loop edges the state found capped."""
        while self.state.caps_due:
            cap = self.state.caps_due[0]
            await self.emit(
                "iteration_capped",
                ev.IterationCapped(max_visits=cap.max_visits, source_node_id=cap.source),
                node=NodeRef(cap.head, cap.head_visit, 0),
            )

    async def _cancel_tasks(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _finish(self, span: trace.Span, crash: Exception | None = None) -> None:
        await self._cancel_tasks()
        st = self.state
        cancelled = self.cancelled.is_set()
        end = st.end(
            cancelled=self._control_reason if cancelled else None, crashed=crash is not None
        )
        if crash is not None:
            # Close attempts the crash left open, so the stream stays grammatical.
            for node_id in st.open_nodes():
                n = st.nodes[node_id]
                for index, item in sorted(n.items.items()):
                    if item.attempt_open:
                        await self.emit(
                            "node_failed",
                            ev.NodeFailed(
                                error=end.error,
                                duration=duration_of(0),
                                will_retry=False,
                                output_json="null",
                            ),
                            node=NodeRef(node_id, n.visit, item.attempt, index),
                        )
                if n.attempt_open:
                    await self.emit(
                        "node_failed",
                        ev.NodeFailed(
                            error=end.error,
                            duration=duration_of(0),
                            will_retry=False,
                            output_json="null",
                        ),
                        node=NodeRef(node_id, n.visit, n.attempt),
                    )
        for node_id, n in st.nodes.items():
            if n.status is NodeStatus.PENDING:
                await self.skip(node_id, f"run {end.why}")
        await self._set_status(end.status, end.why, self._control_principal if cancelled else "")
        completed = ev.RunCompleted(
            status=end.status,  # type: ignore[arg-type]  # an enum number
            succeeded_node_count=st.count(NodeStatus.SUCCEEDED),
            failed_node_count=st.count(NodeStatus.FAILED),
            skipped_node_count=st.count(NodeStatus.SKIPPED),
            input_token_count=st.input_tokens,
            output_token_count=st.output_tokens,
            cost_micros=st.cost_micros,
            # From RunStarted, whichever server wrote it: a takeover does not reset it.
            duration=duration_of(max(0, time.time_ns() - st.started_ns)),
        )
        if end.error is not None:
            completed.error.CopyFrom(end.error)
            span.set_status(trace.Status(trace.StatusCode.ERROR, end.error.message))
        await self.emit("run_completed", completed, error=end.error)
        await self.journal.flush()
