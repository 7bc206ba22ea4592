"""WatchEvents: the events of every run a filter selects, in commit order, by cursor.

It reads the event log (store/_log.py) from the request's cursor; once it
has caught up it takes its entries from this process's shared tail
(store/_log_tail.py: one read of the new entries per change of the log for
every stream, filtered here in Python) and waits on it, and it goes back to
the store whenever its position is older than the tail's window. Log
positions are global and follow commit order, so the stream is the same from
any replica or worker and through takeovers, and a cursor resumes it exactly
once. Responses are written as bytes: stored events are framed without
decoding them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
from opentelemetry import trace

from runwire import telemetry
from runwire.engine import MAX_EVENT_BYTES, bound_event
from runwire.errors import (
    CursorExpired,
    CursorInvalid,
    FieldViolation,
    InvalidArgument,
    ServerDraining,
)
from runwire.rpc._status import public_error, to_status
from runwire.rpc._streams import stream_span
from runwire.store import (
    Hub,
    LogEntry,
    LogFilter,
    LogTail,
    Store,
    decode_cursor,
    encode_cursor,
    frame_cursor,
    frame_event,
    log_bounds,
    read_log,
)
from runwire.v1 import events_pb2, run_service_pb2

__all__ = ["WatchEventsService"]

log = logging.getLogger(__name__)

# Entries per log read, and the response budget (as WatchRun's).
_PAGE = 1000
_RESPONSE_BYTES = 1 << 20
# A filter that selects little still tells the client how far the server has
# looked, once per this many positions, so a resume does not rescan them.
_PROGRESS_EVERY = 10_000


def _payload(entry: LogEntry) -> bytes:
    if len(entry.event) > MAX_EVENT_BYTES:
        # Stored before events were bounded: cut as new_event would have.
        event = bound_event(events_pb2.RunEvent.FromString(entry.event))
        return event.SerializeToString(deterministic=True)
    return entry.event


class WatchEventsService:
    """The WatchEvents RPC over the store's pool and this process's hub."""

    def __init__(
        self,
        store: Store,
        hub: Hub,
        closing_streams: asyncio.Event,
        *,
        tail: LogTail,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.store = store
        self.hub = hub
        self.closing_streams = closing_streams
        self.tracer = tracer or trace.get_tracer(telemetry.TRACER_NAME)
        # The process's one reader of the log's newest entries, for every
        # caught-up stream (the server shares it with its webhook deliverer).
        self.tail = tail
        self.store_reads = 0  # read_log calls of streams the tail's window did not serve

    async def _start(self, request: run_service_pb2.WatchEventsRequest) -> tuple[LogFilter, int]:
        """Check the request; returns the filter and the position to read after."""
        flt = LogFilter.from_proto(request.filter if request.HasField("filter") else None)
        if request.start not in run_service_pb2.StreamStart.values():
            raise InvalidArgument(
                [FieldViolation("start", f"{request.start} is not a StreamStart value")]
            )
        pos = decode_cursor(request.cursor) if request.cursor else None
        horizon, latest = await log_bounds(self.store.pool)
        if pos is None:
            return (
                flt,
                horizon if request.start == run_service_pb2.STREAM_START_EARLIEST else latest,
            )
        if pos < horizon:
            raise CursorExpired(pos, horizon)
        if pos > latest:
            raise CursorInvalid(f"is ahead of the log (position {pos}, newest {latest})")
        return flt, pos

    async def WatchEvents(
        self, request: run_service_pb2.WatchEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """Yield serialized WatchEventsResponses until the client leaves or the server drains."""
        try:
            flt, pos = await self._start(request)
        except Exception as exc:
            await context.abort_with_status(to_status(public_error(exc)))
            return
        async with stream_span(self.tracer, context, "WatchEvents"):
            # The starting position at once, before anything is due: a client
            # that started at LATEST and is cut before the first event resumes
            # from here, instead of from a later LATEST over a gap.
            yield frame_cursor(encode_cursor(pos))
            sent = pos  # the cursor of the last response
            with self.tail.attached():
                while True:
                    if self.closing_streams.is_set():
                        await context.abort_with_status(to_status(ServerDraining()))
                        return
                    # Taken before the read: a commit after the read has set it.
                    changed = self.hub.log_changed()
                    # From the shared tail's window when it reaches back to
                    # `pos`, else from the store as a reader behind it must.
                    taken = self.tail.take(pos, _PAGE, flt)
                    if taken is not None:
                        entries, looked, horizon = taken
                    else:
                        self.store_reads += 1
                        entries, looked = await read_log(self.store.pool, pos, _PAGE, flt)
                        horizon = (await log_bounds(self.store.pool))[0] if looked > pos else 0
                    if looked > pos and horizon > pos:
                        # Retention deleted events this stream had not reached.
                        await context.abort_with_status(to_status(CursorExpired(pos, horizon)))
                        return
                    parts: list[bytes] = []
                    size = 0
                    for entry in entries:
                        framed = frame_event(_payload(entry))
                        if parts and size + len(framed) > _RESPONSE_BYTES:
                            yield b"".join(parts) + frame_cursor(encode_cursor(pos))
                            sent, parts, size = pos, [], 0
                        parts.append(framed)
                        size += len(framed)
                        pos = entry.pos
                    if parts or looked - sent >= _PROGRESS_EVERY:
                        yield b"".join(parts) + frame_cursor(encode_cursor(looked))
                        sent = looked
                    if looked > pos or entries:
                        pos = looked
                        continue  # there may be more: read again before waiting
                    if taken is not None:
                        await self.tail.wait_past(pos)
                    else:
                        await changed.wait()
