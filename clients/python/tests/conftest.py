"""A real grpc.aio RunService on 127.0.0.1 whose WatchRun plays a script, and a
TCP front that breaks connections to it on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Literal

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpclib.client import Channel

from runwire.v1 import events_pb2, run_service_pb2, run_service_pb2_grpc
from runwire_client import RunEvent, encode_event


@dataclasses.dataclass(frozen=True)
class Send:
    """Send one response carrying these events (or raw encoded events).

    WatchRun sends `resume_after_seq`; WatchEvents sends `cursor`.
    """

    events: Sequence[RunEvent | bytes]
    resume_after_seq: int = 0
    cursor: str = ""


@dataclasses.dataclass(frozen=True)
class End:
    """Send one WatchRunResponse carrying only `stream_end`: the run is finished."""

    last_seq: int
    status: int = events_pb2.RUN_STATUS_SUCCEEDED


@dataclasses.dataclass(frozen=True)
class Abort:
    """End the call with a non-OK status, optionally with rich status details.

    A `reason` adds a google.rpc.ErrorInfo of `domain` (runwire's own unless
    given); without one the status looks like the transport's.
    """

    code: grpc.StatusCode
    message: str
    reason: str = ""
    violations: Sequence[tuple[str, str]] = ()
    domain: str = "runwire.v1"
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)
    retry_delay: float | None = None  # seconds: adds a google.rpc.RetryInfo


@dataclasses.dataclass(frozen=True)
class Refuse:
    """End the call with a status exactly as given: code, details and trailers
    (for example the runwire server's own, from runwire.rpc._status)."""

    status: grpc.Status


@dataclasses.dataclass(frozen=True)
class Hold:
    """Keep the call open until the event is set (never, when it is not)."""

    until: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


Step = Sequence[Send | End | Abort | Refuse | Hold]


def _to_proto(item: RunEvent | bytes) -> events_pb2.RunEvent:
    # The protobuf runtime keeps unknown fields, so crafted bytes pass through.
    return events_pb2.RunEvent.FromString(item if isinstance(item, bytes) else encode_event(item))


def _status_details(abort: Abort) -> bytes:
    details = []
    if abort.reason:
        info = any_pb2.Any()
        info.Pack(
            error_details_pb2.ErrorInfo(
                reason=abort.reason, domain=abort.domain, metadata=abort.metadata
            )
        )
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
    if abort.retry_delay is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(round(abort.retry_delay * 1000))
        packed = any_pb2.Any()
        packed.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        details.append(packed)
    status = status_pb2.Status(code=abort.code.value[0], message=abort.message, details=details)
    return status.SerializeToString()


class ScriptedRunService(run_service_pb2_grpc.RunServiceServicer):
    """WatchRun and WatchEvents play the next step of the script on each call
    and record their requests (WatchRun's after_seq in `after_seqs`), when
    each call arrived (`call_times`) and when each Abort was sent
    (`abort_times`), on the event loop's clock."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.call_times: list[float] = []
        self.abort_times: list[float] = []
        self.after_seqs: list[int] = []
        self.watch_requests: list[run_service_pb2.WatchRunRequest] = []
        self.events_requests: list[run_service_pb2.WatchEventsRequest] = []
        self.calls_ended = 0
        self._ended = asyncio.Condition()

    async def WatchRun(
        self, request: run_service_pb2.WatchRunRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[run_service_pb2.WatchRunResponse]:
        self.after_seqs.append(request.after_seq)
        self.watch_requests.append(request)
        async for response in self._play(context):
            yield response

    async def WatchEvents(
        self, request: run_service_pb2.WatchEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[run_service_pb2.WatchEventsResponse]:
        self.events_requests.append(request)
        async for response in self._play(context):
            if isinstance(response, run_service_pb2.WatchEventsResponse):
                yield response

    async def _play(
        self, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[run_service_pb2.WatchRunResponse | run_service_pb2.WatchEventsResponse]:
        self.call_times.append(asyncio.get_running_loop().time())
        step = self.steps.pop(0)
        try:
            for action in step:
                if isinstance(action, Send):
                    events = [_to_proto(item) for item in action.events]
                    if action.cursor:
                        yield run_service_pb2.WatchEventsResponse(
                            events=events, cursor=action.cursor
                        )
                    else:
                        yield run_service_pb2.WatchRunResponse(
                            events=events, resume_after_seq=action.resume_after_seq
                        )
                elif isinstance(action, End):
                    yield run_service_pb2.WatchRunResponse(
                        resume_after_seq=action.last_seq,
                        stream_end=run_service_pb2.StreamEnd(
                            last_seq=action.last_seq,
                            status=action.status,  # type: ignore[arg-type]  # an int, as in the .pyi's enum
                        ),
                    )
                elif isinstance(action, Hold):
                    await action.until.wait()
                elif isinstance(action, Refuse):
                    self.abort_times.append(asyncio.get_running_loop().time())
                    await context.abort_with_status(action.status)
                else:
                    self.abort_times.append(asyncio.get_running_loop().time())
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

# What FaultyFront does to a connection: break HTTP/2 (a SETTINGS frame with an
# out-of-range INITIAL_WINDOW_SIZE, which h2 rejects as a protocol error),
# reset the TCP connection (RST, as a crashed host or a proxy does), or relay
# it to the server.
Fault = Literal["h2_protocol_error", "tcp_reset"]

# One SETTINGS frame (length 6, type 0x4, no flags, stream 0) that sets
# INITIAL_WINDOW_SIZE (0x4) to 2**31, one above the largest allowed.
_BAD_SETTINGS = (6).to_bytes(3, "big") + bytes([0x4, 0x0]) + (0).to_bytes(4, "big")
_BAD_SETTINGS += struct.pack(">HI", 0x4, 2**31)


class FaultyFront:
    """A TCP front for a server: the first connections get `faults`, in order;
    later ones are relayed to the server untouched."""

    def __init__(self, backend_port: int, *faults: Fault) -> None:
        self.backend_port = backend_port
        self.faults = list(faults)
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        fault = self.faults.pop(0) if self.faults else None
        task = asyncio.create_task(self._serve(fault, reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(
        self, fault: Fault | None, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            if fault is None:
                await self._relay(reader, writer)
                return
            await reader.read(1)  # the client has started talking HTTP/2
            if fault == "tcp_reset":
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return
            writer.write(_BAD_SETTINGS)
            await writer.drain()
            while await reader.read(65536):  # until the client hangs up
                pass
        except OSError:
            pass
        finally:
            writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.backend_port)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            up_writer.close()


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


StartFront = Callable[..., Awaitable[tuple[int, FaultyFront]]]


@pytest.fixture
async def start_front() -> AsyncIterator[StartFront]:
    """Starts FaultyFronts for servers on 127.0.0.1; closes them afterwards."""
    fronts: list[FaultyFront] = []

    async def start(backend_port: int, *faults: Fault) -> tuple[int, FaultyFront]:
        front = FaultyFront(backend_port, *faults)
        fronts.append(front)
        return await front.start(), front

    yield start
    for front in fronts:
        await front.close()


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
