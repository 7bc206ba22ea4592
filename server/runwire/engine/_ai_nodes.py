"""One attempt of an AI node: route, stream turns into NodeTokens, run tool calls, record invocations.

Event order inside the attempt (after its NodeStarted):
AiRoutingDecision(route MODEL), then per turn NodeToken* and one AiInvocation
(failed calls too: they were billed and the data left the building), then per
tool call of that turn a ToolCall followed by the action's own events.

Tokens are coalesced (a NodeToken per ~20 ms or 512 bytes) and always flushed
before any other event of the attempt, so the deltas of a turn, concatenated,
are its answer. `token_index` comes from the run state, which folds every
NodeToken: it stays gapless across attempts and takeovers.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration

from runwire.engine._ports import LeaseLost, ModelCallFailed, ModelGateway, ModelRoute, ModelTurn
from runwire.engine._templates import render_value
from runwire.engine._validate import canonical_json
from runwire.v1 import events_pb2 as ev
from runwire.v1 import flow_pb2

if TYPE_CHECKING:
    from runwire.engine._attempts import AttemptContext
    from runwire.engine._orchestrator import RunExecutor

__all__ = ["render_ai_params", "run_ai", "tool_function_name"]

_FLUSH_BYTES = 512
_FLUSH_SECONDS = 0.02
_PREVIEW_CHARS = 512
_RESULT_CHARS = 16_384


class ActionOutcome(Protocol):
    """What running an action through the attempt's action path returns."""

    ok: bool
    output: Any
    error: ev.ErrorSummary | None


RunTool = Callable[[str, str, dict[str, Any], float], Awaitable[ActionOutcome]]
"""(adapter, action, params, deadline) -> the action's outcome."""

AiResult = tuple[bool, Any, ev.ErrorSummary | None]


def tool_function_name(tool: str) -> str:
    """`fs.read-file` -> `fs__read-file`: function names allow no dots."""
    return tool.replace(".", "__", 1)


def _operation(node: flow_pb2.Node) -> str:
    op = node.ai.operation or flow_pb2.AI_OPERATION_GENERATE
    return flow_pb2.AiOperation.Name(op).removeprefix("AI_OPERATION_").lower()


def render_ai_params(x: RunExecutor, node: flow_pb2.Node) -> dict[str, Any]:
    """The node as NodeStarted shows it: prompt and task rendered, the rest as written.

    Raises TemplateError.
    """
    ai = node.ai
    context = x.template_context()
    params: dict[str, Any] = {
        "operation": _operation(node),
        "provider": ai.provider,
        "model": ai.model,
        "prompt": str(render_value(ai.prompt, context)) if ai.prompt else "",
        "task": str(render_value(ai.task, context)),
        "tools": list(ai.tools),
    }
    if ai.max_turns:
        params["max_turns"] = ai.max_turns
    if ai.HasField("contract"):
        params["contract"] = json_format.MessageToDict(ai.contract)
    return params


def _failure(reason: str, message: str) -> AiResult:
    return False, None, ev.ErrorSummary(reason=reason, message=message)


def _duration(seconds: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(int(max(0.0, seconds) * 1e9))
    return d


class _Tokens:
    """Coalesces text deltas into NodeToken events."""

    def __init__(self, x: RunExecutor, ctx: AttemptContext) -> None:
        self._x = x
        self._ctx = ctx
        self._parts: list[str] = []
        self._bytes = 0
        self._since = 0.0

    async def add(self, delta: str) -> None:
        if not self._parts:
            self._since = time.monotonic()
        self._parts.append(delta)
        self._bytes += len(delta.encode())
        self._ctx.count_output(len(delta.encode()))
        if self._bytes >= _FLUSH_BYTES or time.monotonic() - self._since >= _FLUSH_SECONDS:
            await self.flush()

    async def flush(self) -> None:
        if not self._parts:
            return
        text = "".join(self._parts)
        self._parts, self._bytes = [], 0
        x = self._x
        await x.emit(
            "node_token",
            ev.NodeToken(delta=text, token_index=x.state.token_index),
            span=self._ctx.span,
            node=self._ctx.ref,
        )


def _tool_specs(x: RunExecutor, tools: list[str]) -> list[dict[str, Any]]:
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


async def _guarded_call(
    x: RunExecutor,
    ctx: AttemptContext,
    gateway: ModelGateway,
    route: ModelRoute,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    tokens: _Tokens,
    deadline: float,
) -> ModelTurn:
    """One model call, cancelled by CancelRun (the stream closes) and bounded by the attempt."""
    # Sending the prompt is a side effect: only under a committed NodeStarted and a held lease.
    await x.journal.flush()
    if not x.journal.holds(x.run_id):
        raise LeaseLost(x.run_id)
    call = asyncio.create_task(gateway.chat(route, messages, tools, tokens.add))
    x.inner[ctx.node_id] = call
    try:
        done, _ = await asyncio.wait({call}, timeout=max(0.0, deadline - time.monotonic()))
        if not done:
            call.cancel()
            await asyncio.wait({call})
            raise ModelCallFailed(
                "TIMEOUT",
                f"provider {route.provider} model {route.model}: "
                "attempt timed out while the model was answering",
            )
    finally:
        x.inner.pop(ctx.node_id, None)
    if call.cancelled():
        raise ModelCallFailed("CANCELLED", "run cancelled while the model was answering")
    return call.result()


async def run_ai(
    x: RunExecutor,
    ctx: AttemptContext,
    node: flow_pb2.Node,
    params: dict[str, Any],
    run_tool: RunTool,
    *,
    deadline: float,
) -> AiResult:
    """Run one attempt of an AI node; returns (ok, output, error)."""
    gateway = x.settings.ai
    ai = node.ai
    if gateway is None or gateway.problems(ai.provider, ai.model):
        # Validated at StartRun: this server (a takeover) lacks what the starting one had.
        return _failure(
            "ADAPTER_DISABLED",
            f"provider {ai.provider or '(default)'} is not configured on this server",
        )
    if params.get("operation", "generate") != "generate":
        return _failure("ADAPTER_DISABLED", f"operation {params['operation']} is not supported yet")
    route = gateway.route(ai.provider, ai.model)
    await x.emit(
        "ai_routing_decision",
        ev.AiRoutingDecision(
            requested_model=ai.model,
            provider=route.provider,
            model=route.model,
            reason=route.reason,
            route=ev.AI_ROUTE_MODEL,
        ),
        span=ctx.span,
        node=ctx.ref,
    )
    messages: list[dict[str, Any]] = []
    if params.get("prompt"):
        messages.append({"role": "system", "content": params["prompt"]})
    messages.append({"role": "user", "content": params["task"]})
    tools = _tool_specs(x, list(params.get("tools", [])))
    by_function = {tool_function_name(t): t for t in params.get("tools", [])}
    max_turns = int(params.get("max_turns") or gateway.max_turns)
    tokens = _Tokens(x, ctx)
    started = time.monotonic()
    totals = {"input_tokens": 0, "output_tokens": 0, "cost_micros": 0}
    calls_made = 0
    turn_no = 0
    answer: ModelTurn | None = None
    while True:
        turn_no += 1
        if turn_no > max_turns:
            return _failure(
                "MAX_TURNS",
                f"provider {route.provider} model {route.model} still called tools "
                f"after {max_turns} turns",
            )
        t0 = time.monotonic()
        preview = str(messages[-1].get("content") or "")[:_PREVIEW_CHARS]
        try:
            turn = await _guarded_call(x, ctx, gateway, route, messages, tools, tokens, deadline)
        except ModelCallFailed as failed:
            await tokens.flush()
            cost = gateway.cost_micros(route, failed.input_tokens, failed.output_tokens)
            await _invocation(
                x, ctx, route, route.model, failed.input_tokens, failed.output_tokens, cost,
                time.monotonic() - t0, "error", turn_no, preview,
            )  # fmt: skip
            return _failure(failed.reason, failed.message)
        await tokens.flush()
        cost = gateway.cost_micros(route, turn.input_tokens, turn.output_tokens)
        totals["input_tokens"] += turn.input_tokens
        totals["output_tokens"] += turn.output_tokens
        totals["cost_micros"] += cost
        await _invocation(
            x, ctx, route, turn.model, turn.input_tokens, turn.output_tokens, cost,
            time.monotonic() - t0, turn.finish_reason, turn_no, preview,
        )  # fmt: skip
        if turn.finish_reason == "content_filter":
            return _failure(
                "AI_CONTENT_FILTER",
                f"provider {route.provider} model {route.model} withheld its answer "
                "(content filter)",
            )
        if not turn.tool_calls:
            answer = turn
            break
        messages.append(
            {
                "role": "assistant",
                "content": turn.text or None,
                "tool_calls": [
                    {
                        "id": c.call_id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments},
                    }
                    for c in turn.tool_calls
                ],
            }
        )
        for call in turn.tool_calls:
            calls_made += 1
            result = await _tool_call(x, ctx, call.call_id, call.name, call.arguments,
                                      by_function, run_tool, deadline)  # fmt: skip
            messages.append({"role": "tool", "tool_call_id": call.call_id, "content": result})
            if x.cancelled.is_set():
                return _failure("CANCELLED", "run cancelled during a tool call")
    text = answer.text
    try:
        parsed: Any = json.loads(text)
    except ValueError:
        parsed = None
    output = {
        "text": text,
        "json": parsed,
        "provider": route.provider,
        "model": answer.model or route.model,
        "finish_reason": answer.finish_reason,
        "turns": turn_no,
        "tool_calls": calls_made,
        **totals,
        "latency_ms": int((time.monotonic() - started) * 1000),
    }
    return True, output, None


async def _invocation(
    x: RunExecutor,
    ctx: AttemptContext,
    route: ModelRoute,
    model: str,
    input_tokens: int,
    output_tokens: int,
    cost: int,
    seconds: float,
    finish_reason: str,
    turn: int,
    preview: str,
) -> None:
    await x.emit(
        "ai_invocation",
        ev.AiInvocation(
            provider=route.provider,
            model=model or route.model,
            input_token_count=input_tokens,
            output_token_count=output_tokens,
            cost_micros=cost,
            latency=_duration(seconds),
            finish_reason=finish_reason,
            turn=turn,
            input_preview=preview,
        ),
        span=ctx.span,
        node=ctx.ref,
    )


async def _tool_call(
    x: RunExecutor,
    ctx: AttemptContext,
    call_id: str,
    function: str,
    arguments: str,
    by_function: dict[str, str],
    run_tool: RunTool,
    deadline: float,
) -> str:
    """Announce and run one tool call; returns the tool result the model reads.

    Nothing here fails the node: bad JSON, an unknown tool, schema errors,
    action failures and sandbox refusals go back to the model as the result.
    """
    tool = by_function.get(function, function.replace("__", ".", 1))
    try:
        args: Any = json.loads(arguments or "{}")
    except ValueError as exc:
        args, problem = {}, f"arguments are not JSON ({exc})"
    else:
        problem = "" if isinstance(args, dict) else "arguments must be a JSON object"
        if problem:
            args = {}
    adapter_name, _, action_name = tool.partition(".")
    summary = f"{tool}({', '.join(sorted(args))})" if args else tool
    if tool not in by_function.values():
        problem = problem or f"unknown tool {function!r}; tools: {', '.join(sorted(by_function))}"
    elif not problem:
        adapter = x.registry.get(adapter_name)
        described = adapter.describe_destructive(action_name, args) if adapter else None
        if described is not None:
            summary = described
            if x.confirm:
                # Several confirmation gates per visit are not built yet: refuse, safely.
                problem = (
                    f"{described}: destructive tool calls need a confirmation gate, "
                    "which this server does not open for tool calls; do something else"
                )
    await x.emit(
        "tool_call",
        ev.ToolCall(
            tool_call_id=call_id,
            tool_name=tool,
            summary=summary[:200],
            arguments_json=canonical_json(args),
        ),
        span=ctx.span,
        node=ctx.ref,
    )
    if problem:
        return f"Error: {problem}. Fix the arguments and call again."
    outcome = await run_tool(adapter_name, action_name, args, deadline)
    if outcome.ok:
        return canonical_json(outcome.output)[:_RESULT_CHARS]
    err = outcome.error
    detail = f"{err.reason}: {err.message}" if err is not None else "failed"
    return f"Error: {detail}. Fix the arguments and call again."
