"""What an AI attempt leaves: its result, a failure, and the AiInvocation of each model call.

Every model call is recorded, failed calls too: they were billed, and the
data left the building.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from google.protobuf.duration_pb2 import Duration

from runwire.engine._ports import ModelRoute
from runwire.v1 import events_pb2 as ev

if TYPE_CHECKING:
    from runwire.engine._attempts import AttemptContext
    from runwire.engine._orchestrator import RunExecutor

__all__ = ["PREVIEW_CHARS", "AiResult", "emit_invocation", "failure"]

PREVIEW_CHARS = 512
"""Characters of a call's last message kept as AiInvocation.input_preview."""

AiResult = tuple[bool, Any, ev.ErrorSummary | None]
"""One attempt's (ok, output, error)."""


def failure(reason: str, message: str) -> AiResult:
    return False, None, ev.ErrorSummary(reason=reason, message=message)


def _duration(seconds: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(int(max(0.0, seconds) * 1e9))
    return d


async def emit_invocation(
    x: RunExecutor,
    ctx: AttemptContext,
    route: ModelRoute,
    *,
    model: str,
    input_tokens: int,
    output_tokens: int = 0,
    cost: int,
    seconds: float,
    finish_reason: str,
    turn: int,
    preview: str,
    contract_version: str = "",
) -> None:
    """The AiInvocation of one model call (chat turn or embeddings) of the attempt."""
    await x.emit(
        "ai_invocation",
        ev.AiInvocation(
            provider=route.provider,
            model=model,
            input_token_count=input_tokens,
            output_token_count=output_tokens,
            cost_micros=cost,
            latency=_duration(seconds),
            finish_reason=finish_reason,
            turn=turn,
            input_preview=preview,
            contract_version=contract_version,
        ),
        span=ctx.span,
        node=ctx.ref,
    )
