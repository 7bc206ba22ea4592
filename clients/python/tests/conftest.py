"""A real grpc.aio RunService on 127.0.0.1 whose WatchRun plays a script."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpclib.client import Channel

from runwire.v1 import events_pb2, run_service_pb2, run_service_pb2_grpc
from runwire_client import RunEvent, encode_event


@dataclasses.dataclass(frozen=True)
class Send:
    """Send one WatchRunResponse carrying these events (or raw encoded events)."""

    events: Sequence[RunEvent | bytes]


@dataclasses.dataclass(frozen=True)
class Abort:
    """End the call with a non-OK status, optionally with rich status details."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    violations: Sequence[tuple[str, str]] = ()


@dataclasses.dataclass(frozen=True)
class Hold:
    """Keep the call open until the event is set (never, when it is not)."""

    until: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


Step = Sequence[Send | Abort | Hold]


def _to_proto(item: RunEvent | bytes) -> events_pb2.RunEvent:
    # The protobuf runtime keeps unknown fields, so crafted bytes pass through.
    return events_pb2.RunEvent.FromString(item if isinstance(item, bytes) else encode_event(item))


def _status_details(abort: Abort) -> bytes:
    details = []
    if abort.reason:
        info = any_pb2.Any()
        info.Pack(error_details_pb2.ErrorInfo(reason=abort.reason, domain="runwire.v1"))
        details.append(info)
    if abort.violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
                for field, description in abort.violations
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(bad)
        details.append(packed)
    status = status_pb2.Status(code=abort.code.value[0], message=abort.message, details=details)
    return status.SerializeToString()


class ScriptedRunService(run_service_pb2_grpc.RunServiceServicer):
    """WatchRun plays the next step of the script on each call and records its after_seq."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.after_seqs: list[int] = []
        self.calls_ended = 0
        self._ended = asyncio.Condition()

    async def WatchRun(
        self, request: run_service_pb2.WatchRunRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[run_service_pb2.WatchRunResponse]:
        self.after_seqs.append(request.after_seq)
        step = self.steps.pop(0)
        try:
            for action in step:
                if isinstance(action, Send):
                    events = [_to_proto(item) for item in action.events]
                    yield run_service_pb2.WatchRunResponse(events=events)
                elif isinstance(action, Hold):
                    await action.until.wait()
                else:
                    await context.abort(
                        action.code,
                        action.message,
                        trailing_metadata=(("grpc-status-details-bin", _status_details(action)),),
                    )
        finally:
            async with self._ended:
                self.calls_ended += 1
                self._ended.notify_all()

    async def until_calls_ended(self, count: int) -> None:
        async with self._ended:
            await self._ended.wait_for(lambda: self.calls_ended >= count)


StartServer = Callable[..., Awaitable[tuple[int, grpc.aio.Server]]]


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """Starts a RunService on 127.0.0.1 (port 0 unless given); stops them all afterwards."""
    servers: list[grpc.aio.Server] = []

    async def start(service: ScriptedRunService, port: int = 0) -> tuple[int, grpc.aio.Server]:
        server = grpc.aio.server()
        run_service_pb2_grpc.add_RunServiceServicer_to_server(service, server)
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        servers.append(server)
        return bound, server

    yield start
    for server in servers:
        await server.stop(None)


@pytest.fixture
async def channel_to() -> AsyncIterator[Callable[[int], Channel]]:
    """grpclib Channels to 127.0.0.1:<port>, closed afterwards."""
    channels: list[Channel] = []

    def connect(port: int) -> Channel:
        channel = Channel("127.0.0.1", port)
        channels.append(channel)
        return channel

    yield connect
    for channel in channels:
        channel.close()
