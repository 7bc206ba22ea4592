"""`watch`: a run's events, resumed across transport errors and server restarts."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Final, cast

from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from h2.exceptions import ProtocolError as H2ProtocolError

from ._errors import (
    ERROR_DOMAIN,
    RunwireError,
    SeqGapError,
    has_runwire_info,
    retry_delay,
    runwire_reason,
)
from ._events import event_case
from ._gen.runwire.v1 import (
    EventFilter,
    RunEvent,
    RunServiceStub,
    RunStatus,
    WatchRunRequest,
    WatchRunResponse,
)
from ._grammar import is_filtered
from ._wire import canonical

__all__ = ["Backoff", "RunEnd", "Watch", "watch"]

logger = logging.getLogger("runwire_client")

# Statuses that a dying connection produces as well as the server: an HTTP/2
# RST_STREAM, a half-written response, a proxy's timeout or reset. Without a
# runwire ErrorInfo they came from the transport and the WatchRun is resumed;
# with one they are the server's own answer (its INTERNAL is a fault that a
# retry would only repeat) and are raised. UNAVAILABLE (a draining or
# unreachable server) is always resumed; every other status is the server's
# considered answer (NOT_FOUND, INVALID_ARGUMENT, ...) and is raised. The Go
# and TypeScript clients decide the same way.
TRANSPORT_STATUSES: Final = frozenset(
    {
        Status.INTERNAL,
        Status.UNKNOWN,
        Status.CANCELLED,
        Status.ABORTED,
        Status.DEADLINE_EXCEEDED,
    }
)

# Failures below the gRPC status, all resumed: StreamTerminatedError (the
# connection or stream was lost or reset mid-call, or the peer broke HTTP/2),
# OSError (connection refused or reset while the server is down, and
# TimeoutError: a timeout set on the stub ran out), and h2's ProtocolError
# (the HTTP/2 connection or stream closed under a send).
TRANSPORT_ERRORS: Final = (StreamTerminatedError, OSError, H2ProtocolError)
TRANSPORT_ERRORS_TYPE = StreamTerminatedError | OSError | H2ProtocolError


def retryable(error: GRPCError) -> bool:
    """Whether resuming the WatchRun that ended with this status can succeed."""
    if error.status is Status.UNAVAILABLE:
        return True
    if error.status is Status.RESOURCE_EXHAUSTED:
        # The server turned the call away at its admission bound: retry.
        return runwire_reason(error) == "OVERLOADED"
    return error.status in TRANSPORT_STATUSES and not has_runwire_info(error)


class _SpecWatchRunResponse:
    """Decodes WatchRunResponse bytes the way the protobuf spec says (see _wire)."""

    @staticmethod
    def FromString(data: bytes) -> WatchRunResponse:
        return WatchRunResponse.parse(canonical(WatchRunResponse, data))


@dataclass(frozen=True, slots=True)
class RunEnd:
    """How a watched run ended, once `watch` has reached its end.

    Attributes:
        run_id: The run.
        last_seq: The seq of its last event, RunCompleted.
        status: Its final status (a number this client does not name stays a number).
        beyond_end: The watch asked for events after a seq the run never
            reached (the server answered OUT_OF_RANGE, reason
            AFTER_SEQ_BEYOND_END); nothing was missed, there was nothing.
    """

    run_id: str
    last_seq: int
    status: RunStatus | int
    beyond_end: bool = False

    @property
    def status_name(self) -> str:
        """The status as the proto names it, `RUN_STATUS_SUCCEEDED`, or its number."""
        # betterproto2 keeps an unnamed number as a nameless RunStatus member.
        name = self.status.name if isinstance(self.status, RunStatus) else None
        return f"RUN_STATUS_{name}" if name else str(int(self.status))


def _status(value: int) -> RunStatus | int:
    try:
        return RunStatus(value)
    except ValueError:
        return value  # a status newer than this client


def _beyond_end(run_id: str, error: RunwireError) -> RunEnd | None:
    """The end an OUT_OF_RANGE AFTER_SEQ_BEYOND_END answer reports, else None."""
    if (
        error.code is not Status.OUT_OF_RANGE
        or error.domain != ERROR_DOMAIN
        or error.reason != "AFTER_SEQ_BEYOND_END"
    ):
        return None
    name = error.metadata.get("status", "")
    status: RunStatus | int
    try:
        status = RunStatus[name.removeprefix("RUN_STATUS_")]
    except KeyError:
        status = int(name) if name.isdigit() else RunStatus.UNSPECIFIED
    return RunEnd(run_id, int(error.metadata.get("last_seq", "0")), status, beyond_end=True)


@dataclass(frozen=True, slots=True)
class Backoff:
    """How `watch` waits between reconnects: capped exponential with jitter,
    and never sooner than a RetryInfo on the failed status asks (up to
    `max_server_delay`).

    Attributes:
        initial: The first wait, in seconds.
        maximum: The cap on one wait, in seconds.
        multiplier: The growth of the wait per failed reconnect.
        jitter: The wait is scaled by a random factor in `1 - jitter .. 1`,
            so many watchers of a restarted server do not reconnect in step.
        give_up_after: Seconds of failing without receiving anything after
            which `watch` raises `RunwireError(UNAVAILABLE)`; `None` retries
            forever. The default outlasts a server restart by a wide margin.
        max_server_delay: The cap, in seconds, on a wait the server asks for
            with a google.rpc.RetryInfo on the failed status: the wait is the
            longer of the backoff's and the server's, the server's cut to
            this, so a bogus delay cannot stall the watch for long.
    """

    # The same defaults and jitter in every client: 100 ms doubling to 2 s,
    # each wait drawn from [wait/2, wait], giving up after 120 s of failures;
    # a server's RetryInfo delay honoured up to 30 s.
    initial: float = 0.1
    maximum: float = 2.0
    multiplier: float = 2.0
    jitter: float = 0.5
    give_up_after: float | None = 120.0
    max_server_delay: float = 30.0

    def delay(self, failures: int) -> float:
        """The wait before reconnect number `failures + 1` of a failing streak."""
        exponent = min(failures, 64)  # beyond the cap anyway; keeps the float finite
        wait = min(self.maximum, self.initial * self.multiplier**exponent)
        return wait * (1.0 - self.jitter * random.random())


class Retrier:
    """One streak of failures of a resuming stream: the waits and the give-up budget.

    `watch` and `watch_events` share it, so both follow the one retry rule of
    clients/GRAMMAR.md ("Watching"): call `received` on every response,
    `failed` after a failure that `transient` accepted.
    """

    def __init__(self, policy: Backoff) -> None:
        self._policy = policy
        self._failures = 0
        self._failing_since: float | None = None

    def received(self) -> None:
        """A response arrived: the outage, if any, is over."""
        self._failures, self._failing_since = 0, None

    async def failed(
        self, error: Exception | None, cause: str, what: str, key: str, resume: str
    ) -> None:
        """Waits before the next call, or raises `RunwireError(UNAVAILABLE)` when the budget is spent.

        Args:
            error: The failure, chained to the give-up error.
            cause: The failure, for people.
            what: What is watched, for the give-up error: `run 'run_1'`.
            key: What is watched, short, for the log line: `run_1`.
            resume: Where the next call resumes: `after seq 3`.
        """
        policy = self._policy
        now = asyncio.get_running_loop().time()
        if self._failing_since is None:
            self._failing_since = now
        failing = now - self._failing_since
        if policy.give_up_after is not None and failing >= policy.give_up_after:
            raise RunwireError(
                Status.UNAVAILABLE,
                f"gave up watching {what} after {failing:.1f}s of failures (resuming {resume}): "
                f"{cause}",
            ) from error
        delay = policy.delay(self._failures)
        asked = retry_delay(error) if isinstance(error, GRPCError) else None
        if asked is not None:
            # The server's RetryInfo: never come back sooner than it asked
            # (up to the cap), and give up now rather than sleep past the
            # budget when it asks for longer than is left.
            asked = min(asked, policy.max_server_delay)
            if policy.give_up_after is not None and failing + asked > policy.give_up_after:
                raise RunwireError(
                    Status.UNAVAILABLE,
                    f"gave up watching {what} after {failing:.1f}s of failures (resuming "
                    f"{resume}): the server asked for a retry in {asked:.1f}s, past the "
                    f"{policy.give_up_after:g}s budget: {cause}",
                ) from error
            delay = max(delay, asked)
        if policy.give_up_after is not None:
            # The last try lands on the budget, not a whole wait beyond it.
            delay = min(delay, policy.give_up_after - failing)
        logger.info("watch %s: %s; resuming %s in %.2fs", key, cause, resume, delay)
        await asyncio.sleep(delay)
        self._failures += 1


def transient(error: GRPCError | TRANSPORT_ERRORS_TYPE) -> str | None:
    """Why the call failed, for people, when resuming it can heal the failure; else None."""
    if not isinstance(error, GRPCError):
        return f"{type(error).__name__}: {error}"  # below gRPC: always resumed
    if not retryable(error):
        return None
    cause = error.status.name
    return f"{cause}: {error.message}" if error.message else cause


class Watch:
    """The events of one run, from `watch`: an async iterator with the run's end.

    Iterate it with `async for`; once the iteration has stopped without an
    exception, `end` says how the run ended. Leaving early: `await aclose()`
    (or `contextlib.aclosing`) cancels the call at once.
    """

    def __init__(
        self,
        stub: RunServiceStub,
        run_id: str,
        after_seq: int,
        backoff: Backoff,
        event_filter: EventFilter | None = None,
    ) -> None:
        self.run_id = run_id
        self.end: RunEnd | None = None
        self._events = self._watch(stub, run_id, after_seq, backoff, event_filter)

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> RunEvent:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        """Stop watching; cancels the call in flight."""
        await self._events.aclose()

    async def _watch(
        self,
        stub: RunServiceStub,
        run_id: str,
        after_seq: int,
        policy: Backoff,
        event_filter: EventFilter | None,
    ) -> AsyncGenerator[RunEvent, None]:
        filtered = is_filtered(event_filter)
        # last_seq: the seq last yielded. resume: where the next call starts,
        # the same unless a filter skipped events past it (resume_after_seq).
        last_seq = resume = after_seq
        retrier = Retrier(policy)
        while True:
            request = WatchRunRequest(run_id=run_id, after_seq=resume, filter=event_filter)
            try:
                # aclosing: leaving early (the end, or the caller breaking
                # out) cancels the RPC now instead of when it is garbage
                # collected. The generated method is an async generator typed
                # as an iterator.
                stream = cast(
                    AsyncGenerator[WatchRunResponse, None],
                    # The generated watch_run with the response decoded by
                    # protobuf's merge rules first (see _wire): grpclib's
                    # codec calls only FromString on the type it is given.
                    stub._unary_stream(
                        "/runwire.v1.RunService/WatchRun",
                        request,
                        cast(type[WatchRunResponse], _SpecWatchRunResponse),
                    ),
                )
                async with aclosing(stream) as responses:
                    async for response in responses:
                        retrier.received()
                        for event in response.events:
                            case = event_case(event)
                            if event.seq <= resume:
                                continue  # already yielded: resent after a resume
                            if not filtered and event.seq != last_seq + 1:
                                raise SeqGapError(run_id, last_seq + 1, event.seq)
                            last_seq = resume = event.seq
                            yield event
                            if case == "run_completed" and event.run_completed is not None:
                                status = _status(int(event.run_completed.status))
                                self.end = RunEnd(run_id, last_seq, status)
                                return
                        if response.stream_end is not None:
                            end = response.stream_end
                            # Judged before this response's resume_after_seq:
                            # RunCompleted, which every filter selects, must
                            # have come before the end.
                            if end.last_seq > resume:
                                raise SeqGapError(run_id, resume + 1, end.last_seq)
                            self.end = RunEnd(run_id, end.last_seq, _status(int(end.status)))
                            return
                        if filtered:
                            # The server looked this far; what it skipped is filtered out.
                            resume = max(resume, response.resume_after_seq)
                error: Exception | None = None
                cause = f"WatchRun ended after seq {resume} without RunCompleted"
            except (GRPCError, *TRANSPORT_ERRORS) as failure:
                reason = transient(failure)
                if reason is None:
                    answer = RunwireError.from_grpc_error(cast(GRPCError, failure))
                    finished = _beyond_end(run_id, answer)
                    if finished is not None:
                        self.end = finished
                        return
                    raise answer from failure
                error, cause = failure, reason
            await retrier.failed(error, cause, f"run {run_id!r}", run_id, f"after seq {resume}")


def watch(
    channel_or_stub: Channel | RunServiceStub,
    run_id: str,
    after_seq: int = 0,
    *,
    backoff: Backoff | None = None,
    event_filter: EventFilter | None = None,
) -> Watch:
    """Yields the run's events with `seq > after_seq`, in order, then stops at the run's end.

    The watch stops after RunCompleted, or when the server says the stream
    reached the end of the finished run (`WatchRunResponse.stream_end`, or
    OUT_OF_RANGE with reason AFTER_SEQ_BEYOND_END when `after_seq` is beyond
    it); the returned `Watch`'s `end` then holds the final status and last
    seq. On a transport error, a server restart or a draining server it
    reconnects with `after_seq` set to the last `seq` it yielded, waiting per
    `backoff` (and at least the `google.rpc.RetryInfo` delay a failed status
    carries, such as an OVERLOADED server's, up to
    `backoff.max_server_delay`); it never yields a `seq` twice (a server may resend events) and
    drops nothing: a skipped seq raises `SeqGapError`. Resumed are:
    UNAVAILABLE; INTERNAL, UNKNOWN, CANCELLED, ABORTED and DEADLINE_EXCEEDED
    when the status carries no runwire ErrorInfo (a dying connection, not the
    server's answer); a lost, reset or refused connection and HTTP/2
    protocol errors; and a stream that ends OK before its end. The rule is
    the same in every client (clients/GRAMMAR.md, "Watching").

    With an `event_filter` naming kinds or node ids, only the events it
    selects are yielded (RunCompleted always is), seqs may skip, and a
    reconnect resumes after the server's last `resume_after_seq`, past the
    events the filter skipped.

    Args:
        channel_or_stub: A grpclib `Channel` to the server, or a
            `RunServiceStub` built on one (to pass metadata, timeouts, ...).
        run_id: The run to watch.
        after_seq: Yield only events after this `seq`; 0 for the whole stream.
        backoff: The reconnect policy; `Backoff()` when omitted.
        event_filter: Which events of the run to yield; all when omitted.

    Raises:
        RunwireError: The server answered with a status that is not retried
            (for example NOT_FOUND, or INTERNAL with reason INTERNAL), or
            reconnecting failed for longer than `backoff.give_up_after`, or
            the server asked for a retry later than that budget allows.
        UnknownEventError: The server sent an event this client does not know.
        SeqGapError: The server skipped a seq.
    """
    stub = (
        channel_or_stub
        if isinstance(channel_or_stub, RunServiceStub)
        else RunServiceStub(channel_or_stub)
    )
    return Watch(stub, run_id, after_seq, backoff or Backoff(), event_filter)
