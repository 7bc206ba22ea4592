"""One attempt of an AI node: its params, whether this server can serve it, and the attempt itself.

Event order inside the attempt (after its NodeStarted):
AiRoutingDecision(route MODEL), then the turns (`_ai_conversation.py`: per
turn NodeToken* and one AiInvocation, then the turn's tool calls), or one
embeddings call (`_ai_embed.py`); a contract-bound answer is checked
(`_ai_contracts.py`, with one repair turn), routed by a second
AiRoutingDecision and may wait at its review gate (`_ai_review.py`).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format

from runwire.engine._ai_audit import AiResult, failure
from runwire.engine._ai_contracts import (
    NOT_JSON,
    classify_schema,
    contract_version,
    judge,
    parse_answer,
)
from runwire.engine._ai_conversation import AiConversation
from runwire.engine._ai_embed import embed
from runwire.engine._ai_review import hold_for_review, route_answer
from runwire.engine._ai_tools import RunTool, abandon_held, held_context
from runwire.engine._ports import ModelTurn
from runwire.engine._templates import render_value
from runwire.engine._validate import canonical_json
from runwire.v1 import events_pb2 as ev
from runwire.v1 import flow_pb2

if TYPE_CHECKING:
    from runwire.engine._attempts import AttemptContext
    from runwire.engine._orchestrator import RunExecutor

__all__ = ["ai_unavailable", "render_ai_params", "run_ai"]


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
        return await hold_for_review(x, ctx, node, schema, held, output, None)
    context = await held_context(x, node, ctx, held_call) if held_call else None
    if gateway is None or gateway.problems(ai.provider, ai.model, embedding=embedding):
        # Validated at StartRun: this server (a takeover) lacks what the starting one had.
        if held_call:
            await abandon_held(x, ctx, held_call, "this server cannot serve the node's provider")
        return failure(
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
        return await embed(x, ctx, gateway, route, params["task"], deadline)
    if operation == "classify":
        labels = ", ".join(json.dumps(label, ensure_ascii=False) for label in ai.labels)
        instruction = (
            f"Classify the user's message with exactly one of these labels: {labels}. "
            'Answer with JSON only: {"label": <one of the labels>, "confidence": <0..1>}.'
        )
        prompt = params.get("prompt") or ""
        params = {**params, "prompt": f"{prompt}\n\n{instruction}".strip(), "contract": schema}
    talk = AiConversation(x, ctx, gateway, route, params, run_tool, deadline, version)
    if context is not None:
        talk.restore(context)
    answer = await talk.answer(extra_turns=1 if talk.repairing else 0)
    if not isinstance(answer, ModelTurn):
        return answer
    if schema is None and not ai.HasField("review_policy"):
        return True, talk.output(answer, parse_answer(talk.reveal(answer.text))), None
    if answer.finish_reason == "length":
        return failure("AI_LENGTH", f"{talk.who()} hit its output limit before the answer ended")
    parsed, violations = judge(schema, talk.reveal(answer.text))
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
        parsed, violations = judge(schema, talk.reveal(answer.text))
    held = parsed if parsed is not NOT_JSON else talk.reveal(answer.text)
    output = talk.output(answer, None if parsed is NOT_JSON else parsed)
    if operation == "classify" and isinstance(parsed, dict):
        output = {"label": parsed.get("label"), "confidence": parsed.get("confidence"), **output}
    route_kind, confidence, threshold, reasoning = route_answer(ai, parsed, violations)
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
        return await hold_for_review(x, ctx, node, schema, held, output, details)
    return True, output, None
