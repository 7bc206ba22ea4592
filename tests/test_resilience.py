"""Overload is refused fast with a retry delay; an unreachable database is UNAVAILABLE, not INTERNAL."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import asyncpg
import grpc
import pytest
from _live_proxy import TcpProxy
from conftest import Harness, util_node, wait_for_event
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from runwire.v1 import flow_pb2, run_service_pb2


def _details(exc: grpc.aio.AioRpcError) -> tuple[str, float | None]:
    """The ErrorInfo reason and the RetryInfo delay (seconds) of a status."""
    status = rpc_status.from_call(exc)
    assert status is not None
    reason, delay = "", None
    for detail in status.details:
        info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
        if detail.Is(info.DESCRIPTOR):
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(retry.DESCRIPTOR):
            detail.Unpack(retry)
            delay = retry.retry_delay.ToNanoseconds() / 1e9
    return reason, delay


def _gated() -> flow_pb2.Flow:
    return flow_pb2.Flow(
        name="held", nodes=[flow_pb2.Node(id="ok", approval=flow_pb2.ApprovalNode(message="go?"))]
    )


async def test_admission_refuses_start_run_past_the_active_run_bound_at_once(
    harness_factory: Any,
) -> None:
    h: Harness = await harness_factory(max_active_runs=1)
    held = await h.start(_gated())
    await wait_for_event(h.stub, held.run_id, lambda e: e.HasField("approval_requested"))
    t0 = time.monotonic()
    call = h.stub.StartRun(run_service_pb2.StartRunRequest(flow=_gated()))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    refused_in = time.monotonic() - t0
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _details(caught.value) == ("OVERLOADED", 1.0)
    trailers = dict(await call.trailing_metadata() or ())
    assert trailers.get("grpc-retry-pushback-ms") == "1000"
    assert refused_in < 5, "refused, not queued"
    runs = (await h.stub.ListRuns(run_service_pb2.ListRunsRequest())).runs
    assert [r.run_id for r in runs] == [held.run_id], "a refused StartRun persists nothing"
    await h.stub.CancelRun(run_service_pb2.CancelRunRequest(run_id=held.run_id))
    await h.events(held.run_id)
    assert h.server.engine is not None
    await h.server.engine.wait_idle()
    after = await h.start(flow_pb2.Flow(name="ok", nodes=[util_node("a", "set", value=1)]))
    assert (await h.events(after.run_id))[-1].HasField("run_completed")


async def test_admission_refuses_watchers_past_the_bound(harness_factory: Any) -> None:
    h: Harness = await harness_factory(max_watchers=1)
    held = await h.start(_gated())
    first = h.stub.WatchRun(run_service_pb2.WatchRunRequest(run_id=held.run_id))
    assert (await first.read()).events[0].HasField("run_started")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in h.stub.WatchRun(run_service_pb2.WatchRunRequest(run_id=held.run_id)):
            pass
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _details(caught.value)[0] == "OVERLOADED"
    first.cancel()
    # The place is given back when the stream ends.
    assert h.server.admission is not None
    for _ in range(1000):
        if not h.server.admission.watchers:
            break
        await asyncio.sleep(0.01)
    assert h.server.admission.watchers == 0
    await h.stub.CancelRun(run_service_pb2.CancelRunRequest(run_id=held.run_id))
    assert (await h.events(held.run_id))[-1].HasField("run_completed")


def _proxy_for(database_url: str, tmp_path: Path) -> tuple[TcpProxy, str]:
    """A proxy in front of the test database, and the URL that goes through it."""
    parts = urlsplit(database_url)
    query = parse_qs(parts.query)
    if "host" in query:  # the embedded Postgres listens on a Unix socket in a directory
        port = parts.port or 5432
        socket_dir = tmp_path / "pg-proxy"
        socket_dir.mkdir()
        proxy = TcpProxy(
            port,
            upstream_unix=f"{query['host'][0]}/.s.PGSQL.{port}",
            listen_unix=str(socket_dir / f".s.PGSQL.{port}"),
        )
        url = parts._replace(query=urlencode({**query, "host": str(socket_dir)}, doseq=True))
        return proxy, url.geturl()
    assert parts.port is not None
    proxy = TcpProxy(parts.port)
    # The proxy's port is known once it listens; the URL is fixed up after start().
    return proxy, database_url


async def _started_proxy(database_url: str, tmp_path: Path) -> tuple[TcpProxy, str]:
    """`_proxy_for`, listening, and the URL through it."""
    proxy, proxied = _proxy_for(database_url, tmp_path)
    await proxy.start()
    if proxy.listen_unix is None:
        parts = urlsplit(database_url)
        proxied = parts._replace(netloc=f"{parts.netloc.rpartition('@')[0]}@{proxy.addr}").geturl()
    return proxy, proxied


async def test_unreachable_database_is_unavailable_with_a_reason(
    harness_factory: Any, database_url: str, tmp_path: Path
) -> None:
    """Regression: during a Postgres outage every RPC answered INTERNAL, which clients treat as final."""
    proxy, proxied = await _started_proxy(database_url, tmp_path)
    try:
        h: Harness = await harness_factory(database_url=proxied)
        run = await h.start(flow_pb2.Flow(name="ok", nodes=[util_node("a", "set", value=1)]))
        await h.events(run.run_id)
        proxy.refusing = True
        await proxy.cut()
        for call in (
            h.stub.GetRun(run_service_pb2.GetRunRequest(run_id=run.run_id)),
            h.stub.StartRun(
                run_service_pb2.StartRunRequest(
                    flow=flow_pb2.Flow(name="ok", nodes=[util_node("a", "set", value=1)])
                )
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
            assert _details(caught.value)[0] == "DATABASE_UNAVAILABLE"
            assert "database is unreachable" in (caught.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in h.stub.WatchRun(run_service_pb2.WatchRunRequest(run_id=run.run_id)):
                pass
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        proxy.refusing = False
        # The pool reconnects on its own once the database is back.
        got = None
        for _ in range(600):
            try:
                got = await h.stub.GetRun(run_service_pb2.GetRunRequest(run_id=run.run_id))
                break
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
            assert code == grpc.StatusCode.UNAVAILABLE
            await asyncio.sleep(0.05)
        assert got is not None, "the server did not reconnect"
        assert got.run.run_id == run.run_id
    finally:
        await proxy.close()


async def test_an_idle_transaction_of_a_frozen_server_cannot_block_a_takeover(
    harness_factory: Any, database_url: str
) -> None:
    """Regression: a replica stopped (SIGSTOP) inside a transaction kept its row locks,
    and another replica's claim skipped the run until it woke. Its sessions now end
    an idle transaction after half a lease, releasing the locks."""
    h: Harness = await harness_factory(lease_seconds=1.0)
    run = await h.start(flow_pb2.Flow(name="ok", nodes=[util_node("a", "set", value=1)]))
    await h.events(run.run_id)
    pool = h.server._pool  # the server's own sessions, with its settings
    assert pool is not None
    frozen = await pool.acquire()
    other = await asyncpg.connect(database_url)
    try:
        assert await frozen.fetchval("SHOW idle_in_transaction_session_timeout") == "500ms"
        await frozen.execute("BEGIN")
        await frozen.execute("SELECT 1 FROM runs WHERE run_id = $1 FOR UPDATE", run.run_id)
        # ... and the "frozen" server does nothing more: another session claims the row.
        claimed = None
        for _ in range(200):
            claimed = await other.fetchval(
                "SELECT run_id FROM runs WHERE run_id = $1 FOR UPDATE SKIP LOCKED", run.run_id
            )
            if claimed:
                break
            await asyncio.sleep(0.05)
        assert claimed == run.run_id, "the idle transaction kept its lock"
    finally:
        await other.close()
        await pool.release(frozen)
