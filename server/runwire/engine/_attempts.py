"""One node visit: render params, pass its gate, run attempts with retries, timeouts and heartbeats.

A visit that a takeover finds half done continues where its events say it
stood: an attempt whose NodeStarted has no terminal event was interrupted (it
is closed as INTERRUPTED and tried again), a retry that was announced starts,
an open gate is waited on again without being announced twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from opentelemetry import trace

from runwire import telemetry
from runwire.adapters import ActionFailed, SandboxRefused
from runwire.engine._ai_nodes import ai_unavailable, render_ai_params, run_ai
from runwire.engine._events import NodeRef, SpanIds
from runwire.engine._gates import decision_word, hold_gate
from runwire.engine._ports import Decision, LeaseLost
from runwire.engine._run_state import ItemState, NodeState
from runwire.engine._templates import TemplateError, render_value
from runwire.engine._validate import canonical_json, params_validator
from runwire.v1 import events_pb2 as ev
from runwire.v1 import flow_pb2, run_service_pb2

if TYPE_CHECKING:
    from runwire.engine._orchestrator import RunExecutor

__all__ = ["duration_of", "run_action", "run_visit"]

log = logging.getLogger(__name__)

_DEFAULT_TIMEOUT = 600.0
_DEFAULT_BACKOFF = 1.0
_DEFAULT_MAX_BACKOFF = 60.0
_LOG_SLICE = 256
# Failures another attempt cannot change: a template error, a person's decision, a route.
_FINAL_REASONS = frozenset({"TEMPLATE", "REVIEW_REJECTED", "REVIEW_EXPIRED", "AI_SUPPRESSED"})


def duration_of(nanos: int) -> Duration:
    """A Duration of `nanos` nanoseconds."""
    d = Duration()
    d.FromNanoseconds(nanos)
    return d


def _seconds(d: Duration) -> float:
    return d.seconds + d.nanos / 1e9


def _span_ids(span: trace.Span) -> SpanIds:
    c = span.get_span_context()
    return SpanIds(trace.format_trace_id(c.trace_id), trace.format_span_id(c.span_id))


@dataclass(frozen=True)
class _Where:
    """Where the visit stood when this executor picked it up (all zero for a new visit)."""

    attempt: int = 0
    attempt_open: bool = False
    next_attempt: int = 0
    gate_span: SpanIds | None = None
    at_review: bool = False  # an AI answer is held (or was just decided) at a review gate
    at_tool_gate: int = 0  # the call_index of an AI tool call held at its gate (0: none)

    @classmethod
    def of(cls, n: NodeState | ItemState) -> _Where:
        review = run_service_pb2.GATE_KIND_REVIEW
        at_review = n.attempt_open and (n.gate == review or n.decided_kind == review)
        held = n.tool_gate_open if isinstance(n, NodeState) and n.attempt_open else 0
        return cls(n.attempt, n.attempt_open, n.next_attempt, n.gate_span, at_review, held)


@dataclass
class _Outcome:
    ok: bool
    output: Any = None
    error: ev.ErrorSummary | None = None
    will_retry: bool = False


def _failure(reason: str, message: str, output: Any = None) -> _Outcome:
    return _Outcome(False, output, ev.ErrorSummary(reason=reason, message=message))


class AttemptContext:
    """The NodeContext an adapter sees for one attempt."""

    def __init__(self, x: RunExecutor, ref: NodeRef, span: SpanIds) -> None:
        self._x = x
        self.ref = ref
        self.span = span
        self.output_bytes = 0
        self._line_numbers: dict[int, int] = {}

    @property
    def run_id(self) -> str:
        return self._x.run_id

    @property
    def node_id(self) -> str:
        return self.ref.node_id

    @property
    def workspace(self) -> Path:
        return self._x.workspace

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
            await self._x.emit_many(payloads, span=self.span, node=self.ref)


async def run_visit(x: RunExecutor, node_id: str, *, resume: bool) -> None:
    """Run one visit of a node: a new one, or the one a takeover found open."""
    node = x.graph.nodes[node_id]
    n = x.state.nodes[node_id]
    where = _Where.of(n) if resume else _Where()
    iteration = n.visit if resume else n.visit + 1
    params: dict[str, Any] = {}
    render_error: TemplateError | None = None
    kind = node.WhichOneof("kind")
    if kind == "action":
        if resume and n.params_json:
            # Rendered when the visit began; rendering again could read newer state.
            params = json.loads(n.params_json)
        else:
            try:
                raw, templated = x.raw_params(node_id)
                params = render_value(raw, x.template_context()) if templated else raw
            except TemplateError as exc:
                render_error = exc
        if render_error is None and x.confirm and where.attempt == 0:
            summary = x.describe_destructive(node.action, params)
            if summary is not None:
                decision = await hold_gate(
                    x,
                    NodeRef(node_id, iteration, 0),
                    run_service_pb2.GATE_KIND_CONFIRMATION,
                    summary,
                    None,
                    details=ev.AwaitingConfirmation(
                        action_summary=summary,
                        adapter=node.action.adapter,
                        action=node.action.action,
                        params_json=canonical_json(params),
                    ),
                )
                if decision.decision != ev.GATE_DECISION_APPROVED:
                    word = decision_word(decision).lower()
                    await x.skip(
                        node_id, f"confirmation {word} by {decision.principal}", new_visit=False
                    )
                    return
    elif kind == "ai":
        why = ai_unavailable(x, node)
        if why is not None and not (resume and (where.attempt_open or where.at_review)):
            # A server that took the run over without this node's provider.
            await x.skip(node_id, why, new_visit=not resume)
            return
        if resume and n.params_json:
            params = json.loads(n.params_json)
        else:
            try:
                params = render_ai_params(x, node)
            except TemplateError as exc:
                render_error = exc
    await _attempts(x, node, iteration, params, render_error, where)


async def _attempts(
    x: RunExecutor,
    node: flow_pb2.Node,
    iteration: int,
    params: dict[str, Any],
    render_error: TemplateError | None,
    where: _Where,
    item: NodeRef | None = None,
) -> None:
    """The attempts of a visit, or of one item of a fan-out visit (`item` names it)."""
    node_id = node.id

    def ref_of(attempt: int) -> NodeRef:
        if item is None:
            return NodeRef(node_id, iteration, attempt)
        return NodeRef(node_id, iteration, attempt, item.item_index, item.item_key)

    policy = node.retry_policy if node.HasField("retry_policy") else x.flow_retry_policy
    max_attempts = max(1, policy.max_attempts)
    backoff = (
        _seconds(policy.initial_backoff) if policy.HasField("initial_backoff") else _DEFAULT_BACKOFF
    )
    multiplier = policy.backoff_multiplier or 2.0
    max_backoff = (
        _seconds(policy.max_backoff) if policy.HasField("max_backoff") else _DEFAULT_MAX_BACKOFF
    )
    approval = node.WhichOneof("kind") == "approval"
    first = where.attempt or 1
    if (
        where.attempt
        and where.attempt_open
        and not (approval or where.at_review or where.at_tool_gate)
    ):
        # The previous owner died mid-attempt: close it, then run it again. (An
        # approval, a held AI answer or a held tool call waits at its gate again instead.)
        ref = ref_of(where.attempt)
        first = where.attempt + 1
        max_attempts = max(max_attempts, first)
        await x.emit_many(
            [
                (
                    "node_failed",
                    ev.NodeFailed(
                        error=ev.ErrorSummary(
                            reason="INTERRUPTED",
                            message="the server running this attempt stopped",
                        ),
                        duration=duration_of(0),
                        will_retry=True,
                        output_json="null",
                    ),
                ),
                (
                    "node_retrying",
                    ev.NodeRetrying(
                        next_attempt=first, backoff=duration_of(0), max_attempts=max_attempts
                    ),
                ),
            ],
            node=ref,
        )
    elif where.attempt and not where.attempt_open:
        # A retry was due when the previous owner stopped.
        first = where.next_attempt or where.attempt + 1
        max_attempts = max(max_attempts, first)
    for attempt in range(first, max_attempts + 1):
        ref = ref_of(attempt)
        resumed = where.attempt_open and attempt == where.attempt
        wait = min(backoff, max_backoff)
        outcome = await _attempt(
            x, node, ref, params, render_error, max_attempts, wait, resumed, where
        )
        if not outcome.will_retry:
            return
        backoff *= multiplier
        try:
            async with asyncio.timeout(wait):
                await x.cancelled.wait()
        except TimeoutError:
            continue
        # Cancelled while waiting to retry: the announced retry will not run.
        if item is None:
            await x.skip(node_id, "retry not started: run cancelled", new_visit=False)
        else:
            await x.emit(
                "node_skipped",
                ev.NodeSkipped(reason="retry not started: run cancelled"),
                node=ref_of(0),
            )
        return


async def _attempt(
    x: RunExecutor,
    node: flow_pb2.Node,
    ref: NodeRef,
    params: dict[str, Any],
    render_error: TemplateError | None,
    max_attempts: int,
    backoff: float,
    resumed: bool,
    where: _Where,
) -> _Outcome:
    """One attempt, closed by NodeSucceeded or NodeFailed (with NodeRetrying when it will retry)."""
    kind = node.WhichOneof("kind")
    with x.tracer.start_as_current_span(
        f"{telemetry.SPAN_NODE_PREFIX}{ref.node_id}",
        attributes={
            telemetry.ATTR_RUN_ID: x.run_id,
            telemetry.ATTR_NODE_ID: ref.node_id,
            telemetry.ATTR_ATTEMPT: ref.attempt,
            telemetry.ATTR_ITERATION: ref.iteration,
            **({} if ref.item_index is None else {telemetry.ATTR_ITEM_INDEX: ref.item_index}),
        },
    ) as span:
        ids = where.gate_span if resumed and where.gate_span else _span_ids(span)
        ctx = AttemptContext(x, ref, ids)
        if not resumed:
            if kind == "approval":
                started = ev.NodeStarted(adapter="approval", params_json=canonical_json({}))
            elif kind == "ai":
                started = ev.NodeStarted(
                    adapter="ai",
                    action=str(params.get("operation", "generate")),
                    params_json=canonical_json(params),
                )
            else:
                started = ev.NodeStarted(
                    adapter=node.action.adapter,
                    action=node.action.action,
                    params_json=canonical_json(
                        params if params or ref.item_index is not None else x.raw_params(node.id)[0]
                    ),
                )
            await x.emit("node_started", started, span=ids, node=ref)
        n = x.state.nodes[ref.node_id]
        t0 = (
            n.attempt_started_ns
            if ref.item_index is None
            else n.items[ref.item_index].attempt_started_ns
        )
        if render_error is not None:
            outcome = _failure("TEMPLATE", str(render_error))
        elif kind == "approval":
            beats = _Heartbeats(x, ctx, t0)
            heartbeat = asyncio.create_task(beats.run())
            try:
                outcome = await _approval(x, node, ref, ids)
            finally:
                heartbeat.cancel()
                await asyncio.gather(heartbeat, return_exceptions=True)
        elif kind == "ai":
            beats = _Heartbeats(x, ctx, t0)
            limit = _timeout(x, node)
            ok, output, error = await run_ai(
                x,
                ctx,
                node,
                params,
                lambda adapter, action, args, deadline: run_action(
                    x, ctx, adapter, action, args, beats, check=True, deadline=deadline, limit=limit
                ),
                deadline=time.monotonic() + limit,
                at_review=resumed and where.at_review,
                held_call=where.at_tool_gate if resumed else 0,
            )
            outcome = _Outcome(ok, output, error)
        else:
            outcome = await _execute(x, ctx, node, params, _Heartbeats(x, ctx, t0))
        elapsed = duration_of(max(0, time.time_ns() - t0))
        if outcome.ok:
            await x.emit(
                "node_succeeded",
                ev.NodeSucceeded(output_json=canonical_json(outcome.output), duration=elapsed),
                span=ids,
                node=ref,
            )
            return outcome
        assert outcome.error is not None
        outcome.will_retry = (
            ref.attempt < max_attempts
            and not x.cancelled.is_set()
            and outcome.error.reason not in _FINAL_REASONS
        )
        failed = ev.NodeFailed(
            error=outcome.error,
            duration=elapsed,
            will_retry=outcome.will_retry,
            output_json=canonical_json(outcome.output),
        )
        payloads: list[tuple[str, Message]] = [("node_failed", failed)]
        if outcome.will_retry:
            # One append: a takeover never sees the failure without its retry notice.
            retrying = ev.NodeRetrying(
                next_attempt=ref.attempt + 1,
                backoff=duration_of(int(backoff * 1e9)),
                max_attempts=max_attempts,
                error=outcome.error,
            )
            payloads.append(("node_retrying", retrying))
        await x.emit_many(payloads, span=ids, node=ref)
        span.set_status(trace.Status(trace.StatusCode.ERROR, outcome.error.message))
        span.set_attribute(telemetry.ATTR_ERROR_REASON, outcome.error.reason)
        return outcome


async def _approval(x: RunExecutor, node: flow_pb2.Node, ref: NodeRef, span: SpanIds) -> _Outcome:
    approval = node.approval
    try:
        message = str(render_value(approval.message, x.template_context())) or f"Approve {node.id}?"
    except TemplateError as exc:
        return _failure("TEMPLATE", str(exc))
    timeout = _seconds(approval.timeout) if approval.HasField("timeout") else None
    decision: Decision = await hold_gate(
        x,
        ref,
        run_service_pb2.GATE_KIND_APPROVAL,
        message,
        timeout,
        details=ev.ApprovalRequested(message=message),
        span=span,
    )
    word = decision_word(decision)
    output = {"decision": word, "principal": decision.principal, "comment": decision.comment}
    if decision.decision == ev.GATE_DECISION_APPROVED:
        return _Outcome(True, output)
    reason = "CANCELLED" if decision.decision == ev.GATE_DECISION_CANCELLED else word
    return _failure(reason, f"approval {word.lower()} by {decision.principal}", output)


def _timeout(x: RunExecutor, node: flow_pb2.Node) -> float:
    if node.HasField("timeout"):
        return _seconds(node.timeout)
    settings = x.graph.flow.settings
    if settings.HasField("default_timeout"):
        return _seconds(settings.default_timeout)
    return _DEFAULT_TIMEOUT


async def _execute(
    x: RunExecutor,
    ctx: AttemptContext,
    node: flow_pb2.Node,
    params: Mapping[str, Any],
    beats: _Heartbeats,
) -> _Outcome:
    action = node.action
    limit = _timeout(x, node)
    return await run_action(
        x,
        ctx,
        action.adapter,
        action.action,
        params,
        beats,
        check=x.raw_params(node.id)[1],
        deadline=time.monotonic() + limit,
        limit=limit,
    )


async def run_action(
    x: RunExecutor,
    ctx: AttemptContext,
    adapter_name: str,
    action_name: str,
    params: Mapping[str, Any],
    beats: _Heartbeats,
    *,
    check: bool,
    deadline: float,
    limit: float,
) -> _Outcome:
    """Run one adapter action under the attempt: schema, lease, timeout, sandbox events.

    An action node runs through here, and so does each tool call of an AI node.
    `check` asks for the params schema check (done at StartRun for untemplated params).
    """
    adapter = x.registry.get(adapter_name)
    if adapter is None:  # validated at StartRun; a server restarted with less may differ
        return _failure("ADAPTER_UNKNOWN", f"adapter {adapter_name!r} is not available")
    spec = adapter.actions.get(action_name)
    if spec is not None and check:
        problems = list(params_validator(spec).iter_errors(params))
        if problems:
            where = ".".join(map(str, problems[0].absolute_path)) or "params"
            return _failure("PARAMS_INVALID", f"rendered params: {where}: {problems[0].message}")
    if x.cancelled.is_set():
        return _failure("CANCELLED", "run cancelled")
    if spec is None or not spec.pure:
        # A side effect starts only once its NodeStarted is committed under
        # this server's lease: a server that lost the run starts nothing.
        await x.journal.flush()
        if not x.journal.holds(x.run_id):
            raise LeaseLost(x.run_id)
    inner = asyncio.create_task(adapter.execute(ctx, action_name, params))
    x.inner[ctx.ref] = inner
    try:
        # Heartbeats are sent from this wait, not from a task of their own:
        # most actions end long before the first one is due.
        while not (
            await asyncio.wait({inner}, timeout=min(deadline, beats.due) - time.monotonic())
        )[0]:
            if time.monotonic() >= deadline:
                inner.cancel()
                await asyncio.wait({inner})
                return _failure("TIMEOUT", f"attempt timed out after {limit:g}s")
            await beats.beat()
    finally:
        x.inner.pop(ctx.ref, None)
    if inner.cancelled():
        return _failure("CANCELLED", "run cancelled")
    exc = inner.exception()
    if exc is None:
        return _Outcome(True, inner.result())
    if isinstance(exc, LeaseLost):
        raise exc
    if isinstance(exc, SandboxRefused):
        await x.emit(
            "sandbox_violation",
            ev.SandboxViolation(
                kind=exc.kind, adapter=adapter_name, target=exc.target, detail=exc.detail
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
    log.error("adapter %s failed unexpectedly", adapter_name, exc_info=exc)
    return _failure("ADAPTER_ERROR", f"{type(exc).__name__}: {exc}")


class _Heartbeats:
    """NodeHeartbeats of one attempt: elapsed time, output bytes, how long output stood still."""

    def __init__(self, x: RunExecutor, ctx: AttemptContext, started_ns: int) -> None:
        self._x = x
        self._ctx = ctx
        self._started_ns = started_ns
        self._interval = x.settings.heartbeat_interval
        self.due = time.monotonic() + self._interval
        self._last_bytes = 0
        self._stagnant = 0

    async def beat(self) -> None:
        """Emit one heartbeat if it is due."""
        now = time.monotonic()
        if now < self.due:
            return
        self.due = now + self._interval
        ctx = self._ctx
        self._stagnant = self._stagnant + 1 if ctx.output_bytes == self._last_bytes else 0
        self._last_bytes = ctx.output_bytes
        await self._x.emit(
            "node_heartbeat",
            ev.NodeHeartbeat(
                elapsed=duration_of(max(0, time.time_ns() - self._started_ns)),
                output_bytes=ctx.output_bytes,
                stagnant_count=self._stagnant,
            ),
            span=ctx.span,
            node=ctx.ref,
        )

    async def run(self) -> None:
        """Beat on schedule until cancelled (while a node waits at a gate)."""
        while True:
            await asyncio.sleep(max(0.0, self.due - time.monotonic()))
            await self.beat()
