"""An EMBED attempt of an AI node: one embeddings call, audited like a chat call."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from opentelemetry import trace

from runwire import telemetry
from runwire.engine._ai_audit import PREVIEW_CHARS, AiResult, emit_invocation, failure
from runwire.engine._ai_calls import bounded_call, may_send, model_span
from runwire.engine._ports import ModelCallFailed, ModelEmbedding, ModelGateway, ModelRoute

if TYPE_CHECKING:
    from runwire.engine._attempts import AttemptContext
    from runwire.engine._orchestrator import RunExecutor

__all__ = ["embed"]


async def embed(
    x: RunExecutor,
    ctx: AttemptContext,
    gateway: ModelGateway,
    route: ModelRoute,
    text: str,
    deadline: float,
) -> AiResult:
    """An EMBED attempt: one embeddings call, audited like a chat call."""
    await may_send(x)
    t0 = time.monotonic()
    with model_span(x.tracer, "embeddings", route) as span:
        failed: ModelCallFailed | None = None
        result: ModelEmbedding | None = None
        try:
            result = await bounded_call(
                x, ctx, lambda: gateway.embed(route, text), deadline, doing="embedding"
            )
        except ModelCallFailed as exc:  # anything else is a bug: the node crashes
            failed = exc
        if result is None:
            assert failed is not None
            span.set_status(trace.Status(trace.StatusCode.ERROR, failed.message))
        else:
            span.set_attribute(telemetry.GEN_AI_USAGE_INPUT_TOKENS, result.input_tokens)
    tokens = result.input_tokens if result else 0
    cost = gateway.cost_micros(route, tokens, 0)
    await emit_invocation(
        x, ctx, route,
        model=result.model if result else route.model, input_tokens=tokens, cost=cost,
        seconds=time.monotonic() - t0, finish_reason="error" if failed else "embedding",
        turn=1, preview=text[:PREVIEW_CHARS],
    )  # fmt: skip
    if failed is not None or result is None:
        assert failed is not None
        return failure(failed.reason, failed.message)
    output = {
        "embedding": result.vector,
        "dimensions": len(result.vector),
        "model": result.model,
        "provider": route.provider,
        "input_tokens": tokens,
        "cost_micros": cost,
    }
    return True, output, None
