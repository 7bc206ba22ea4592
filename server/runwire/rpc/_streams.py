"""What the watch streams (WatchRun, WatchEvents) share: their span, and their end on a database blip.

A stream's span is never attached as the current context: the response
generator may be finalized in another task, and the aio interceptor keeps a
context attached across the stream's yields that it cannot detach when a
client drops the stream mid-write (see rpc/_server.py). It is recorded when
the stream ends (telemetry.EndRecordedSpan): an open SDK span per idle
watcher costs more than the watcher. This guard is a slotted object, not a
generator-based context manager, for the same reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType

import grpc
from opentelemetry import propagate, trace

from runwire import telemetry
from runwire.rpc._status import public_error, to_status
from runwire.store import is_transient

__all__ = ["stream_span"]


class stream_span:  # lower case: used as `async with stream_span(...)`, like a function
    """The span `/runwire.v1.RunService/<method>` around a stream's body, parented by
    the caller's trace headers. A transient database error ends the stream
    UNAVAILABLE, so the client resumes (here or on another replica); any
    other error goes on up."""

    __slots__ = ("_context", "_span")

    def __init__(
        self,
        tracer: trace.Tracer,
        context: grpc.aio.ServicerContext,
        method: str,
        attributes: Mapping[str, str] | None = None,
    ) -> None:
        self._context = context
        self._span = telemetry.EndRecordedSpan(
            tracer,
            f"/runwire.v1.RunService/{method}",
            parent=propagate.extract(dict(context.invocation_metadata() or ())),
            kind=trace.SpanKind.SERVER,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": "runwire.v1.RunService",
                "rpc.method": method,
                **(attributes or {}),
            },
        )

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        try:
            if isinstance(exc, Exception) and is_transient(exc):
                await self._context.abort_with_status(to_status(public_error(exc)))
            return False
        finally:
            self._span.end()
