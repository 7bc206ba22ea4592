"""Shared fixtures: one embedded Postgres per session, a fresh database per test
(cloned from a migrated template), and a real runwire server on 127.0.0.1:0."""

from __future__ import annotations

import os

# Before gRPC loads: see server/runwire/__init__.py (this process forks pg_ctl
# and shell nodes while its gRPC threads are busy).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from runwire.config import Settings
from runwire.rpc import RunwireServer
from runwire.store import EmbeddedPostgres, migrate
from runwire.v1 import events_pb2, flow_pb2, run_service_pb2, run_service_pb2_grpc
from runwire_client import check_stream, decode_event

TEMPLATE_DB = "runwire_template"
# tests/faults runs under `make faults` (RUNWIRE_FAULTS=1), not in `make test`.
collect_ignore = [] if os.environ.get("RUNWIRE_FAULTS") else ["faults"]
# Programs the test server allows in shell nodes.
SHELL_ALLOW = ("echo", "sh", "sleep", "seq", "cat", "false", "true", "ls", "yes", "head")


# Each session's Postgres lives under the checkout, not pytest's shared
# temporary root: a second pytest session on the machine re-restricts that root
# (0700, owned by root) and the first session's Postgres, which runs as another
# user, then panics on `pg_control: Permission denied` mid-suite.
_PG_ROOT = Path(__file__).resolve().parent.parent / ".runwire" / "test-pg"


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A Postgres server for the whole session: DATABASE_URL if given, else embedded."""
    given = os.environ.get("RUNWIRE_TEST_DATABASE_URL")
    if given:
        yield given
        return
    _PG_ROOT.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=_PG_ROOT))
    root.chmod(0o755)
    pg = EmbeddedPostgres(root / "data")
    url = pg.start()
    try:
        yield url
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


def _with_db(url: str, name: str) -> str:
    return urlsplit(url)._replace(path=f"/{name}").geturl()


@pytest.fixture(scope="session")
async def template_url(pg_url: str) -> str:
    """A migrated database that each test clones."""
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB}")
        await conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    finally:
        await conn.close()
    url = _with_db(pg_url, TEMPLATE_DB)
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return url


@pytest.fixture
async def database_url(pg_url: str, template_url: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    finally:
        await conn.close()
    yield _with_db(pg_url, name)
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


@dataclass
class Harness:
    """A started server, a channel to it, and its span exporter."""

    server: RunwireServer
    channel: grpc.aio.Channel
    stub: run_service_pb2_grpc.RunServiceStub
    spans: InMemorySpanExporter
    database_url: str
    data_dir: Path

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    async def start(self, flow: flow_pb2.Flow, **kwargs: Any) -> run_service_pb2.Run:
        response = await self.stub.StartRun(run_service_pb2.StartRunRequest(flow=flow, **kwargs))
        return response.run

    async def events(self, run_id: str, after_seq: int = 0) -> list[events_pb2.RunEvent]:
        """Every event after `after_seq` until RunCompleted, checked for grammar."""
        events = await collect(self.stub, run_id, after_seq)
        if events:  # the empty suffix after RunCompleted has no grammar to check
            assert_grammar(events, after_seq)
        return events

    async def stored(self, run_id: str) -> list[events_pb2.RunEvent]:
        assert self.server.store is not None
        rows = await self.server.store.all_events(run_id)
        return [events_pb2.RunEvent.FromString(r.payload) for r in rows]


async def collect(
    stub: run_service_pb2_grpc.RunServiceStub, run_id: str, after_seq: int = 0
) -> list[events_pb2.RunEvent]:
    """Read one WatchRun stream to its end."""
    events: list[events_pb2.RunEvent] = []
    async for response in stub.WatchRun(
        run_service_pb2.WatchRunRequest(run_id=run_id, after_seq=after_seq)
    ):
        events.extend(response.events)
    return events


def assert_grammar(events: list[events_pb2.RunEvent], after_seq: int = 0) -> None:
    """Run the Python client's stream grammar checker over server events."""
    check_stream([decode_event(e.SerializeToString()) for e in events], after_seq=after_seq)


def cases(events: list[events_pb2.RunEvent]) -> list[str]:
    """The oneof case of each event."""
    return [e.WhichOneof("event") or "?" for e in events]


def make_settings(database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    """Test server settings: loopback, port 0, a test shell allow-list."""
    values: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "database_url": database_url,
        "data_dir": data_dir,
        "shell_allow": SHELL_ALLOW,
        "heartbeat_interval": 0.2,
        "commit_interval": 0.0,
        "drain_grace": 2.0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def harness_factory(database_url: str, tmp_path: Path) -> AsyncIterator[Any]:
    """Start servers on the test database; all are stopped at the end."""
    started: list[Harness] = []

    async def start(**overrides: Any) -> Harness:
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        data_dir = tmp_path / f"server{len(started)}"
        url = overrides.pop("database_url", database_url)
        server = RunwireServer(make_settings(url, data_dir, **overrides), tracer_provider=provider)
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        h = Harness(
            server,
            channel,
            run_service_pb2_grpc.RunServiceStub(channel),
            exporter,
            database_url,
            data_dir,
        )
        started.append(h)
        return h

    yield start
    for h in started:
        await h.channel.close()
        await h.server.stop(grace=0.5)
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture
async def harness(harness_factory: Any) -> Harness:
    """One started server."""
    h: Harness = await harness_factory()
    return h


def shell_node(node_id: str, *argv: str, **fields: Any) -> flow_pb2.Node:
    """A shell exec node."""
    node = flow_pb2.Node(id=node_id, **fields)
    node.action.adapter, node.action.action = "shell", "exec"
    node.action.params.update({"argv": list(argv)})
    return node


def util_node(node_id: str, action: str, **params: Any) -> flow_pb2.Node:
    """A util node."""
    node = flow_pb2.Node(id=node_id)
    node.action.adapter, node.action.action = "util", action
    node.action.params.update(params)
    return node


def edge(
    source: str, target: str, condition: int = flow_pb2.EDGE_CONDITION_SUCCESS
) -> flow_pb2.Edge:
    """An edge."""
    return flow_pb2.Edge(source=source, target=target, condition=condition)  # type: ignore[arg-type]


def error_reason(exc: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason of a failed call's status details ("" when it has none)."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert status is not None, "the status carries no details"
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""


async def wait_for_event(
    stub: run_service_pb2_grpc.RunServiceStub, run_id: str, predicate: Any
) -> events_pb2.RunEvent:
    """Watch until an event matches; returns it (no sleeps)."""
    async for response in stub.WatchRun(run_service_pb2.WatchRunRequest(run_id=run_id)):
        for event in response.events:
            if predicate(event):
                return event
    raise AssertionError("stream ended without a matching event")
