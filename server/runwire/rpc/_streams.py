"""What the watch streams (WatchRun, WatchEvents) share: their span, and their end on a database blip.

A stream's span is started and ended here, never attached as the current
context: the response generator may be finalized in another task, and the
aio interceptor keeps a context attached across the stream's yields that it
cannot detach when a client drops the stream mid-write (see rpc/_server.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping

import grpc
from opentelemetry import propagate, trace

from runwire.rpc._status import public_error, to_status
from runwire.store import is_transient

__all__ = ["stream_span"]


@contextlib.asynccontextmanager
async def stream_span(
    tracer: trace.Tracer,
    context: grpc.aio.ServicerContext,
    method: str,
    attributes: Mapping[str, str] | None = None,
) -> AsyncIterator[None]:
    """The span `/runwire.v1.RunService/<method>` around a stream's body, parented by
    the caller's trace headers. A transient database error ends the stream
    UNAVAILABLE, so the client resumes (here or on another replica); any
    other error goes on up."""
    span = tracer.start_span(
        f"/runwire.v1.RunService/{method}",
        context=propagate.extract(dict(context.invocation_metadata() or ())),
        kind=trace.SpanKind.SERVER,
        attributes={
            "rpc.system": "grpc",
            "rpc.service": "runwire.v1.RunService",
            "rpc.method": method,
            **(attributes or {}),
        },
    )
    try:
        yield
    except Exception as exc:
        if not is_transient(exc):
            raise
        await context.abort_with_status(to_status(public_error(exc)))
    finally:
        span.end()
