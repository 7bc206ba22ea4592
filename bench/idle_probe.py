"""The floor for `bench/idle_watchers.py`: what an idle stream costs in bare grpc.aio.

A gRPC server with RunService's StartRun, WatchRun and CancelRun and nothing
behind them: StartRun answers a fixed run, WatchRun sends one response and then
waits until the client leaves, CancelRun answers at once. No database, no hub,
no OpenTelemetry, no admission: what is left of a watcher is gRPC core's call
and stream, grpc.aio's objects and tasks, and one handler coroutine.

    idle_probe.py      prints `runwire listening on 127.0.0.1:PORT`
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc

from runwire.v1 import run_service_pb2

_RUN = run_service_pb2.StartRunResponse(run=run_service_pb2.Run(run_id="probe")).SerializeToString()
_LIVE = run_service_pb2.WatchRunResponse(resume_after_seq=1).SerializeToString()


async def _start(_request: bytes, _context: Any) -> bytes:
    return _RUN


async def _cancel(_request: bytes, _context: Any) -> bytes:
    return b""


async def main() -> int:
    never = asyncio.Event()

    async def watch(_request: bytes, _context: Any) -> AsyncIterator[bytes]:
        yield _LIVE
        await never.wait()

    def same(b: bytes) -> bytes:
        return b

    handlers = grpc.method_handlers_generic_handler(
        "runwire.v1.RunService",
        {
            "StartRun": grpc.unary_unary_rpc_method_handler(_start, response_serializer=same),
            "WatchRun": grpc.unary_stream_rpc_method_handler(watch, response_serializer=same),
            "CancelRun": grpc.unary_unary_rpc_method_handler(_cancel, response_serializer=same),
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handlers,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"runwire listening on 127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
