"""What WatchRun and WatchEvents share (rpc/_streams.py): a span parented by the
caller's trace headers, and a database blip mid-stream that ends the stream
UNAVAILABLE (DATABASE_UNAVAILABLE), so clients resume, with the span ended."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import Harness, wait_for_event
from test_resilience import _details, _gated, _started_proxy

from runwire.v1 import run_service_pb2

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
TRACEPARENT = (("traceparent", f"00-{TRACE_ID}-{PARENT}-01"),)


async def _to_the_end(stream: AsyncIterator[Any]) -> None:
    async for _ in stream:
        pass


@pytest.mark.parametrize("method", ["WatchRun", "WatchEvents"])
async def test_watch_streams_end_unavailable_on_a_database_blip_inside_their_span(
    harness_factory: Any, database_url: str, tmp_path: Path, method: str
) -> None:
    proxy, proxied = await _started_proxy(database_url, tmp_path)
    try:
        h: Harness = await harness_factory(database_url=proxied)
        run = await h.start(_gated())  # held at its approval gate: the stream stays open
        await wait_for_event(h.stub, run.run_id, lambda e: e.HasField("approval_requested"))
        if method == "WatchRun":
            call = h.stub.WatchRun(
                run_service_pb2.WatchRunRequest(run_id=run.run_id), metadata=TRACEPARENT
            )
        else:
            call = h.stub.WatchEvents(
                run_service_pb2.WatchEventsRequest(start=run_service_pb2.STREAM_START_EARLIEST),
                metadata=TRACEPARENT,
            )
        stream = call.__aiter__()
        await stream.__anext__()  # streaming: the server is past its first read
        proxy.refusing = True
        await proxy.cut()
        # Whether it is waiting or mid-read, the next read fails: wake it to read.
        h.server.hub.wake_all()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _to_the_end(stream)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
        assert _details(caught.value)[0] == "DATABASE_UNAVAILABLE"
    finally:
        proxy.refusing = False
        await proxy.close()
    (span,) = [
        s
        for s in h.spans.get_finished_spans()
        if s.name == f"/runwire.v1.RunService/{method}"
        and format(s.context.trace_id, "032x") == TRACE_ID
    ]
    assert span.kind.name == "SERVER"
    assert format(span.parent.span_id, "016x") == PARENT
    assert span.attributes["rpc.method"] == method
    if method == "WatchRun":
        assert span.attributes["runwire.run_id"] == run.run_id
