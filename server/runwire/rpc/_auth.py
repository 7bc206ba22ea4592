"""Bearer-token authentication of every RPC but health checks."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from runwire.errors import Unauthenticated
from runwire.rpc._status import to_status

__all__ = ["HEALTH_METHOD_PREFIX", "BearerAuth"]

HEALTH_METHOD_PREFIX = "/grpc.health.v1.Health/"


class BearerAuth(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no types
    """Require `authorization: Bearer <token>` on every RPC but health checks."""

    def __init__(self, tokens: tuple[str, ...]) -> None:
        self._tokens = [t.encode() for t in tokens]

        async def deny(_request: Any, context: grpc.aio.ServicerContext) -> None:
            await context.abort_with_status(
                to_status(Unauthenticated("a valid bearer token is required"))
            )

        self._deny_unary = grpc.unary_unary_rpc_method_handler(deny)
        self._deny_stream = grpc.unary_stream_rpc_method_handler(deny)

    def _ok(self, metadata: Any) -> bool:
        for key, value in metadata or ():
            if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
                given = value[len("Bearer ") :].encode()
                return any(hmac.compare_digest(given, t) for t in self._tokens)
        return False

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if details.method.startswith(HEALTH_METHOD_PREFIX) or self._ok(details.invocation_metadata):
            return await continuation(details)
        streaming = details.method.endswith(("/WatchRun", "/WatchEvents"))
        return self._deny_stream if streaming else self._deny_unary
