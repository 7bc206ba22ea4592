"""Drive one run: schedule its graph, run node attempts, narrate every step as events."""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from opentelemetry import context as otel_context
from opentelemetry import trace

from runwire import telemetry
from runwire.adapters import ActionFailed, Registry, SandboxRefused
from runwire.engine._events import NodeRef, SpanIds, new_event
from runwire.engine._state import Journal, RunPatch
from runwire.engine._validate import Graph, canonical_json
from runwire.v1 import events_pb2 as ev
from runwire.v1 import flow_pb2

__all__ = ["EngineSettings", "RunExecutor", "RunPlan"]

log = logging.getLogger(__name__)

_DEFAULT_TIMEOUT = 600.0
_DEFAULT_BACKOFF = 1.0
_DEFAULT_MAX_BACKOFF = 60.0


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


class NodeStatus(enum.Enum):
    """Where a node is in this run."""

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

    async def log(self, stream: ev.LogStream, lines: list[str]) -> None:
        payloads: list[tuple[str, Message]] = []
        n = self._line_numbers.get(stream, 0)
        for line in lines:
            n += 1
            payloads.append(("node_log", ev.NodeLog(stream=stream, line=line, line_number=n)))
        self._line_numbers[stream] = n
        await self._executor.emit_many(payloads, span=self.span, node=self.ref)


class RunExecutor:
    """Executes one run to exactly one RunCompleted."""

    def __init__(
        self,
        plan: RunPlan,
        journal: Journal,
        registry: Registry,
        tracer: trace.Tracer,
        settings: EngineSettings,
    ) -> None:
        self.plan = plan
        self.run_id = plan.run_id
        self.graph = plan.graph
        self.workspace = settings.workspace_root / plan.run_id
        self._journal = journal
        self._registry = registry
        self._tracer = tracer
        self._settings = settings
        self._seq = 0
        self._status: ev.RunStatus = ev.RUN_STATUS_PENDING
        self._nodes = dict.fromkeys(self.graph.nodes, NodeStatus.PENDING)
        self._outputs: dict[str, Any] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._inner: dict[str, asyncio.Task[Any]] = {}
        self._wake = asyncio.Event()
        self._cancelled = asyncio.Event()
        self._pause_requested = False
        self._paused_since: float | None = None
        self._control_principal = ""
        self._control_reason = ""
        self._failed_node: str | None = None
        self._run_span = SpanIds("", "")
        settings_max = self.graph.flow.settings.max_parallel
        self._max_parallel = settings_max or settings.max_parallel

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

    # -- the run --------------------------------------------------------------

    async def run(self) -> None:
        """Execute the run; always ends with RunCompleted unless the process dies."""
        flow = self.graph.flow
        span = self._tracer.start_span(
            f"{telemetry.SPAN_RUN_PREFIX}{flow.name}",
            context=self.plan.parent_context,
            attributes={telemetry.ATTR_RUN_ID: self.run_id, telemetry.ATTR_FLOW_NAME: flow.name},
        )
        self._run_span = _span_ids(span)
        started = time.monotonic()
        try:
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
            with trace.use_span(span, end_on_exit=False):
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
                    # Unreachable in a validated DAG; guard against spinning anyway.
                    return
                continue
            self._wake.clear()
            await self._wake.wait()

    def _ready(self, node_id: str) -> bool:
        return all(self._nodes[e.source] in _TERMINAL for e in self.graph.incoming[node_id])

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

    async def _skip(self, node_id: str, reason: str) -> None:
        self._nodes[node_id] = NodeStatus.SKIPPED
        await self.emit(
            "node_skipped",
            ev.NodeSkipped(reason=reason),
            node=NodeRef(node_id, 1, 0),
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
                self._tasks[node_id] = asyncio.create_task(
                    self._run_node(node_id), name=f"node:{node_id}"
                )
                running += 1

    async def _run_node(self, node_id: str) -> None:
        try:
            await self._attempts(node_id)
        except Exception:
            log.exception("node %s of run %s crashed", node_id, self.run_id)
            self._nodes[node_id] = NodeStatus.FAILED
            self._failed_node = self._failed_node or node_id
        finally:
            self._tasks.pop(node_id, None)
            self._wake.set()

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

    async def _attempts(self, node_id: str) -> None:
        node = self.graph.nodes[node_id]
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
        for attempt in range(1, max_attempts + 1):
            ref = NodeRef(node_id, 1, attempt)
            outcome = await self._attempt(node, ref)
            if outcome.ok:
                self._outputs[node_id] = outcome.output
                self._nodes[node_id] = NodeStatus.SUCCEEDED
                return
            if attempt < max_attempts and not self._cancelled.is_set():
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
        handled = any(
            e.condition in (flow_pb2.EDGE_CONDITION_FAILURE, flow_pb2.EDGE_CONDITION_ALWAYS)
            for e in self.graph.outgoing[node_id]
        )
        if not handled and self._failed_node is None:
            self._failed_node = node_id

    async def _attempt(self, node: flow_pb2.Node, ref: NodeRef) -> _Outcome:
        action = node.action
        params: dict[str, Any] = json_format.MessageToDict(action.params)
        policy = self._retry_policy(node)
        max_attempts = max(1, policy.max_attempts)
        with self._tracer.start_as_current_span(
            f"{telemetry.SPAN_NODE_PREFIX}{ref.node_id}",
            attributes={
                telemetry.ATTR_RUN_ID: self.run_id,
                telemetry.ATTR_NODE_ID: ref.node_id,
                telemetry.ATTR_ATTEMPT: ref.attempt,
                telemetry.ATTR_ITERATION: ref.iteration,
            },
        ) as span:
            ids = _span_ids(span)
            ctx = _Attempt(self, ref, ids)
            await self.emit(
                "node_started",
                ev.NodeStarted(
                    adapter=action.adapter, action=action.action, params_json=canonical_json(params)
                ),
                span=ids,
                node=ref,
            )
            started = time.monotonic()
            heartbeat = asyncio.create_task(self._heartbeats(ctx, started))
            try:
                outcome = await self._execute(ctx, action, params, self._timeout(node))
            finally:
                heartbeat.cancel()
                await asyncio.gather(heartbeat, return_exceptions=True)
            elapsed = _duration(time.monotonic() - started)
            if outcome.ok:
                await self.emit(
                    "node_succeeded",
                    ev.NodeSucceeded(output_json=canonical_json(outcome.output), duration=elapsed),
                    span=ids,
                    node=ref,
                    patch=RunPatch(succeeded_node_count=self._count(NodeStatus.SUCCEEDED) + 1),
                )
                return outcome
            will_retry = ref.attempt < max_attempts and not self._cancelled.is_set()
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

    async def _execute(
        self, ctx: _Attempt, action: flow_pb2.ActionNode, params: Mapping[str, Any], limit: float
    ) -> _Outcome:
        adapter = self._registry.get(action.adapter)
        if adapter is None:  # validated at StartRun; a server restarted with less may differ
            return _Outcome(
                False,
                None,
                ev.ErrorSummary(
                    reason="ADAPTER_UNKNOWN", message=f"adapter {action.adapter!r} is not available"
                ),
            )
        if self._cancelled.is_set():
            return _Outcome(
                False, None, ev.ErrorSummary(reason="CANCELLED", message="run cancelled")
            )
        inner = asyncio.create_task(adapter.execute(ctx, action.action, params))
        self._inner[ctx.node_id] = inner
        try:
            done, _ = await asyncio.wait({inner}, timeout=limit)
            if not done:
                inner.cancel()
                await asyncio.wait({inner})
                return _Outcome(
                    False,
                    None,
                    ev.ErrorSummary(
                        reason="TIMEOUT", message=f"attempt timed out after {limit:g}s"
                    ),
                )
        finally:
            self._inner.pop(ctx.node_id, None)
        if inner.cancelled():
            return _Outcome(
                False, None, ev.ErrorSummary(reason="CANCELLED", message="run cancelled")
            )
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
        return _Outcome(
            False,
            None,
            ev.ErrorSummary(reason="ADAPTER_ERROR", message=f"{type(exc).__name__}: {exc}"),
        )

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
