"""An AI attempt's tool calls: function specs, one call announced, held and run.

For each call the model makes: parse the arguments, emit ToolCall, and (when
the action is destructive and the run confirms destructive actions) hold the
call at its own confirmation gate, several per visit; then run it through the
action-node path. The gate row keeps the conversation as it crossed the
boundary, so a server taking the run over while a call is held goes on from
that call without asking the model again. Nothing here fails the node: every
problem goes back to the model as the call's result.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry import trace

from runwire import telemetry
from runwire.engine._gates import SYSTEM, decision_word, hold_gate
from runwire.engine._ports import Decision, HeldCall, ModelGateway, ModelToolCall
from runwire.engine._validate import canonical_json
from runwire.v1 import events_pb2 as ev
from runwire.v1 import flow_pb2, run_service_pb2

if TYPE_CHECKING:
    from runwire.engine._attempts import AttemptContext
    from runwire.engine._orchestrator import RunExecutor

__all__ = [
    "ActionOutcome",
    "Conversation",
    "RunTool",
    "abandon_held",
    "held_context",
    "run_tool_call",
    "tool_function_name",
    "tool_specs",
]


class ActionOutcome(Protocol):
    """What running an action through the attempt's action path returns."""

    ok: bool
    output: Any
    error: ev.ErrorSummary | None


RunTool = Callable[[str, str, dict[str, Any], float], Awaitable[ActionOutcome]]
"""(adapter, action, params, deadline) -> the action's outcome."""


class Conversation(Protocol):
    """What a tool call needs of the attempt's conversation."""

    x: RunExecutor
    ctx: AttemptContext
    gateway: ModelGateway
    by_function: dict[str, str]
    run_tool: RunTool
    deadline: float

    def reveal(self, value: Any) -> Any:
        """Incoming text or JSON with the attempt's placeholders rehydrated."""
        ...

    def snapshot(self, call: ModelToolCall, rest: list[ModelToolCall]) -> str:
        """What a takeover needs to go on from `call` (see held_context)."""
        ...


def tool_function_name(tool: str) -> str:
    """`fs.read-file` -> `fs__read-file`: function names allow no dots."""
    return tool.replace(".", "__", 1)


def _cut(text: str, limit: int) -> str:
    """`text` within `limit` UTF-8 bytes, marked when cut (limits.tool_result_bytes)."""
    data = text.encode()
    if len(data) <= limit:
        return text
    head = data[:limit].decode(errors="ignore")
    return f"{head}\n[truncated: {len(data) - len(head.encode())} more bytes]"


def tool_specs(x: RunExecutor, tools: list[str]) -> list[dict[str, Any]]:
    specs = []
    for tool in tools:
        adapter_name, _, action_name = tool.partition(".")
        adapter = x.registry.get(adapter_name)
        spec = adapter.actions.get(action_name) if adapter else None
        if spec is None:
            continue  # validated at StartRun; a server restarted with less offers less
        specs.append(
            {
                "type": "function",
                "function": {
                    "name": tool_function_name(tool),
                    "description": spec.summary,
                    "parameters": dict(spec.params_schema),
                },
            }
        )
    return specs


async def run_tool_call(
    talk: Conversation, call: ModelToolCall, rest: list[ModelToolCall], *, resumed: bool
) -> str:
    """Announce and run one tool call; returns the tool result the model reads.

    The ToolCall event keeps the arguments as the model sent them
    (placeholders); the action runs with them rehydrated. Model arguments
    are never template-rendered. A destructive call waits at its own
    confirmation gate first (`resumed`: a takeover found it waiting there,
    announced already).

    Nothing here fails the node: bad JSON, an unknown tool, schema errors,
    action failures, sandbox refusals and rejected calls go back to the
    model as the result.
    """
    x, ctx, by_function = talk.x, talk.ctx, talk.by_function
    tool = by_function.get(call.name, call.name.replace("__", ".", 1))
    try:
        args: Any = json.loads(call.arguments or "{}")
    except ValueError as exc:
        args, problem = {}, f"arguments are not JSON ({exc})"
    else:
        problem = "" if isinstance(args, dict) else "arguments must be a JSON object"
        if problem:
            args = {}
    adapter_name, _, action_name = tool.partition(".")
    summary = f"{tool}({', '.join(sorted(args))})" if args else tool
    gated = False
    if tool not in by_function.values():
        problem = problem or (
            f"unknown tool {call.name!r}; tools: {', '.join(sorted(by_function))}"
        )
    elif not problem:
        adapter = x.registry.get(adapter_name)
        real = talk.reveal(args)
        described = adapter.describe_destructive(action_name, real) if adapter else None
        if described is not None and adapter is not None:
            # The summary is an event: it shows the placeholders, not the secrets.
            described = adapter.describe_destructive(action_name, args) or f"{tool} (destructive)"
        if described is not None:
            summary = described
            gated = x.confirm
    if not resumed:
        await x.emit(
            "tool_call",
            ev.ToolCall(
                tool_call_id=call.call_id,
                tool_name=tool,
                summary=summary[:200],
                arguments_json=canonical_json(args),
            ),
            span=ctx.span,
            node=ctx.ref,
        )
    if problem:
        return f"Error: {problem}. Fix the arguments and call again."
    if gated:
        n = x.state.nodes[ctx.ref.node_id]
        held = HeldCall(
            n.tool_gate_open if resumed else len(n.tool_gates) + 1,
            call.call_id,
            "" if resumed else talk.snapshot(call, rest),
        )
        decision = await hold_gate(
            x,
            ctx.ref,
            run_service_pb2.GATE_KIND_CONFIRMATION,
            summary,
            None,
            details=ev.AwaitingConfirmation(
                action_summary=summary[:200],
                adapter=adapter_name,
                action=action_name,
                params_json=canonical_json(args),
                tool_call_id=call.call_id,
            ),
            span=ctx.span,
            call=held,
        )
        if decision.decision != ev.GATE_DECISION_APPROVED:
            why = f": {decision.comment}" if decision.comment else ""
            return (
                f"Error: {decision_word(decision).lower()} by {decision.principal}{why}. "
                "The call did not run; do not call it again, do something else."
            )
    with x.tracer.start_as_current_span(
        f"execute_tool {tool}",
        attributes={
            telemetry.GEN_AI_OPERATION: "execute_tool",
            telemetry.GEN_AI_TOOL_NAME: tool,
            telemetry.GEN_AI_TOOL_CALL_ID: call.call_id,
        },
    ) as span:
        outcome = await talk.run_tool(adapter_name, action_name, talk.reveal(args), talk.deadline)
        if not outcome.ok and outcome.error is not None:
            span.set_status(trace.Status(trace.StatusCode.ERROR, outcome.error.reason))
    if outcome.ok:
        return _cut(canonical_json(outcome.output), talk.gateway.tool_result_bytes)
    err = outcome.error
    detail = f"{err.reason}: {err.message}" if err is not None else "failed"
    return f"Error: {detail}. Fix the arguments and call again."


async def held_context(
    x: RunExecutor, node: flow_pb2.Node, ctx: AttemptContext, call_index: int
) -> dict[str, Any] | None:
    """The conversation a held tool call's gate recorded, or None when it cannot be read."""
    text = await x.gates.call_context(x.run_id, node.id, ctx.ref.iteration, call_index)
    try:
        context = json.loads(text) if text else None
    except ValueError:
        return None
    return context if isinstance(context, dict) and context.get("calls") else None


async def abandon_held(x: RunExecutor, ctx: AttemptContext, call_index: int, why: str) -> None:
    """Close a held tool call's gate that cannot be gone on from (decided by `system` unless
    a person was first), so it is not listed as pending for ever."""
    n = x.state.nodes[ctx.ref.node_id]
    standing = await x.gates.decide_gate(
        x.run_id,
        ctx.ref.node_id,
        ctx.ref.iteration,
        run_service_pb2.GATE_KIND_CONFIRMATION,
        Decision(ev.GATE_DECISION_CANCELLED, SYSTEM, why),
        call_index=call_index,
    )
    await x.emit(
        "confirmation_resolved",
        ev.ConfirmationResolved(
            decision=standing.decision,
            principal=standing.principal,
            comment=standing.comment,
            tool_call_id=n.tool_gates[call_index - 1],
        ),
        span=ctx.span,
        node=ctx.ref,
    )
