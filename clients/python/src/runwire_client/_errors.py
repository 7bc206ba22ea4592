"""The exceptions runwire_client raises.

Exception
 ├── RunwireError        an RPC ended with a status the client does not retry;
 │                       carries the google.rpc.ErrorInfo reason and the
 │                       google.rpc.BadRequest field violations
 └── ValueError
      ├── UnknownEventError  an event's oneof case is not in this client's
      │                      catalog: "unknown event, upgrade the client"
      ├── SeqGapError        the server skipped a seq: events would be lost
      └── GrammarViolation   a stream broke a rule of clients/GRAMMAR.md
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

# Imported for its side effect too: grpclib decodes the status details trailer
# through protobuf's default symbol database, which only knows ErrorInfo and
# BadRequest (and RetryInfo) once this module is loaded.
from google.rpc import error_details_pb2
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ._gen.runwire.v1 import ErrorReason

__all__ = [
    "FieldViolation",
    "GrammarViolation",
    "RunwireError",
    "SeqGapError",
    "UnknownEventError",
]

#: The ErrorInfo domain of every runwire error.
ERROR_DOMAIN = "runwire.v1"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a request (google.rpc.BadRequest.FieldViolation).

    Attributes:
        field: The proto field path, for example `flow.nodes[2].timeout`.
        description: Why the value is bad, naming the value.
    """

    field: str
    description: str


class RunwireError(Exception):
    """An RPC ended with a non-OK status that the client does not retry.

    Attributes:
        code: The gRPC status code.
        message: The status message.
        reason: The ErrorInfo reason: an `ErrorReason` name without its
            `ERROR_REASON_` prefix, for example `RUN_NOT_FOUND`; empty when the
            status carried no runwire ErrorInfo.
        domain: The ErrorInfo domain, `runwire.v1` for runwire's own errors.
        metadata: The ErrorInfo metadata.
        field_violations: One entry per bad field for `INVALID_ARGUMENT`.
    """

    def __init__(
        self,
        code: Status,
        message: str,
        *,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: Sequence[FieldViolation] = (),
    ) -> None:
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata: Mapping[str, str] = MappingProxyType(dict(metadata or {}))
        self.field_violations = tuple(field_violations)
        super().__init__(str(self))

    @property
    def error_reason(self) -> ErrorReason:
        """`reason` as the contract's enum; UNSPECIFIED when not a runwire reason."""
        if self.domain != ERROR_DOMAIN:
            return ErrorReason.UNSPECIFIED
        try:
            return ErrorReason[self.reason]
        except KeyError:
            return ErrorReason.UNSPECIFIED

    def __str__(self) -> str:
        head = f"{self.code.name}"
        if self.reason:
            head += f" {self.reason}"
        text = f"{head}: {self.message}" if self.message else head
        for violation in self.field_violations:
            text += f"\n  {violation.field}: {violation.description}"
        return text

    @classmethod
    def from_grpc_error(cls, error: GRPCError) -> RunwireError:
        """Builds the error from a grpclib `GRPCError` and its decoded status details."""
        reason = domain = ""
        metadata: dict[str, str] = {}
        violations: list[FieldViolation] = []
        for detail in _details(error):
            if isinstance(detail, error_details_pb2.ErrorInfo):
                reason, domain = detail.reason, detail.domain
                metadata = dict(detail.metadata)
            elif isinstance(detail, error_details_pb2.BadRequest):
                violations.extend(
                    FieldViolation(field=v.field, description=v.description)
                    for v in detail.field_violations
                )
        return cls(
            error.status,
            error.message or "",
            reason=reason,
            domain=domain,
            metadata=metadata,
            field_violations=violations,
        )


def _details(error: GRPCError) -> Sequence[Any]:
    details = error.details
    return details if isinstance(details, Sequence) else ()


def runwire_reason(error: GRPCError) -> str:
    """The reason of the status's runwire ErrorInfo, or an empty string."""
    for detail in _details(error):
        if isinstance(detail, error_details_pb2.ErrorInfo) and detail.domain == ERROR_DOMAIN:
            return str(detail.reason)
    return ""


def retry_delay(error: GRPCError) -> float | None:
    """The wait in seconds the status's google.rpc.RetryInfo asks for, or None.

    The runwire server attaches one when it turns a call away at an admission
    bound (RESOURCE_EXHAUSTED, reason OVERLOADED); any status may carry one.
    A negative delay counts as none; several RetryInfos: the longest.
    """
    delays = [
        detail.retry_delay.ToTimedelta().total_seconds()
        for detail in _details(error)
        if isinstance(detail, error_details_pb2.RetryInfo) and detail.HasField("retry_delay")
    ]
    asked = max(delays, default=None)
    return asked if asked is not None and asked >= 0 else None


def has_runwire_info(error: GRPCError) -> bool:
    """Whether the status carries a runwire ErrorInfo (domain `runwire.v1`).

    The runwire server attaches one to every error it raises, so a status
    without one came from the transport (a reset HTTP/2 stream, a proxy), not
    from the service. An ErrorInfo of another domain does not count. This
    reads the details the channel's status details codec decoded, which
    grpclib's default `Channel` does when googleapis-common-protos is
    installed (a dependency of this package).
    """
    return any(
        isinstance(detail, error_details_pb2.ErrorInfo) and detail.domain == ERROR_DOMAIN
        for detail in _details(error)
    )


class UnknownEventError(ValueError):
    """An event's oneof case is not in this client's catalog.

    Raised by the decoding helpers and by `watch` instead of dropping the
    event: the server speaks a newer contract, so upgrade the client.

    Attributes:
        seq: The event's `seq` (0 when unknown).
        field_numbers: The unknown field numbers found on the event.
    """

    def __init__(self, seq: int, field_numbers: Sequence[int] = (), detail: str = "") -> None:
        self.seq = seq
        self.field_numbers = tuple(field_numbers)
        where = f" (field {', '.join(map(str, self.field_numbers))})" if self.field_numbers else ""
        extra = f": {detail}" if detail else ""
        super().__init__(f"unknown event at seq {seq}{where}, upgrade the client{extra}")


class SeqGapError(ValueError):
    """The server skipped a seq: `watch` raises instead of losing events silently.

    Attributes:
        run_id: The watched run.
        expected_seq: The seq that should have come next.
        received_seq: The seq that came instead.
    """

    def __init__(self, run_id: str, expected_seq: int, received_seq: int) -> None:
        self.run_id = run_id
        self.expected_seq = expected_seq
        self.received_seq = received_seq
        super().__init__(f"run {run_id}: expected seq {expected_seq}, received seq {received_seq}")


class GrammarViolation(ValueError):
    """A stream broke a rule of the stream grammar (clients/GRAMMAR.md).

    The message is `<rule> at seq <seq>: <detail>`, the same in every client.

    Attributes:
        rule: The rule's name, for example `seq-gapless`.
        seq: The `seq` of the offending event (for `run-completed-last` at the
            end of a stream, the last `seq` seen).
        detail: What was wrong, for people.
    """

    def __init__(self, rule: str, seq: int, detail: str) -> None:
        self.rule = rule
        self.seq = seq
        self.detail = detail
        super().__init__(f"{rule} at seq {seq}: {detail}")
