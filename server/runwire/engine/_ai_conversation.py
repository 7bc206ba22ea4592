"""The turns of one AI attempt: model calls streamed into NodeTokens, their audit, the tool calls between them.

Per turn: NodeToken* and one AiInvocation, then per tool call of that turn a
ToolCall followed by the action's own events (`_ai_tools.py`). Tokens are
coalesced (a NodeToken per ~20 ms or 512 bytes) and always flushed before any
other event of the attempt, so the deltas of a turn, concatenated, are its
answer. `token_index` comes from the run state, which folds every NodeToken:
it stays gapless across attempts and takeovers.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from runwire import telemetry
from runwire.engine._ai_audit import PREVIEW_CHARS, AiResult, emit_invocation, failure
from runwire.engine._ai_calls import bounded_call, may_send, model_span
from runwire.engine._ai_tools import RunTool, run_tool_call, tool_function_name, tool_specs
from runwire.engine._ports import (
    ModelCallFailed,
    ModelGateway,
    ModelRoute,
    ModelToolCall,
    ModelTurn,
)
from runwire.engine._sanitize import Sanitizer
from runwire.engine._validate import canonical_json
from runwire.v1 import events_pb2 as ev

if TYPE_CHECKING:
    from runwire.engine._attempts import AttemptContext
    from runwire.engine._orchestrator import RunExecutor

__all__ = ["AiConversation"]

_FLUSH_BYTES = 512
_FLUSH_SECONDS = 0.02


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


async def _guarded_call(
    x: RunExecutor,
    ctx: AttemptContext,
    gateway: ModelGateway,
    route: ModelRoute,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    schema: dict[str, Any] | None,
    tokens: _Tokens,
    deadline: float,
) -> ModelTurn:
    """One chat turn, cancelled by CancelRun and bounded by the attempt (see _ai_calls)."""
    await may_send(x)
    return await bounded_call(
        x,
        ctx,
        lambda: gateway.chat(route, messages, tools, tokens.add, schema=schema),
        deadline,
        doing="the model was answering",
        who=f"provider {route.provider} model {route.model}: ",
    )


class AiConversation:
    """The turns of one attempt: model calls, their audit events, the tool calls between them."""

    def __init__(
        self,
        x: RunExecutor,
        ctx: AttemptContext,
        gateway: ModelGateway,
        route: ModelRoute,
        params: dict[str, Any],
        run_tool: RunTool,
        deadline: float,
        version: str,
    ) -> None:
        self.x, self.ctx, self.gateway, self.route = x, ctx, gateway, route
        self.run_tool, self.deadline, self.version = run_tool, deadline, version
        # Cloud providers see placeholders instead of secrets; the map stays here.
        self.sanitizer = Sanitizer(gateway.sanitize_patterns) if route.cloud else None
        self.messages: list[dict[str, Any]] = []
        if params.get("prompt"):
            self.messages.append({"role": "system", "content": self.hide(params["prompt"])})
        self.messages.append({"role": "user", "content": self.hide(params["task"])})
        self.tools = tool_specs(x, list(params.get("tools", [])))
        self.by_function = {tool_function_name(t): t for t in params.get("tools", [])}
        self.max_turns = int(params.get("max_turns") or gateway.max_turns)
        self.schema: dict[str, Any] | None = params.get("contract")
        self.tokens = _Tokens(x, ctx)
        self.started = time.monotonic()
        self.totals = {"input_tokens": 0, "output_tokens": 0, "cost_micros": 0}
        self.calls_made = 0
        self.turn_no = 0
        self.resumed_calls: list[ModelToolCall] = []
        self.repairing = False  # in the one repair turn (its answer is final)

    def hide(self, text: str) -> str:
        """Outgoing text as it may cross the boundary."""
        return self.sanitizer.hide(text) if self.sanitizer else text

    def reveal(self, value: Any) -> Any:
        """Incoming text or JSON with this attempt's placeholders rehydrated."""
        return self.sanitizer.reveal_value(value) if self.sanitizer else value

    def who(self) -> str:
        return f"provider {self.route.provider} model {self.route.model}"

    async def answer(self, extra_turns: int = 0) -> ModelTurn | AiResult:
        """Turns until one without tool calls (the answer), or the attempt's failure."""
        route = self.route
        if self.resumed_calls:
            # A takeover found a tool call held at its gate: the turn goes on from there.
            calls, self.resumed_calls = self.resumed_calls, []
            failed = await self._run_calls(calls, held_first=True)
            if failed is not None:
                return failed
        while True:
            self.turn_no += 1
            if self.turn_no > self.max_turns + extra_turns:
                return failure(
                    "MAX_TURNS", f"{self.who()} still called tools after {self.max_turns} turns"
                )
            t0 = time.monotonic()
            preview = str(self.messages[-1].get("content") or "")[:PREVIEW_CHARS]
            turn = await self._call(route)
            if isinstance(turn, ModelCallFailed):
                await self.tokens.flush()
                cost = self.gateway.cost_micros(route, turn.input_tokens, turn.output_tokens)
                await self._invocation(
                    route.model, turn.input_tokens, turn.output_tokens, cost,
                    time.monotonic() - t0, "error", preview,
                )  # fmt: skip
                return failure(turn.reason, turn.message)
            await self.tokens.flush()
            cost = self.gateway.cost_micros(route, turn.input_tokens, turn.output_tokens)
            self.totals["input_tokens"] += turn.input_tokens
            self.totals["output_tokens"] += turn.output_tokens
            self.totals["cost_micros"] += cost
            await self._invocation(
                turn.model, turn.input_tokens, turn.output_tokens, cost,
                time.monotonic() - t0, turn.finish_reason, preview,
            )  # fmt: skip
            if turn.finish_reason == "content_filter":
                return failure(
                    "AI_CONTENT_FILTER", f"{self.who()} withheld its answer (content filter)"
                )
            if not turn.tool_calls:
                return turn
            self.messages.append(
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
            failed = await self._run_calls(list(turn.tool_calls), held_first=False)
            if failed is not None:
                return failed

    async def _run_calls(self, calls: list[ModelToolCall], *, held_first: bool) -> AiResult | None:
        """Run a turn's tool calls in the model's order, feeding each result back."""
        for i, call in enumerate(calls):
            resumed = held_first and i == 0
            if not resumed:
                self.calls_made += 1  # a resumed call was counted before the takeover
            result = await run_tool_call(self, call, calls[i + 1 :], resumed=resumed)
            self.messages.append(
                {"role": "tool", "tool_call_id": call.call_id, "content": self.hide(result)}
            )
            if self.x.cancelled.is_set():
                return failure("CANCELLED", "run cancelled during a tool call")
        return None

    def snapshot(self, call: ModelToolCall, rest: list[ModelToolCall]) -> str:
        """What a takeover needs to go on from `call` without asking the model again.

        Only what already crossed the boundary (placeholders, never secrets);
        `hidden` says whether the sanitizer hid anything, which a new server
        could not put back.
        """
        return canonical_json(
            {
                "messages": self.messages,
                "calls": [
                    {"id": c.call_id, "name": c.name, "arguments": c.arguments}
                    for c in [call, *rest]
                ],
                "turn": self.turn_no,
                "calls_made": self.calls_made,
                "totals": self.totals,
                "repairing": self.repairing,
                "hidden": bool(self.sanitizer and self.sanitizer.hidden()),
            }
        )

    def restore(self, context: dict[str, Any]) -> None:
        """Continue the conversation a held tool call's gate recorded (see `snapshot`)."""
        self.messages = list(context["messages"])
        self.resumed_calls = [
            ModelToolCall(c["id"], c["name"], c["arguments"]) for c in context["calls"]
        ]
        self.turn_no = int(context["turn"])
        self.calls_made = int(context["calls_made"])
        self.totals = {k: int(v) for k, v in context["totals"].items()}
        self.repairing = bool(context.get("repairing"))

    async def _call(self, route: ModelRoute) -> ModelTurn | ModelCallFailed:
        """One model call inside its `chat {model}` CLIENT span (GenAI conventions)."""
        with model_span(self.x.tracer, "chat", route) as span:
            if self.gateway.capture_content:
                span.set_attribute(telemetry.GEN_AI_INPUT_MESSAGES, json.dumps(self.messages))
            try:
                turn = await _guarded_call(
                    self.x, self.ctx, self.gateway, route, self.messages, self.tools,
                    self.schema, self.tokens, self.deadline,
                )  # fmt: skip
            except ModelCallFailed as failed:
                span.set_status(trace.Status(trace.StatusCode.ERROR, failed.message))
                span.set_attribute(telemetry.ATTR_ERROR_REASON, failed.reason)
                return failed
            span.set_attributes(
                {
                    telemetry.GEN_AI_RESPONSE_MODEL: turn.model or route.model,
                    telemetry.GEN_AI_RESPONSE_FINISH_REASONS: [turn.finish_reason],
                    telemetry.GEN_AI_USAGE_INPUT_TOKENS: turn.input_tokens,
                    telemetry.GEN_AI_USAGE_OUTPUT_TOKENS: turn.output_tokens,
                }
            )
            if self.gateway.capture_content:
                answer = [{"role": "assistant", "content": turn.text}]
                span.set_attribute(telemetry.GEN_AI_OUTPUT_MESSAGES, json.dumps(answer))
            return turn

    async def _invocation(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cost: int,
        seconds: float,
        finish_reason: str,
        preview: str,
    ) -> None:
        await emit_invocation(
            self.x, self.ctx, self.route,
            model=model or self.route.model, input_tokens=input_tokens,
            output_tokens=output_tokens, cost=cost, seconds=seconds,
            finish_reason=finish_reason, turn=self.turn_no, preview=preview,
            contract_version=self.version,
        )  # fmt: skip

    def output(self, answer: ModelTurn, parsed: Any) -> dict[str, Any]:
        return {
            "text": self.reveal(answer.text),
            "json": parsed,
            "provider": self.route.provider,
            "model": answer.model or self.route.model,
            "finish_reason": answer.finish_reason,
            "turns": self.turn_no,
            "tool_calls": self.calls_made,
            **self.totals,
            "latency_ms": int((time.monotonic() - self.started) * 1000),
        }
