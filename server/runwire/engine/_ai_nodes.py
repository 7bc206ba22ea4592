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
import hashlib
import json
import time
from typing import TYPE_CHECKING, Any

import jsonschema
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from opentelemetry import trace

from runwire import telemetry
from runwire.engine._ai_tools import (
    RunTool,
    abandon_held,
    held_context,
    run_tool_call,
    tool_function_name,
    tool_specs,
)
from runwire.engine._gates import decision_word, hold_gate
from runwire.engine._ports import (
    Decision,
    LeaseLost,
    ModelCallFailed,
    ModelGateway,
    ModelRoute,
    ModelToolCall,
    ModelTurn,
)
from runwire.engine._sanitize import Sanitizer
from runwire.engine._templates import render_value
from runwire.engine._validate import canonical_json
from runwire.v1 import events_pb2 as ev
from runwire.v1 import flow_pb2, run_service_pb2

if TYPE_CHECKING:
    from runwire.engine._attempts import AttemptContext
    from runwire.engine._orchestrator import RunExecutor

__all__ = [
    "ai_unavailable",
    "classify_schema",
    "contract_version",
    "contract_violations",
    "pointer_value",
    "render_ai_params",
    "run_ai",
]

_FLUSH_BYTES = 512
_FLUSH_SECONDS = 0.02
_PREVIEW_CHARS = 512


AiResult = tuple[bool, Any, ev.ErrorSummary | None]


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
    if ai.labels:
        params["labels"] = list(ai.labels)
    if ai.HasField("contract"):
        params["contract"] = json_format.MessageToDict(ai.contract)
    return params


def ai_unavailable(x: RunExecutor, node: flow_pb2.Node) -> str | None:
    """Why this server cannot serve the AI node (its provider is missing or forbidden), or None."""
    ai = node.ai
    gateway = x.settings.ai
    if gateway is None:
        return f"no AI provider is configured on this server (the node asks for {ai.provider!r})"
    embedding = ai.operation == flow_pb2.AI_OPERATION_EMBED
    problems = gateway.problems(ai.provider, ai.model, embedding=embedding)
    if problems:
        return f"this server cannot serve the node: {problems[0][1]}"
    return None


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
    """One model call, cancelled by CancelRun (the stream closes) and bounded by the attempt."""
    # Sending the prompt is a side effect: only under a committed NodeStarted and a held lease.
    await x.journal.flush()
    if not x.journal.holds(x.run_id):
        raise LeaseLost(x.run_id)
    call = asyncio.create_task(gateway.chat(route, messages, tools, tokens.add, schema=schema))
    x.inner[ctx.ref] = call
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
        x.inner.pop(ctx.ref, None)
    if call.cancelled():
        raise ModelCallFailed("CANCELLED", "run cancelled while the model was answering")
    return call.result()


class _Conversation:
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
                return _failure(
                    "MAX_TURNS", f"{self.who()} still called tools after {self.max_turns} turns"
                )
            t0 = time.monotonic()
            preview = str(self.messages[-1].get("content") or "")[:_PREVIEW_CHARS]
            turn = await self._call(route)
            if isinstance(turn, ModelCallFailed):
                await self.tokens.flush()
                cost = self.gateway.cost_micros(route, turn.input_tokens, turn.output_tokens)
                await self._invocation(
                    route.model, turn.input_tokens, turn.output_tokens, cost,
                    time.monotonic() - t0, "error", preview,
                )  # fmt: skip
                return _failure(turn.reason, turn.message)
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
                return _failure(
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
                return _failure("CANCELLED", "run cancelled during a tool call")
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
        with self.x.tracer.start_as_current_span(
            f"chat {route.model}",
            kind=trace.SpanKind.CLIENT,
            attributes={
                telemetry.GEN_AI_OPERATION: "chat",
                telemetry.GEN_AI_PROVIDER: route.provider,
                telemetry.GEN_AI_REQUEST_MODEL: route.model,
            },
        ) as span:
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
        await self.x.emit(
            "ai_invocation",
            ev.AiInvocation(
                provider=self.route.provider,
                model=model or self.route.model,
                input_token_count=input_tokens,
                output_token_count=output_tokens,
                cost_micros=cost,
                latency=_duration(seconds),
                finish_reason=finish_reason,
                turn=self.turn_no,
                input_preview=preview,
                contract_version=self.version,
            ),
            span=self.ctx.span,
            node=self.ctx.ref,
        )

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


async def run_ai(
    x: RunExecutor,
    ctx: AttemptContext,
    node: flow_pb2.Node,
    params: dict[str, Any],
    run_tool: RunTool,
    *,
    deadline: float,
    at_review: bool = False,
    held_call: int = 0,
) -> AiResult:
    """Run one attempt of an AI node; returns (ok, output, error).

    `at_review`: a takeover found this attempt's answer held at its review
    gate; it waits there again and calls no model. `held_call`: a takeover
    found this attempt's tool call number `held_call` waiting at its gate; it
    waits there again and the turn goes on from there, without asking the
    model again for the turn it is in.
    """
    ai = node.ai
    operation = params.get("operation", "generate")
    embedding = operation == "embed"
    schema: dict[str, Any] | None = params.get("contract")
    if operation == "classify":
        schema = classify_schema(list(ai.labels))
    version = contract_version(node)
    gateway = x.settings.ai
    if at_review:
        held = json.loads(x.state.nodes[node.id].held_json or "null")
        provider, model = ai.provider, ai.model
        if gateway is not None and not gateway.problems(ai.provider, ai.model):
            route = gateway.route(ai.provider, ai.model)
            provider, model = route.provider, route.model
        output: dict[str, Any] = {"provider": provider, "model": model}
        return await _review(x, ctx, node, schema, held, output, None)
    context = await held_context(x, node, ctx, held_call) if held_call else None
    if gateway is None or gateway.problems(ai.provider, ai.model, embedding=embedding):
        # Validated at StartRun: this server (a takeover) lacks what the starting one had.
        if held_call:
            await abandon_held(x, ctx, held_call, "this server cannot serve the node's provider")
        return _failure(
            "ADAPTER_DISABLED",
            f"provider {ai.provider or '(default)'} is not configured on this server",
        )
    route = gateway.route(ai.provider, ai.model, embedding=embedding)
    if held_call and (context is None or context.get("hidden")):
        # Nothing to go on from (or secrets this server cannot put back): the
        # held call is dropped and the model asked again from the start.
        await abandon_held(
            x, ctx, held_call, "the server holding this call stopped; the model is asked again"
        )
        held_call, context = 0, None
    if not held_call:
        await x.emit(
            "ai_routing_decision",
            ev.AiRoutingDecision(
                requested_model=ai.model,
                provider=route.provider,
                model=route.model,
                reason=route.reason,
                route=ev.AI_ROUTE_MODEL,
                contract_version=version,
            ),
            span=ctx.span,
            node=ctx.ref,
        )
    if embedding:
        return await _embed(x, ctx, gateway, route, params["task"], deadline)
    if operation == "classify":
        labels = ", ".join(json.dumps(label, ensure_ascii=False) for label in ai.labels)
        instruction = (
            f"Classify the user's message with exactly one of these labels: {labels}. "
            'Answer with JSON only: {"label": <one of the labels>, "confidence": <0..1>}.'
        )
        prompt = params.get("prompt") or ""
        params = {**params, "prompt": f"{prompt}\n\n{instruction}".strip(), "contract": schema}
    talk = _Conversation(x, ctx, gateway, route, params, run_tool, deadline, version)
    if context is not None:
        talk.restore(context)
    answer = await talk.answer(extra_turns=1 if talk.repairing else 0)
    if not isinstance(answer, ModelTurn):
        return answer
    if schema is None and not ai.HasField("review_policy"):
        return True, talk.output(answer, _parse(talk.reveal(answer.text))), None
    if answer.finish_reason == "length":
        return _failure("AI_LENGTH", f"{talk.who()} hit its output limit before the answer ended")
    parsed, violations = _judge(schema, talk.reveal(answer.text))
    if violations and not talk.repairing:
        # One repair turn: the model sees what it broke and answers again.
        talk.repairing = True
        talk.messages.append({"role": "assistant", "content": answer.text})
        talk.messages.append(
            {
                "role": "user",
                "content": talk.hide(
                    "Your answer breaks its contract (a JSON Schema):\n- "
                    + "\n- ".join(violations)
                    + "\nAnswer again with only JSON that satisfies the schema."
                ),
            }
        )
        repaired = await talk.answer(extra_turns=1)
        if not isinstance(repaired, ModelTurn):
            return repaired
        answer = repaired
        parsed, violations = _judge(schema, talk.reveal(answer.text))
    held = parsed if parsed is not _NOT_JSON else talk.reveal(answer.text)
    output = talk.output(answer, None if parsed is _NOT_JSON else parsed)
    if operation == "classify" and isinstance(parsed, dict):
        output = {"label": parsed.get("label"), "confidence": parsed.get("confidence"), **output}
    route_kind, confidence, threshold, reasoning = _route(ai, parsed, violations)
    await x.emit(
        "ai_routing_decision",
        ev.AiRoutingDecision(
            requested_model=ai.model,
            provider=route.provider,
            model=output["model"],
            reason=reasoning,
            route=route_kind,  # type: ignore[arg-type]  # an enum number
            confidence=confidence,
            threshold=threshold,
            contract_version=version,
        ),
        span=ctx.span,
        node=ctx.ref,
    )
    if route_kind == ev.AI_ROUTE_SUPPRESS:
        return (
            False,
            output,
            ev.ErrorSummary(
                reason="AI_SUPPRESSED", message=f"{talk.who()}: answer suppressed: {reasoning}"
            ),
        )
    if route_kind in (ev.AI_ROUTE_HUMAN_REVIEW, ev.AI_ROUTE_CONTRACT_VIOLATION):
        details = ev.AiReviewRequired(
            reason=reasoning,
            output_json=canonical_json(held),
            violations=violations,
            confidence=confidence,
            reasoning=f"{ev.AiRoute.Name(route_kind).removeprefix('AI_ROUTE_')}: {threshold}",
        )
        return await _review(x, ctx, node, schema, held, output, details)
    return True, output, None


async def _embed(
    x: RunExecutor,
    ctx: AttemptContext,
    gateway: ModelGateway,
    route: ModelRoute,
    text: str,
    deadline: float,
) -> AiResult:
    """An EMBED attempt: one embeddings call, audited like a chat call."""
    await x.journal.flush()
    if not x.journal.holds(x.run_id):
        raise LeaseLost(x.run_id)
    t0 = time.monotonic()
    with x.tracer.start_as_current_span(
        f"embeddings {route.model}",
        kind=trace.SpanKind.CLIENT,
        attributes={
            telemetry.GEN_AI_OPERATION: "embeddings",
            telemetry.GEN_AI_PROVIDER: route.provider,
            telemetry.GEN_AI_REQUEST_MODEL: route.model,
        },
    ) as span:
        call = asyncio.create_task(gateway.embed(route, text))
        x.inner[ctx.ref] = call
        try:
            done, _ = await asyncio.wait({call}, timeout=max(0.0, deadline - time.monotonic()))
            if not done:
                call.cancel()
                await asyncio.wait({call})
        finally:
            x.inner.pop(ctx.ref, None)
        failure: ModelCallFailed | None = None
        if not done:
            failure = ModelCallFailed("TIMEOUT", "attempt timed out while embedding")
        elif call.cancelled():
            failure = ModelCallFailed("CANCELLED", "run cancelled while embedding")
        elif isinstance(call.exception(), ModelCallFailed):
            failure = call.exception()  # type: ignore[assignment]  # checked just above
        elif call.exception() is not None:
            raise call.exception()  # type: ignore[misc]  # an unexpected bug: the node crashes
        if failure is not None:
            span.set_status(trace.Status(trace.StatusCode.ERROR, failure.message))
        else:
            span.set_attribute(telemetry.GEN_AI_USAGE_INPUT_TOKENS, call.result().input_tokens)
    result = None if failure is not None else call.result()
    tokens = result.input_tokens if result else 0
    cost = gateway.cost_micros(route, tokens, 0)
    await x.emit(
        "ai_invocation",
        ev.AiInvocation(
            provider=route.provider,
            model=result.model if result else route.model,
            input_token_count=tokens,
            cost_micros=cost,
            latency=_duration(time.monotonic() - t0),
            finish_reason="error" if failure else "embedding",
            turn=1,
            input_preview=text[:_PREVIEW_CHARS],
        ),
        span=ctx.span,
        node=ctx.ref,
    )
    if failure is not None or result is None:
        assert failure is not None
        return _failure(failure.reason, failure.message)
    output = {
        "embedding": result.vector,
        "dimensions": len(result.vector),
        "model": result.model,
        "provider": route.provider,
        "input_tokens": tokens,
        "cost_micros": cost,
    }
    return True, output, None


_NOT_JSON: Any = object()


def _parse(text: str) -> Any:
    """The answer as JSON (fences stripped), or None when it is prose."""
    value = _parse_strict(text)
    return None if value is _NOT_JSON else value


def _parse_strict(text: str) -> Any:
    body = text.strip()
    if body.startswith("```"):
        # Models like to fence JSON: ```json ... ```
        body = body.split("\n", 1)[1] if "\n" in body else ""
        body = body.rsplit("```", 1)[0]
    try:
        return json.loads(body)
    except ValueError:
        return _NOT_JSON


def _judge(schema: dict[str, Any] | None, text: str) -> tuple[Any, list[str]]:
    """The parsed answer and its contract violations (as `path: message`)."""
    parsed = _parse_strict(text)
    if parsed is _NOT_JSON:
        return _NOT_JSON, ["(root): the answer is not JSON"]
    return parsed, contract_violations(schema, parsed)


def contract_violations(schema: dict[str, Any] | None, value: Any) -> list[str]:
    """Each way `value` breaks the JSON Schema (draft 2020-12), as `path: message`."""
    if schema is None:
        return []
    validator = jsonschema.Draft202012Validator(schema)
    found = sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"[:300] for e in found[:20]
    ]


def classify_schema(labels: list[str]) -> dict[str, Any]:
    """The contract of a CLASSIFY node: one of its labels and a confidence."""
    return {
        "type": "object",
        "required": ["label", "confidence"],
        "properties": {
            "label": {"enum": labels},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        },
    }


def contract_version(node: flow_pb2.Node) -> str:
    """The node's contract version: as written, or a digest of the canonical contract."""
    ai = node.ai
    if ai.contract_version:
        return ai.contract_version
    if ai.operation == flow_pb2.AI_OPERATION_CLASSIFY:
        text = canonical_json(classify_schema(list(ai.labels)))
    elif not ai.HasField("contract"):
        return ""
    else:
        text = canonical_json(json_format.MessageToDict(ai.contract))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def pointer_value(doc: Any, pointer: str) -> Any:
    """RFC 6901: the value at `pointer` in `doc`; raises LookupError when absent."""
    if pointer == "":
        return doc
    for token in pointer.split("/")[1:]:
        key = token.replace("~1", "/").replace("~0", "~")
        if isinstance(doc, dict):
            doc = doc[key]
        elif isinstance(doc, list) and key.isdigit() and int(key) < len(doc):
            doc = doc[int(key)]
        else:
            raise LookupError(pointer)
    return doc


def _route(ai: flow_pb2.AiNode, parsed: Any, violations: list[str]) -> tuple[int, float, str, str]:
    """(route, confidence, threshold, why) of a contract-bound answer, per ai.md."""
    if violations:
        return (ev.AI_ROUTE_CONTRACT_VIOLATION, 0.0, "contract",
                "the answer breaks its contract after one repair turn")  # fmt: skip
    if not ai.HasField("review_policy"):
        return ev.AI_ROUTE_AUTO_APPROVE, 0.0, "contract", "the answer satisfies its contract"
    policy = ai.review_policy
    if policy.escalate_pointer:
        try:
            escalate = pointer_value(parsed, policy.escalate_pointer)
        except LookupError:
            escalate = False
        if escalate is True:
            return (ev.AI_ROUTE_HUMAN_REVIEW, 0.0, f"escalate={policy.escalate_pointer}",
                    "the answer asks for a human")  # fmt: skip
    try:
        confidence = pointer_value(parsed, policy.confidence_pointer)
    except LookupError:
        confidence = None
    if (
        not policy.confidence_pointer
        or not isinstance(confidence, int | float)
        or isinstance(confidence, bool)
        or not 0 <= confidence <= 1
    ):
        return (ev.AI_ROUTE_HUMAN_REVIEW, 0.0, f"confidence={policy.confidence_pointer}",
                "the answer states no confidence in [0,1]")  # fmt: skip
    c = float(confidence)
    if c < policy.suppress_below:
        return (ev.AI_ROUTE_SUPPRESS, c, f"suppress_below={policy.suppress_below:g}",
                f"confidence {c:g} is below suppress_below {policy.suppress_below:g}")  # fmt: skip
    if c < policy.approve_at:
        return (ev.AI_ROUTE_HUMAN_REVIEW, c, f"approve_at={policy.approve_at:g}",
                f"confidence {c:g} is below approve_at {policy.approve_at:g}")  # fmt: skip
    return (ev.AI_ROUTE_AUTO_APPROVE, c, f"approve_at={policy.approve_at:g}",
            f"confidence {c:g} is at least approve_at {policy.approve_at:g}")  # fmt: skip


async def _review(
    x: RunExecutor,
    ctx: AttemptContext,
    node: flow_pb2.Node,
    schema: dict[str, Any] | None,
    held: Any,
    output: dict[str, Any],
    details: ev.AiReviewRequired | None,
) -> AiResult:
    """Hold the answer at the review gate (durable, listed, survives restarts) until decided."""
    policy = node.ai.review_policy
    timeout = None
    if node.ai.HasField("review_policy") and policy.HasField("review_timeout"):
        timeout = policy.review_timeout.ToNanoseconds() / 1e9

    def standing(d: Decision) -> str:
        if d.decision != ev.GATE_DECISION_APPROVED:
            return "null"
        return canonical_json(json.loads(d.output_json)) if d.output_json else canonical_json(held)

    decision = await hold_gate(
        x,
        ctx.ref,
        run_service_pb2.GATE_KIND_REVIEW,
        details.reason if details else "answer held for review",
        timeout,
        details=details or ev.AiReviewRequired(),
        span=ctx.span,
        review_output=standing,
    )
    word = decision_word(decision)
    output = {**output, "review": {"decision": word, "principal": decision.principal}}
    if decision.decision == ev.GATE_DECISION_APPROVED:
        final = json.loads(decision.output_json) if decision.output_json else held
        if broken := contract_violations(schema, final):
            # ResolveReview checks an edited answer first; this guards what it cannot see.
            return (
                False,
                output,
                ev.ErrorSummary(
                    reason="REVIEW_REJECTED",
                    message=f"the reviewed answer breaks its contract: {broken[0]}",
                ),
            )
        # The answer that stands is what a person saw and approved (or wrote):
        # its text is its canonical JSON, whichever server held it.
        output["text"] = canonical_json(final)
        output["json"] = final
        return True, output, None
    reason = {
        ev.GATE_DECISION_EXPIRED: "REVIEW_EXPIRED",
        ev.GATE_DECISION_CANCELLED: "CANCELLED",
    }.get(decision.decision, "REVIEW_REJECTED")
    return (
        False,
        output,
        ev.ErrorSummary(reason=reason, message=f"review {word.lower()} by {decision.principal}"),
    )
