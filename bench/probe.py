"""The physical path runwire narrates a run over, hand-written: the probe that
`bench/writer.py` divides runwire's figures by.

A gRPC server with just StartRun, WatchRun and health: StartRun runs the first
node's `argv` (a shell exec node), reads its stdout in 64 KiB chunks, makes one
NodeLog RunEvent per line (stamped with event_time), and queues it; one writer
task commits the queue to Postgres on one connection (at once when idle, what
accumulated meanwhile otherwise, up to 2 000 events per statement) and then
hands the framed bytes to watchers; WatchRun streams them as WatchRunResponses.
No engine, no templates, no OpenTelemetry, no leases: what is left is the pipe,
protobuf, group commit and the stream, which runwire cannot do without.

    probe.py --data-dir DIR      prints `runwire listening on 127.0.0.1:PORT`
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from grpc_health.v1 import health, health_pb2_grpc

from runwire.store._embedded import EmbeddedPostgres
from runwire.store._framing import frame_event
from runwire.v1 import events_pb2, run_service_pb2

BATCH = 2_000


class Run:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []  # committed, framed
        self.done = False
        self.changed = asyncio.Event()


class Probe:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.runs: dict[str, Run] = {}
        self.queue: list[tuple[str, int, bytes, bool]] = []
        self.wakeup = asyncio.Event()

    def emit(self, run_id: str, event: events_pb2.RunEvent) -> None:
        event.event_time.GetCurrentTime()
        self.queue.append(
            (run_id, event.seq, event.SerializeToString(), event.HasField("run_completed"))
        )
        self.wakeup.set()

    async def writer(self) -> None:
        while True:
            await self.wakeup.wait()
            batch, self.queue = self.queue[:BATCH], self.queue[BATCH:]
            if not self.queue:
                self.wakeup.clear()
            await self.conn.execute(
                """INSERT INTO events (run_id, seq, event)
                   SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[])""",
                [b[0] for b in batch],
                [b[1] for b in batch],
                [b[2] for b in batch],
            )
            by_run: dict[str, list[bytes]] = {}
            for run_id, _seq, payload, completed in batch:
                by_run.setdefault(run_id, []).append(frame_event(payload))
                if completed:
                    self.runs[run_id].done = True
            for run_id, framed in by_run.items():
                run = self.runs[run_id]
                run.chunks.append(b"".join(framed))
                run.changed.set()

    async def execute(self, run_id: str, argv: list[str]) -> None:
        seq = 1
        self.emit(run_id, events_pb2.RunEvent(run_id=run_id, seq=seq, run_started={}))
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        rest = b""
        number = 0
        while chunk := await proc.stdout.read(65536):
            *lines, rest = (rest + chunk).split(b"\n")
            for line in lines:
                seq += 1
                number += 1
                self.emit(
                    run_id,
                    events_pb2.RunEvent(
                        run_id=run_id,
                        seq=seq,
                        node_id="seq",
                        node_log=events_pb2.NodeLog(
                            line=line.decode(errors="replace"), line_number=number
                        ),
                    ),
                )
        await proc.wait()
        seq += 1
        self.emit(
            run_id,
            events_pb2.RunEvent(
                run_id=run_id,
                seq=seq,
                run_completed=events_pb2.RunCompleted(status=events_pb2.RUN_STATUS_SUCCEEDED),
            ),
        )

    async def start_run(
        self, request: run_service_pb2.StartRunRequest, _ctx: Any
    ) -> run_service_pb2.StartRunResponse:
        run_id = uuid.uuid4().hex
        self.runs[run_id] = Run()
        argv = list(request.flow.nodes[0].action.params["argv"])
        asyncio.get_running_loop().create_task(self.execute(run_id, [str(a) for a in argv]))
        return run_service_pb2.StartRunResponse(run=run_service_pb2.Run(run_id=run_id))

    async def watch_run(
        self, request: run_service_pb2.WatchRunRequest, _ctx: Any
    ) -> AsyncIterator[bytes]:
        run = self.runs[request.run_id]
        sent = 0
        while True:
            if sent < len(run.chunks):
                framed = b"".join(run.chunks[sent:])
                sent = len(run.chunks)
                yield framed
                continue
            if run.done:
                return
            run.changed.clear()
            await run.changed.wait()


async def main(data_dir: Path) -> None:
    pg = EmbeddedPostgres(data_dir / "postgres")
    url = await asyncio.to_thread(pg.start)
    try:
        conn = await asyncpg.connect(url)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS events (
                   run_id text, seq bigint, event bytea, PRIMARY KEY (run_id, seq))"""
        )
        probe = Probe(conn)
        writer = asyncio.create_task(probe.writer())
        server = grpc.aio.server()
        handlers = {
            "StartRun": grpc.unary_unary_rpc_method_handler(
                probe.start_run,
                request_deserializer=run_service_pb2.StartRunRequest.FromString,
                response_serializer=run_service_pb2.StartRunResponse.SerializeToString,
            ),
            "WatchRun": grpc.unary_stream_rpc_method_handler(
                probe.watch_run,
                request_deserializer=run_service_pb2.WatchRunRequest.FromString,
                response_serializer=lambda b: b,
            ),
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("runwire.v1.RunService", handlers),)
        )
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(f"runwire listening on 127.0.0.1:{port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        await stop.wait()
        await server.stop(1)
        writer.cancel()
        await conn.close()
    finally:
        await asyncio.to_thread(pg.stop)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    # `serve`, --listen and --shell-allow, as bench/run.py passes them, are ignored.
    known, _rest = parser.parse_known_args()
    asyncio.run(main(known.data_dir))
    sys.exit(0)
