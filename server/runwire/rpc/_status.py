"""The one mapping from runwire errors to google.rpc.Status."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from runwire.errors import DatabaseUnavailable, InvalidArgument, Overloaded, RunwireError
from runwire.store import is_transient

__all__ = ["DOMAIN", "mapped", "public_error", "to_status"]

log = logging.getLogger(__name__)

DOMAIN = "runwire.v1"

Req = TypeVar("Req")
Resp = TypeVar("Resp")


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]  # any protobuf message
    return packed


def to_status(exc: BaseException) -> grpc.Status:
    """A gRPC status with one ErrorInfo (and BadRequest for INVALID_ARGUMENT).

    Anything that is not a RunwireError becomes INTERNAL without its message,
    so internals never leak to callers; it is logged here instead.
    """
    if isinstance(exc, RunwireError):
        code, reason, message, metadata = exc.code, exc.reason, exc.message, exc.metadata
    else:
        log.error("unexpected error in RPC", exc_info=exc)
        code, reason, message, metadata = (
            "INTERNAL",
            "INTERNAL",
            "internal error; see the server log",
            {},
        )
    status = status_pb2.Status(code=getattr(code_pb2, code), message=message)
    status.details.append(
        _pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata))
    )
    if isinstance(exc, InvalidArgument):
        status.details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in exc.violations
                    ]
                )
            )
        )
    if isinstance(exc, Overloaded):
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(exc.retry_after * 1000))
        status.details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    converted = rpc_status.to_status(status)
    if isinstance(exc, Overloaded):
        # gRPC's own retry policy reads this trailer (gRFC A6: server pushback).
        pushback = (("grpc-retry-pushback-ms", str(int(exc.retry_after * 1000))),)
        return _Status(converted.code, converted.details, converted.trailing_metadata + pushback)
    return converted


@dataclass(frozen=True)
class _Status(grpc.Status):  # type: ignore[misc]  # grpc ships no types
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def public_error(exc: Exception) -> Exception:
    """The error a caller sees: a database that is restarting or unreachable is
    UNAVAILABLE (retry, here or on another replica), not INTERNAL."""
    if is_transient(exc):
        log.warning("database unavailable: %r", exc)
        return DatabaseUnavailable(f"{type(exc).__name__}: {exc}"[:200])
    return exc


def mapped(
    fn: Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]],
) -> Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]:
    """A unary servicer method whose every error ends the call with its status."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        try:
            return await fn(self, request, context)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await context.abort_with_status(to_status(public_error(exc)))
            raise  # unreachable: abort_with_status raises

    return wrapper
