"""The method tables of runwire's gRPC services.

Requests arrive as bytes (no request_deserializer) and are decoded by
rpc/_decode.py, so a request that does not parse is INVALID_ARGUMENT naming
its field instead of gRPC's INTERNAL; a call over its admission limit
(rpc/_admission.py) is RESOURCE_EXHAUSTED before its servicer runs. The
streams answer pre-serialized bytes (handed over in a `_Reply` the serializer
empties).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from runwire.errors import RunwireError
from runwire.rpc._admin import ADMIN_SERVICE_NAME, AdminService
from runwire.rpc._admission import Admission
from runwire.rpc._decode import decode_request
from runwire.rpc._service import RunService
from runwire.rpc._status import to_status
from runwire.rpc._subscriptions import SUBSCRIPTION_SERVICE_NAME, SubscriptionService
from runwire.rpc._watch_events import WatchEventsService
from runwire.v1 import admin_service_pb2, run_service_pb2, subscription_service_pb2

__all__ = ["SERVICE_NAME", "admin_handlers", "run_service_handlers", "subscription_handlers"]

SERVICE_NAME = "runwire.v1.RunService"


def _decoding(fn: Any, request: Any, admit: Callable[[], Any] | None = None) -> Any:
    """`fn` taking the request's bytes: a request that does not parse is INVALID_ARGUMENT;
    with `admit`, a call over its admission limit is RESOURCE_EXHAUSTED at once."""

    async def handler(data: bytes, context: grpc.aio.ServicerContext) -> Any:
        with contextlib.ExitStack() as admitted:
            try:
                decoded = decode_request(request, data)
                if admit is not None:
                    admitted.enter_context(admit())
            except RunwireError as exc:
                await context.abort_with_status(to_status(exc))
            return await fn(decoded, context)

    return handler


class _Reply:
    """A stream's response on its way to gRPC, emptied by the serializer (`take`).

    gRPC's stream loop keeps its last response referenced until the next one;
    so would this module's loop variable. Through this holder, neither keeps
    an idle stream's last response (up to 1 MiB of replay) alive.
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def take(self) -> bytes:
        data, self.data = self.data, b""
        return data


def _decoding_stream(fn: Any, request: Any, admit: Callable[[], Any]) -> Any:
    async def handler(data: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[_Reply]:
        try:
            decoded = decode_request(request, data)
            admitted = admit()
        except RunwireError as exc:
            await context.abort_with_status(to_status(exc))
            raise  # not reached: abort_with_status raises
        with admitted:
            async for item in fn(decoded, context):
                reply = _Reply(item)
                del item
                yield reply

    return handler


def run_service_handlers(
    service: RunService, events: WatchEventsService, admission: Admission
) -> grpc.GenericRpcHandler:
    pb = run_service_pb2

    # Requests arrive as bytes (no request_deserializer) and are decoded by
    # rpc/_decode.py, so a parse failure names its field instead of being
    # gRPC's INTERNAL.
    def unary(
        fn: Any, request: Any, response: Any, admit: Callable[[], Any] | None = None
    ) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(
            _decoding(fn, request, admit), response_serializer=response.SerializeToString
        )

    return grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {
            "StartRun": unary(
                service.StartRun, pb.StartRunRequest, pb.StartRunResponse, admission.start
            ),
            # WatchRun writes pre-serialized WatchRunResponse bytes (in a _Reply).
            "WatchRun": grpc.unary_stream_rpc_method_handler(
                _decoding_stream(service.WatchRun, pb.WatchRunRequest, admission.watch),
                response_serializer=_Reply.take,
            ),
            # WatchEvents too (pre-framed stored events), under the watchers' limit.
            "WatchEvents": grpc.unary_stream_rpc_method_handler(
                _decoding_stream(events.WatchEvents, pb.WatchEventsRequest, admission.watch),
                response_serializer=_Reply.take,
            ),
            "GetRun": unary(service.GetRun, pb.GetRunRequest, pb.GetRunResponse),
            "ListRuns": unary(service.ListRuns, pb.ListRunsRequest, pb.ListRunsResponse),
            "PauseRun": unary(service.PauseRun, pb.PauseRunRequest, pb.PauseRunResponse),
            "ResumeRun": unary(service.ResumeRun, pb.ResumeRunRequest, pb.ResumeRunResponse),
            "CancelRun": unary(service.CancelRun, pb.CancelRunRequest, pb.CancelRunResponse),
            "ConfirmAction": unary(
                service.ConfirmAction, pb.ConfirmActionRequest, pb.ConfirmActionResponse
            ),
            "ResolveApproval": unary(
                service.ResolveApproval, pb.ResolveApprovalRequest, pb.ResolveApprovalResponse
            ),
            "ResolveReview": unary(
                service.ResolveReview, pb.ResolveReviewRequest, pb.ResolveReviewResponse
            ),
            "ValidateFlow": unary(
                service.ValidateFlow, pb.ValidateFlowRequest, pb.ValidateFlowResponse
            ),
        },
    )


def subscription_handlers(service: SubscriptionService) -> grpc.GenericRpcHandler:
    pb = subscription_service_pb2

    def unary(fn: Any, request: Any, response: Any) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(
            _decoding(fn, request), response_serializer=response.SerializeToString
        )

    return grpc.method_handlers_generic_handler(
        SUBSCRIPTION_SERVICE_NAME,
        {
            "CreateSubscription": unary(
                service.CreateSubscription,
                pb.CreateSubscriptionRequest,
                pb.CreateSubscriptionResponse,
            ),
            "GetSubscription": unary(
                service.GetSubscription, pb.GetSubscriptionRequest, pb.GetSubscriptionResponse
            ),
            "ListSubscriptions": unary(
                service.ListSubscriptions,
                pb.ListSubscriptionsRequest,
                pb.ListSubscriptionsResponse,
            ),
            "DeleteSubscription": unary(
                service.DeleteSubscription,
                pb.DeleteSubscriptionRequest,
                pb.DeleteSubscriptionResponse,
            ),
            "ResumeSubscription": unary(
                service.ResumeSubscription,
                pb.ResumeSubscriptionRequest,
                pb.ResumeSubscriptionResponse,
            ),
        },
    )


def admin_handlers(admin: AdminService) -> grpc.GenericRpcHandler:
    pb = admin_service_pb2
    return grpc.method_handlers_generic_handler(
        ADMIN_SERVICE_NAME,
        {
            "PruneRuns": grpc.unary_unary_rpc_method_handler(
                _decoding(admin.PruneRuns, pb.PruneRunsRequest),
                response_serializer=pb.PruneRunsResponse.SerializeToString,
            ),
        },
    )
