"""AdminService: operations on the stored runs as a whole (PruneRuns).

When the server checks credentials at all (`--auth-token`, `--admin-token`
or mutual TLS), an admin call must present one of the `--admin-token`s: a
token that may start and watch runs may not delete them. A server that checks
nothing (a laptop on loopback) lets anyone who can reach it prune, as it
lets them do everything else.
"""

from __future__ import annotations

import hmac
import logging

import grpc

from runwire.errors import FieldViolation, InvalidArgument, PermissionDenied
from runwire.replica import Retention
from runwire.rpc._service import principal_of
from runwire.rpc._status import mapped
from runwire.v1 import admin_service_pb2

__all__ = ["ADMIN_SERVICE_NAME", "AdminService"]

log = logging.getLogger(__name__)

ADMIN_SERVICE_NAME = "runwire.v1.AdminService"
_MAX_SECONDS = 315_576_000_000  # google.protobuf.Duration's bound


def _bearer(context: grpc.aio.ServicerContext) -> bytes | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :].encode()
    return None


def _older_than(request: admin_service_pb2.PruneRunsRequest) -> float:
    if not request.HasField("older_than"):
        raise InvalidArgument(
            [FieldViolation("older_than", "is required (e.g. 2592000s for 30 days)")]
        )
    d = request.older_than
    if d.seconds < 0 or d.nanos < 0:
        raise InvalidArgument(
            [FieldViolation("older_than", f"must not be negative, got {d.seconds}s {d.nanos}ns")]
        )
    if d.seconds > _MAX_SECONDS or d.nanos > 999_999_999:
        raise InvalidArgument([FieldViolation("older_than", "is not a valid Duration")])
    return d.seconds + d.nanos / 1e9


class AdminService:
    """The AdminService implementation over the server's retention."""

    def __init__(
        self, retention: Retention, *, admin_tokens: tuple[str, ...], guarded: bool
    ) -> None:
        self._retention = retention
        self._admin_tokens = [t.encode() for t in admin_tokens]
        self._guarded = guarded

    def _check_admin(self, context: grpc.aio.ServicerContext) -> None:
        if not self._guarded:
            return
        given = _bearer(context)
        if given is not None and any(hmac.compare_digest(given, t) for t in self._admin_tokens):
            return
        raise PermissionDenied(
            "AdminService needs one of the server's --admin-token tokens"
            if self._admin_tokens
            else "AdminService is off: this server checks credentials and has no --admin-token"
        )

    @mapped
    async def PruneRuns(
        self, request: admin_service_pb2.PruneRunsRequest, context: grpc.aio.ServicerContext
    ) -> admin_service_pb2.PruneRunsResponse:
        self._check_admin(context)
        older_than = _older_than(request)
        result = await self._retention.prune(older_than, dry_run=request.dry_run)
        log.info(
            "PruneRuns by %s, older than %.0fs%s: %d runs, %d partitions dropped",
            principal_of(context),
            older_than,
            " (dry run)" if request.dry_run else "",
            result.runs,
            result.partitions_dropped,
        )
        return admin_service_pb2.PruneRunsResponse(
            run_count=result.runs,
            dropped_partition_count=result.partitions_dropped,
            removed_workspace_count=result.workspaces_removed,
        )
