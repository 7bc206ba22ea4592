"""Deployment: `runwire migrate`, `serve --no-migrate`, `--require-database-url`,
the liveness health name, HTTP/2 connection age, and the Grafana dashboard.

Real Postgres (a fresh, empty database per test where the schema matters),
real `runwire` subprocesses, real gRPC on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import grpc
import pytest
from conftest import Harness, shell_node
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_alive import until

from runwire.config import Settings, add_serve_arguments, settings_from_args
from runwire.rpc import LIVENESS_SERVICE, SERVICE_NAME
from runwire.rpc._server import connection_options
from runwire.store import pending_migrations
from runwire.store._migrate import _migrations
from runwire.v1 import events_pb2, flow_pb2, run_service_pb2, run_service_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
ALL_MIGRATIONS = [name for _, name, _ in _migrations()]
# The metric names the dashboard may use: the Prometheus names of the
# OpenTelemetry instruments (the reference list of issue 15).
METRICS = {
    "runwire_runs_started_total",
    "runwire_runs_finished_total",
    "runwire_node_attempts_total",
    "runwire_node_attempt_duration_seconds",
    "runwire_events_committed_total",
    "runwire_commit_batch_size",
    "runwire_commit_duration_seconds",
    "runwire_watchers",
    "runwire_watcher_lag_seqs",
    "runwire_leases_held",
    "runwire_takeovers_total",
    "runwire_gates_pending",
    "runwire_ai_tokens_total",
    "runwire_ai_cost_micros_total",
}


@pytest.fixture
async def empty_database_url(pg_url: str) -> AsyncIterator[str]:
    """A database with no schema at all, as a new managed Postgres has."""
    name = f"e_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    yield urlsplit(pg_url)._replace(path=f"/{name}").geturl()
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


async def _runwire(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run `runwire ARGS` to its end; returns (exit code, stdout, stderr)."""
    base = {k: v for k, v in os.environ.items() if k != "DATABASE_URL" and "RUNWIRE_" not in k}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "runwire.cli",
        *args,
        cwd=ROOT,
        env={**base, **(env or {})},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(120):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in rows}
    finally:
        await conn.close()


async def _applied(url: str) -> list[tuple[int, str, Any]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT version, name, applied_time FROM schema_migrations ORDER BY version"
        )
        return [(r["version"], r["name"], r["applied_time"]) for r in rows]
    finally:
        await conn.close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends


# -- runwire migrate ----------------------------------------------------------------


async def test_migrate_applies_every_migration_then_is_a_no_op(empty_database_url: str) -> None:
    code, out, err = await _runwire("migrate", env={"DATABASE_URL": empty_database_url})
    assert code == 0, err
    assert [line.removeprefix("applied ") for line in out.splitlines()[:-1]] == ALL_MIGRATIONS
    assert out.splitlines()[-1] == f"schema up to date ({len(ALL_MIGRATIONS)} migration(s) applied)"
    first = await _applied(empty_database_url)
    assert [name for _, name, _ in first] == ALL_MIGRATIONS
    assert {"runs", "events"} <= await _tables(empty_database_url)

    code, out, err = await _runwire("migrate", "--database-url", empty_database_url)
    assert code == 0, err
    assert out.splitlines() == ["schema up to date (0 migration(s) applied)"]
    assert await _applied(empty_database_url) == first  # nothing re-run, same times


async def test_migrate_without_a_database_url_is_a_usage_error() -> None:
    code, out, err = await _runwire("migrate")
    assert code == 2
    assert "--database-url or DATABASE_URL" in err
    assert out == ""


async def test_migrate_of_an_unreachable_database_exits_3() -> None:
    url = f"postgresql://postgres@127.0.0.1:{_closed_port()}/postgres"
    code, _, err = await _runwire("migrate", "--database-url", url)
    assert code == 3
    assert "cannot reach the database" in err


async def test_migrate_of_a_database_that_refuses_the_connection_exits_1(pg_url: str) -> None:
    url = urlsplit(pg_url)._replace(path=f"/missing_{uuid.uuid4().hex[:8]}").geturl()
    code, _, err = await _runwire("migrate", "--database-url", url)
    assert code == 1
    assert "the database refused the connection: InvalidCatalogNameError" in err


# -- serve --no-migrate and --require-database-url ------------------------------------


async def test_serve_no_migrate_refuses_an_unmigrated_database(
    empty_database_url: str, tmp_path: Path
) -> None:
    code, out, err = await _runwire(
        "serve",
        "--no-migrate",
        "--workers",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        str(tmp_path),
        env={"DATABASE_URL": empty_database_url},
    )
    assert code == 3, err
    assert "runwire listening" not in out
    assert "the database schema is behind this server" in err
    assert ", ".join(ALL_MIGRATIONS) in err
    assert "run `runwire migrate`" in err
    assert await _tables(empty_database_url) == set()  # it created nothing


async def test_serve_no_migrate_by_environment_names_only_the_missing_migrations(
    empty_database_url: str, tmp_path: Path
) -> None:
    code, _, err = await _runwire("migrate", "--database-url", empty_database_url)
    assert code == 0, err
    conn = await asyncpg.connect(empty_database_url)
    try:  # as if a newer server's last migration had not been applied yet
        await conn.execute("DELETE FROM schema_migrations WHERE name = $1", ALL_MIGRATIONS[-1])
        assert await pending_migrations(conn) == [ALL_MIGRATIONS[-1]]
    finally:
        await conn.close()
    code, _, err = await _runwire(
        "serve",
        "--workers",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        str(tmp_path),
        env={"DATABASE_URL": empty_database_url, "RUNWIRE_NO_MIGRATE": "1"},
    )
    assert code == 3
    assert f"1 migration(s) not applied ({ALL_MIGRATIONS[-1]})" in err


async def test_serve_no_migrate_serves_a_migrated_database(harness_factory: Any) -> None:
    h: Harness = await harness_factory(migrate=False)
    run = await h.start(flow_pb2.Flow(name="n", nodes=[shell_node("a", "echo", "hi")]))
    events = await h.events(run.run_id)
    assert events[-1].run_completed.status == events_pb2.RUN_STATUS_SUCCEEDED


async def test_serve_requires_a_database_url_when_told(tmp_path: Path) -> None:
    code, out, err = await _runwire(
        "serve",
        "--workers",
        "1",
        "--listen",
        "0.0.0.0:0",  # as in the image: the URL is what it says is missing
        "--data-dir",
        str(tmp_path),
        env={"RUNWIRE_REQUIRE_DATABASE_URL": "1"},
    )
    assert code == 2
    assert "runwire listening" not in out
    assert "DATABASE_URL (or --database-url) is required here" in err
    assert not (tmp_path / "postgres").exists()  # no embedded Postgres was started


def test_config_reads_the_deploy_flags_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import argparse

    def parse(*argv: str) -> Settings:
        parser = argparse.ArgumentParser()
        add_serve_arguments(parser)
        return settings_from_args(parser.parse_args(list(argv)))

    default = parse()
    assert (default.migrate, default.require_database_url) == (True, False)
    assert (default.keepalive_time, default.max_connection_age) == (30.0, 0.0)
    for name, value in {
        "NO_MIGRATE": "1",
        "REQUIRE_DATABASE_URL": "true",
        "KEEPALIVE_TIME": "20",
        "MAX_CONNECTION_AGE": "1800",
        "MAX_CONNECTION_AGE_GRACE": "60",
    }.items():
        monkeypatch.setenv(f"RUNWIRE_{name}", value)
    s = parse()
    assert (s.migrate, s.require_database_url) == (False, True)
    assert (s.keepalive_time, s.max_connection_age, s.max_connection_age_grace) == (20, 1800, 60)
    assert connection_options(s) == [
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.max_connection_age_ms", 1_800_000),
        ("grpc.max_connection_age_grace_ms", 60_000),
    ]
    assert parse("--max-connection-age", "0").max_connection_age == 0
    assert connection_options(parse("--max-connection-age", "0")) == [
        ("grpc.keepalive_time_ms", 20_000)
    ]


# -- health for probes -------------------------------------------------------------------


async def _health(h: Harness, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(h.channel)
    got = await stub.Check(health_pb2.HealthCheckRequest(service=service))
    return int(got.status)


async def test_liveness_stays_serving_while_readiness_drains(harness_factory: Any) -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    h: Harness = await harness_factory(drain_grace=30.0)
    assert await _health(h, LIVENESS_SERVICE) == serving
    assert await _health(h, SERVICE_NAME) == serving
    # A running node keeps the drain waiting, so its state can be observed.
    run = await h.start(flow_pb2.Flow(name="slow", nodes=[shell_node("s", "sleep", "30")]))
    async for response in h.stub.WatchRun(run_service_pb2.WatchRunRequest(run_id=run.run_id)):
        if any(e.HasField("node_started") for e in response.events):
            break
    draining = asyncio.ensure_future(h.server.drain())
    try:

        async def not_ready() -> bool:
            return await _health(h, SERVICE_NAME) != serving

        await until("readiness NOT_SERVING while draining", not_ready)
        assert await _health(h, "") != serving
        assert await _health(h, LIVENESS_SERVICE) == serving
        assert not draining.done()
    finally:
        await h.stub.CancelRun(run_service_pb2.CancelRunRequest(run_id=run.run_id))
        await asyncio.wait_for(draining, 60)


async def test_liveness_goes_not_serving_once_the_server_is_dead(harness_factory: Any) -> None:
    h: Harness = await harness_factory()
    h.server.fail("the test says so")
    await asyncio.wait_for(h.server.dead.wait(), 30)
    assert await _health(h, LIVENESS_SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING


# -- HTTP/2 connection age -------------------------------------------------------------


async def test_max_connection_age_sends_goaway_but_lets_a_watch_finish(
    harness_factory: Any,
) -> None:
    """Past --max-connection-age the server sends GOAWAY (the client's channel
    leaves READY and reconnects for new calls), while a WatchRun already open
    on the old connection goes on to its run's end (grace 0: no limit)."""
    h: Harness = await harness_factory(max_connection_age=0.5, max_connection_age_grace=0.0)
    flow = flow_pb2.Flow(
        name="gated",
        nodes=[flow_pb2.Node(id="gate", approval=flow_pb2.ApprovalNode(message="go?"))],
    )
    run = await h.start(flow)
    watch = h.stub.WatchRun(run_service_pb2.WatchRunRequest(run_id=run.run_id))
    events: list[events_pb2.RunEvent] = []
    async for response in watch:
        events.extend(response.events)
        if any(e.HasField("approval_requested") for e in response.events):
            break

    async def left_ready() -> bool:
        return h.channel.get_state() != grpc.ChannelConnectivity.READY

    await until("GOAWAY after the connection's max age", left_ready)
    # A second connection decides the gate; the old stream carries the rest.
    async with grpc.aio.insecure_channel(h.addr) as other:
        await run_service_pb2_grpc.RunServiceStub(other).ResolveApproval(
            run_service_pb2.ResolveApprovalRequest(run_id=run.run_id, node_id="gate", approve=True)
        )
    async for response in watch:
        events.extend(response.events)
    assert events[-1].run_completed.status == events_pb2.RUN_STATUS_SUCCEEDED
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


# -- the Grafana dashboard ---------------------------------------------------------------


def test_grafana_dashboard_parses_and_charts_every_metric() -> None:
    import re

    dashboard = json.loads((ROOT / "deploy/grafana/runwire.json").read_text(encoding="utf-8"))
    assert dashboard["uid"] == "runwire"
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    assert exprs
    used = {m for e in exprs for m in re.findall(r"\brunwire_[a-z_]+", e)}
    # Histograms are queried through their _bucket/_sum/_count series.
    base = {re.sub(r"_(bucket|sum|count)$", "", m) for m in used}
    assert base <= METRICS, base - METRICS
    assert base == METRICS, f"not charted: {sorted(METRICS - base)}"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
