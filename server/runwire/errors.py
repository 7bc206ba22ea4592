"""The runwire error tree: one root, typed subclasses that each name their gRPC code.

    RunwireError
    ├── InvalidArgument            INVALID_ARGUMENT, with field violations
    │   ├── FlowInvalid            the flow breaks a rule
    │   ├── PageTokenInvalid       a ListRuns page token is malformed or foreign
    │   ├── FilterInvalid          a ListRuns filter cannot be parsed
    │   └── CursorInvalid          a WatchEvents cursor is malformed
    ├── RunNotFound                NOT_FOUND
    ├── SubscriptionNotFound       NOT_FOUND
    ├── RequestIdReused            ALREADY_EXISTS
    │   └── SubscriptionRequestIdReused
    ├── FailedPrecondition
    │   ├── RunFinished            the run has ended and cannot be controlled
    │   ├── AdapterDisabled        the flow needs an adapter this server has off
    │   ├── GateNotPending         no gate of that kind waits on the node
    │   └── GateAlreadyResolved    the gate was decided differently
    ├── AfterSeqBeyondEnd          OUT_OF_RANGE: WatchRun past a finished run's end
    ├── CursorExpired              OUT_OF_RANGE: a WatchEvents cursor retention passed
    ├── ServerDraining             UNAVAILABLE
    │   └── ServerUnavailable      a vital task died: the server is going down
    ├── DatabaseUnavailable        UNAVAILABLE, retry: the database cannot be reached
    ├── Overloaded                 RESOURCE_EXHAUSTED, with a retry delay
    ├── Unauthenticated            UNAUTHENTICATED
    └── PermissionDenied           PERMISSION_DENIED: valid credentials, not enough (admin calls)

`rpc` maps these to `google.rpc.Status` in one function; anything else becomes
INTERNAL without leaking details.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "AdapterDisabled",
    "AfterSeqBeyondEnd",
    "CursorExpired",
    "CursorInvalid",
    "DatabaseUnavailable",
    "FailedPrecondition",
    "FieldViolation",
    "FilterInvalid",
    "FlowInvalid",
    "GateAlreadyResolved",
    "GateNotPending",
    "InvalidArgument",
    "Overloaded",
    "PageTokenInvalid",
    "PermissionDenied",
    "RequestIdReused",
    "RunFinished",
    "RunNotFound",
    "RunwireError",
    "ServerDraining",
    "ServerUnavailable",
    "SubscriptionNotFound",
    "SubscriptionRequestIdReused",
    "Unauthenticated",
]


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field, named by its proto field path (AIP-193)."""

    field: str
    description: str


class RunwireError(Exception):
    """Root of every error runwire reports to callers."""

    # The canonical gRPC code's name: this module stays free of grpc, so the
    # engine that raises these errors can be loaded without it.
    code: ClassVar[str] = "INTERNAL"
    reason: ClassVar[str] = "INTERNAL"

    def __init__(self, message: str, *, metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = metadata or {}


class InvalidArgument(RunwireError):
    """The request is malformed; `violations` names each bad field."""

    code = "INVALID_ARGUMENT"
    reason = "REQUEST_INVALID"

    def __init__(self, violations: list[FieldViolation], message: str | None = None) -> None:
        if not violations:
            raise ValueError("InvalidArgument needs at least one violation")
        first = violations[0]
        summary = message or f"{first.field}: {first.description}"
        if len(violations) > 1 and message is None:
            summary += f" (and {len(violations) - 1} more)"
        super().__init__(summary)
        self.violations = violations


class FlowInvalid(InvalidArgument):
    """The flow breaks a validation rule."""

    reason = "FLOW_INVALID"


class PageTokenInvalid(InvalidArgument):
    """A ListRuns page token is malformed or belongs to another query."""

    reason = "PAGE_TOKEN_INVALID"


class FilterInvalid(InvalidArgument):
    """A ListRuns filter cannot be parsed."""

    reason = "FILTER_INVALID"


class CursorInvalid(InvalidArgument):
    """A WatchEvents cursor is not one the server issued."""

    reason = "CURSOR_INVALID"

    def __init__(self, description: str, field: str = "cursor") -> None:
        super().__init__([FieldViolation(field, description)])


class RunNotFound(RunwireError):
    """No run has the given id."""

    code = "NOT_FOUND"
    reason = "RUN_NOT_FOUND"

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id!r} not found", metadata={"run_id": run_id})


class RequestIdReused(RunwireError):
    """A StartRun request id was used before with a different body."""

    code = "ALREADY_EXISTS"
    reason = "REQUEST_ID_REUSED"

    def __init__(self, request_id: str, run_id: str) -> None:
        super().__init__(
            f"request_id {request_id!r} was used for run {run_id!r} with a different request body",
            metadata={"request_id": request_id, "run_id": run_id},
        )


class SubscriptionNotFound(RunwireError):
    """No subscription has the given name."""

    code = "NOT_FOUND"
    reason = "SUBSCRIPTION_NOT_FOUND"

    def __init__(self, name: str) -> None:
        super().__init__(f"subscription {name!r} not found", metadata={"name": name})


class SubscriptionRequestIdReused(RequestIdReused):
    """A CreateSubscription request id was used before with a different body."""

    def __init__(self, request_id: str, name: str) -> None:
        RunwireError.__init__(
            self,
            f"request_id {request_id!r} was used for {name!r} with a different request body",
            metadata={"request_id": request_id, "name": name},
        )


class FailedPrecondition(RunwireError):
    """The request is well-formed but the system is not in a state to honour it."""

    code = "FAILED_PRECONDITION"
    reason = "INTERNAL"


class RunFinished(FailedPrecondition):
    """The run has ended; control RPCs cannot change it."""

    reason = "RUN_FINISHED"

    def __init__(self, run_id: str, status: str) -> None:
        super().__init__(
            f"run {run_id!r} already finished with status {status}",
            metadata={"run_id": run_id, "status": status},
        )


class AdapterDisabled(FailedPrecondition):
    """The flow uses an adapter (or node kind) this server has disabled."""

    reason = "ADAPTER_DISABLED"

    def __init__(self, field: str, adapter: str, hint: str) -> None:
        super().__init__(
            f"{field}: adapter {adapter!r} is disabled on this server; {hint}",
            metadata={"field": field, "adapter": adapter},
        )


class GateNotPending(FailedPrecondition):
    """No gate of the requested kind waits on the node."""

    reason = "GATE_NOT_PENDING"


class GateAlreadyResolved(FailedPrecondition):
    """The gate was already decided differently."""

    reason = "GATE_ALREADY_RESOLVED"


class AfterSeqBeyondEnd(RunwireError):
    """WatchRun asked for events after a seq the finished run never reached.

    The metadata tells the watcher where the run ended and how, so a client
    ends its watch as finished instead of retrying.
    """

    code = "OUT_OF_RANGE"
    reason = "AFTER_SEQ_BEYOND_END"

    def __init__(self, run_id: str, after_seq: int, last_seq: int, status: str) -> None:
        super().__init__(
            f"run {run_id!r} finished with status {status} at seq {last_seq}; "
            f"after_seq {after_seq} is beyond its end",
            metadata={
                "run_id": run_id,
                "after_seq": str(after_seq),
                "last_seq": str(last_seq),
                "status": status,
            },
        )


class CursorExpired(RunwireError):
    """A WatchEvents cursor points before events retention has deleted: resuming
    from it would silently skip them."""

    code = "OUT_OF_RANGE"
    reason = "CURSOR_EXPIRED"

    def __init__(self, position: int, horizon: int) -> None:
        super().__init__(
            f"the cursor is at log position {position}, but events up to position {horizon} "
            "were deleted by retention; start again without a cursor (STREAM_START_EARLIEST)",
            metadata={"position": str(position), "horizon": str(horizon)},
        )


class ServerDraining(RunwireError):
    """The server is shutting down and takes no new work."""

    code = "UNAVAILABLE"
    reason = "SERVER_DRAINING"

    def __init__(self) -> None:
        super().__init__(
            "server is draining; retry against another replica (WatchRun: resume with after_seq)"
        )


class DatabaseUnavailable(RunwireError):
    """The database cannot be reached right now; the same request may succeed later."""

    code = "UNAVAILABLE"
    reason = "DATABASE_UNAVAILABLE"

    def __init__(self, detail: str) -> None:
        super().__init__(f"the database is unreachable ({detail}); retry shortly")


class Overloaded(RunwireError):
    """The server is at its bound for this kind of work; retry after `retry_after` seconds."""

    code = "RESOURCE_EXHAUSTED"
    reason = "OVERLOADED"

    def __init__(self, what: str, limit: int, retry_after: float) -> None:
        super().__init__(
            f"server busy: {what} at its limit of {limit}; retry in {retry_after:g}s",
            metadata={"limit": str(limit), "retry_after_ms": str(int(retry_after * 1000))},
        )
        self.retry_after = retry_after


class ServerUnavailable(ServerDraining):
    """The server cannot record work any more: a vital task died and it is going
    down. Same code and reason as a drain, so clients retry against another
    replica; the message says why."""

    def __init__(self, why: str) -> None:
        RunwireError.__init__(
            self, f"server unavailable ({why}); retry, or retry against another replica"
        )


class Unauthenticated(RunwireError):
    """No valid credentials were presented."""

    code = "UNAUTHENTICATED"
    reason = "UNAUTHENTICATED"


class PermissionDenied(RunwireError):
    """Valid credentials that do not allow the call (AdminService without an admin token)."""

    code = "PERMISSION_DENIED"
    reason = "PERMISSION_DENIED"
