"""`watch_events`: events across runs, resumed from the last cursor after failures."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Final, cast

from grpclib.client import Channel
from grpclib.exceptions import GRPCError

from ._errors import RunwireError
from ._events import event_case
from ._gen.runwire.v1 import (
    RunEvent,
    RunEventsFilter,
    RunServiceStub,
    StreamStart,
    WatchEventsRequest,
    WatchEventsResponse,
)
from ._watch import TRANSPORT_ERRORS, Backoff, Retrier, transient
from ._wire import canonical

__all__ = ["EventsWatch", "WatchedEvent", "watch_events"]

# How many runs the duplicate filter remembers (the most recently delivered).
# A server resends at most what follows the cursor the call resumed from,
# that is the runs of the last responses, far fewer than this.
DEDUP_RUNS: Final = 65_536


class _SpecWatchEventsResponse:
    """Decodes WatchEventsResponse bytes the way the protobuf spec says (see _wire)."""

    @staticmethod
    def FromString(data: bytes) -> WatchEventsResponse:
        return WatchEventsResponse.parse(canonical(WatchEventsResponse, data))


@dataclass(frozen=True, slots=True)
class WatchedEvent:
    """One event from `watch_events`, with where to resume after it.

    Attributes:
        event: The event.
        cursor: Pass it as `watch_events(cursor=...)` to resume after this
            event: nothing after it is lost. It is the cursor of the response
            that carried the event when the event is that response's last;
            otherwise the cursor before the response, so resuming from it may
            deliver the response's earlier events again. Empty before the
            first response of a stream started without a cursor.
    """

    event: RunEvent
    cursor: str


class EventsWatch:
    """The events across runs from `watch_events`: an async iterator of `WatchedEvent`.

    The stream does not end by itself; leave it with `await aclose()` (or
    `contextlib.aclosing`), which cancels the call at once. `cursor` is the
    position after everything delivered so far, empty responses included.
    """

    def __init__(
        self,
        stub: RunServiceStub,
        request: WatchEventsRequest,
        backoff: Backoff,
    ) -> None:
        self.cursor = request.cursor
        self._events = self._watch(stub, request, backoff)

    def __aiter__(self) -> EventsWatch:
        return self

    async def __anext__(self) -> WatchedEvent:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        """Stop watching; cancels the call in flight."""
        await self._events.aclose()

    async def _watch(
        self, stub: RunServiceStub, first: WatchEventsRequest, policy: Backoff
    ) -> AsyncGenerator[WatchedEvent, None]:
        # run_id -> the highest seq delivered: a run's seq only increases in
        # the stream, so anything at or below it is a resend.
        delivered: OrderedDict[str, int] = OrderedDict()
        retrier = Retrier(policy)
        while True:
            request = (
                WatchEventsRequest(cursor=self.cursor, filter=first.filter)
                if self.cursor
                else first  # no response yet: the caller's start again
            )
            try:
                stream = cast(
                    AsyncGenerator[WatchEventsResponse, None],
                    stub._unary_stream(
                        "/runwire.v1.RunService/WatchEvents",
                        request,
                        cast(type[WatchEventsResponse], _SpecWatchEventsResponse),
                    ),
                )
                async with aclosing(stream) as responses:
                    async for response in responses:
                        retrier.received()
                        before = self.cursor
                        fresh = [e for e in response.events if _first_time(delivered, e)]
                        for index, event in enumerate(fresh):
                            event_case(event)  # raises UnknownEventError
                            last = index == len(fresh) - 1
                            if last:
                                self.cursor = response.cursor or self.cursor
                            yield WatchedEvent(event, self.cursor if last else before)
                        self.cursor = response.cursor or self.cursor
                error: Exception | None = None
                cause = "WatchEvents ended"
            except (GRPCError, *TRANSPORT_ERRORS) as failure:
                reason = transient(failure)
                if reason is None:
                    raise RunwireError.from_grpc_error(cast(GRPCError, failure)) from failure
                error, cause = failure, reason
            where = f"from cursor {self.cursor!r}" if self.cursor else "from the start"
            await retrier.failed(error, cause, "events", "events", where)


def _first_time(delivered: OrderedDict[str, int], event: RunEvent) -> bool:
    """Records the event as delivered; False when its run's seq was delivered already."""
    last = delivered.get(event.run_id)
    if last is not None and event.seq <= last:
        return False
    delivered[event.run_id] = event.seq
    delivered.move_to_end(event.run_id)
    if len(delivered) > DEDUP_RUNS:
        delivered.popitem(last=False)
    return True


def watch_events(
    channel_or_stub: Channel | RunServiceStub,
    event_filter: RunEventsFilter | None = None,
    *,
    cursor: str = "",
    start: StreamStart = StreamStart.LATEST,
    backoff: Backoff | None = None,
) -> EventsWatch:
    """Yields the events of every run `event_filter` selects, in commit order, resuming after failures.

    It streams `WatchEvents` and remembers the cursor of the last response.
    On a failure that `watch` would retry (UNAVAILABLE; INTERNAL, UNKNOWN,
    CANCELLED, ABORTED and DEADLINE_EXCEEDED without a runwire ErrorInfo;
    RESOURCE_EXHAUSTED OVERLOADED; a lost, reset or refused connection; a
    stream that ends OK) it calls again from that cursor after the same
    backoff, and drops any event whose run's seq it already delivered. It
    gives up, like `watch`, after `backoff.give_up_after` seconds without a
    response. The rule is the one of clients/GRAMMAR.md ("Watching").

    Args:
        channel_or_stub: A grpclib `Channel`, or a `RunServiceStub` on one.
        event_filter: Which runs and events; every event of every run when omitted.
        cursor: Resume after this cursor (a `WatchedEvent.cursor` or
            `EventsWatch.cursor` of an earlier watch); empty starts at `start`.
        start: Where a watch without a cursor begins: the events committed
            from now on (`LATEST`) or the oldest retained (`EARLIEST`). Until
            its first response a reconnect starts there again.
        backoff: The reconnect policy; `Backoff()` when omitted.

    Raises:
        RunwireError: A status that is not retried: INVALID_ARGUMENT with
            reason CURSOR_INVALID (a malformed cursor), OUT_OF_RANGE with
            reason CURSOR_EXPIRED (retention pruned past the cursor), an
            invalid filter, ...; or UNAVAILABLE when the budget is spent.
        UnknownEventError: The server sent an event this client does not know.
    """
    stub = (
        channel_or_stub
        if isinstance(channel_or_stub, RunServiceStub)
        else RunServiceStub(channel_or_stub)
    )
    request = WatchEventsRequest(cursor=cursor, start=start, filter=event_filter)
    return EventsWatch(stub, request, backoff or Backoff())
