"""One provider call of an AI attempt (a chat turn, an embeddings call), as a side effect.

Sending to a model happens only under a committed NodeStarted and a held
lease; the call runs as the attempt's inner task, so CancelRun cancels it
(the stream closes), and the attempt's deadline bounds it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry import trace

from runwire import telemetry
from runwire.engine._ports import LeaseLost, ModelCallFailed, ModelRoute

if TYPE_CHECKING:
    from runwire.engine._attempts import AttemptContext
    from runwire.engine._orchestrator import RunExecutor

__all__ = ["bounded_call", "may_send", "model_span"]

T = TypeVar("T")


def model_span(
    tracer: trace.Tracer, operation: str, route: ModelRoute
) -> AbstractContextManager[trace.Span]:
    """The `{operation} {model}` CLIENT span of one model call (GenAI conventions)."""
    return tracer.start_as_current_span(
        f"{operation} {route.model}",
        kind=trace.SpanKind.CLIENT,
        attributes={
            telemetry.GEN_AI_OPERATION: operation,
            telemetry.GEN_AI_PROVIDER: route.provider,
            telemetry.GEN_AI_REQUEST_MODEL: route.model,
        },
    )


async def may_send(x: RunExecutor) -> None:
    """Commit what the attempt emitted, and raise LeaseLost unless the run is still ours."""
    await x.journal.flush()
    if not x.journal.holds(x.run_id):
        raise LeaseLost(x.run_id)


async def bounded_call(
    x: RunExecutor,
    ctx: AttemptContext,
    start: Callable[[], Coroutine[Any, Any, T]],
    deadline: float,
    *,
    doing: str,
    who: str = "",
) -> T:
    """The result of `start()`, run as the attempt's inner task until `deadline`.

    Raises:
        ModelCallFailed: TIMEOUT (`who`, then "attempt timed out while `doing`"),
            CANCELLED (the run was cancelled), or the provider's own failure.
    """
    call = asyncio.create_task(start())
    x.inner[ctx.ref] = call
    try:
        done, _ = await asyncio.wait({call}, timeout=max(0.0, deadline - time.monotonic()))
        if not done:
            call.cancel()
            await asyncio.wait({call})
            raise ModelCallFailed("TIMEOUT", f"{who}attempt timed out while {doing}")
    finally:
        x.inner.pop(ctx.ref, None)
    if call.cancelled():
        raise ModelCallFailed("CANCELLED", f"run cancelled while {doing}")
    return call.result()
