"""Metrics: a real `runwire serve --metrics-listen` process, scraped over HTTP.

Runs with a failing node, an approval gate and an AI node (a fake
OpenAI-compatible server on loopback) go through real gRPC; the numbers on
/metrics must be exactly what the runs did. Waits are on stream events; a
gauge that changes after the client saw the end (a lease dropped when the
run's task returns) is re-scraped until it holds, under a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import grpc
import pytest
from _fake_openai import FakeOpenAI, text_reply
from conftest import Harness, shell_node, util_node, wait_for_event
from google.protobuf.duration_pb2 import Duration
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from prometheus_client.parser import text_string_to_metric_families

from runwire._workers import _worker_metrics
from runwire.metrics import NOOP_METRICS
from runwire.v1 import events_pb2, flow_pb2, run_service_pb2, run_service_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
DEADLINE = 60.0

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """GET /metrics and parse it with prometheus_client's own parser."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@dataclass
class Served:
    stub: run_service_pb2_grpc.RunServiceStub
    metrics_url: str
    log: Path

    def scrape(self) -> Samples:
        return scrape(self.metrics_url)

    async def scrape_until(self, name: str, value: float) -> Samples:
        """Scrape until the unlabelled sample `name` reads `value` (it settles after
        the client saw the event that causes it)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + DEADLINE
        while True:
            samples = await asyncio.to_thread(self.scrape)
            if samples.get((name, frozenset())) == value or loop.time() > end:
                return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _log_file(data_dir: Path) -> BinaryIO:
    data_dir.mkdir(parents=True, exist_ok=True)
    return (data_dir / "server.log").open("ab")


@asynccontextmanager
async def serve(database_url: str, data_dir: Path, *args: str) -> AsyncIterator[Served]:
    log_path = data_dir / "server.log"
    with _log_file(data_dir) as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "runwire.cli",
            "serve",
            "--workers",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--data-dir",
            str(data_dir),
            "--database-url",
            database_url,
            "--shell-allow",
            "false",
            *args,
            cwd=ROOT,
            env={**os.environ, "RUNWIRE_LOG_LEVEL": "WARNING"},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
    channel: grpc.aio.Channel | None = None
    try:
        assert proc.stdout is not None
        listening = (await asyncio.wait_for(proc.stdout.readline(), DEADLINE)).decode()
        assert listening.startswith("runwire listening on "), log_path.read_text()
        metrics = (await asyncio.wait_for(proc.stdout.readline(), DEADLINE)).decode()
        assert metrics.startswith("runwire metrics on http://127.0.0.1:"), metrics
        channel = grpc.aio.insecure_channel(listening.split()[-1])
        yield Served(run_service_pb2_grpc.RunServiceStub(channel), metrics.split()[-1], log_path)
    finally:
        if channel is not None:
            await channel.close()
        if proc.returncode is None:
            proc.terminate()
        assert await asyncio.wait_for(proc.wait(), DEADLINE) == 0, log_path.read_text()


def _ai_config(tmp_path: Path, fake: FakeOpenAI) -> Path:
    path = tmp_path / "ai.yaml"
    path.write_text(
        json.dumps(
            {
                "providers": {"fake": {"base_url": fake.base_url, "default_model": "fake-model"}},
                # 11 prompt tokens at 2.5 and 7 completion tokens at 10 USD per
                # million: 97.5 micro-dollars, 98 rounded half up.
                "prices": {"fake/fake-model": {"input": "2.5", "output": "10"}},
            }
        )
    )
    return path


def _gated_flow() -> flow_pb2.Flow:
    """hello (util) -> ask (ai) -> gate (approval) -> boom (shell `false`, 2 attempts): fails."""
    ask = flow_pb2.Node(id="ask")
    ask.ai.provider = "fake"
    ask.ai.task = "Say hi."
    boom = shell_node("boom", "false")
    boom.retry_policy.max_attempts = 2
    boom.retry_policy.initial_backoff.CopyFrom(Duration(nanos=10_000_000))
    nodes = [
        util_node("hello", "set", value=1),
        ask,
        flow_pb2.Node(id="gate", approval=flow_pb2.ApprovalNode(message="go?")),
        boom,
    ]
    edges = [
        flow_pb2.Edge(source=a, target=b)
        for a, b in (("hello", "ask"), ("ask", "gate"), ("gate", "boom"))
    ]
    return flow_pb2.Flow(name="metered", nodes=nodes, edges=edges)


def _plain_flow() -> flow_pb2.Flow:
    return flow_pb2.Flow(name="metered-ok", nodes=[util_node("hello", "set", value=2)])


async def _to_end(stream: Any) -> list[events_pb2.RunEvent]:
    events: list[events_pb2.RunEvent] = []
    async for response in stream:
        events.extend(response.events)
    return events


@pytest.mark.timeout(180)
async def test_metrics_endpoint_counts_what_the_runs_did(database_url: str, tmp_path: Path) -> None:
    async with FakeOpenAI([text_reply("hi")]) as fake:
        config = _ai_config(tmp_path, fake)
        async with serve(database_url, tmp_path / "server", "--ai-config", str(config)) as s:
            before = await asyncio.to_thread(s.scrape)
            assert value(before, "runwire_watchers") == 0
            assert value(before, "runwire_events_committed_total") == 0

            gated = (await s.stub.StartRun(run_service_pb2.StartRunRequest(flow=_gated_flow()))).run
            # A live watcher, held open while the run waits at its gate.
            stream = s.stub.WatchRun(run_service_pb2.WatchRunRequest(run_id=gated.run_id))
            seen: list[events_pb2.RunEvent] = []
            async for response in stream:
                seen.extend(response.events)
                if any(e.WhichOneof("event") == "approval_requested" for e in response.events):
                    break
            waiting = await asyncio.to_thread(s.scrape)
            assert value(waiting, "runwire_watchers") == 1
            assert value(waiting, "runwire_gates_pending") == 1
            assert value(waiting, "runwire_leases_held") == 1

            await s.stub.ResolveApproval(
                run_service_pb2.ResolveApprovalRequest(
                    run_id=gated.run_id, node_id="gate", approve=True
                )
            )
            seen += await _to_end(stream)
            assert seen[-1].run_completed.status == events_pb2.RUN_STATUS_FAILED

            plain = (await s.stub.StartRun(run_service_pb2.StartRunRequest(flow=_plain_flow()))).run
            plain_events = await _to_end(
                s.stub.WatchRun(run_service_pb2.WatchRunRequest(run_id=plain.run_id))
            )
            assert plain_events[-1].run_completed.status == events_pb2.RUN_STATUS_SUCCEEDED

            after = await s.scrape_until("runwire_leases_held", 0)
            after = await s.scrape_until("runwire_watchers", 0)

    assert value(after, "runwire_runs_started_total", flow="metered") == 1
    assert value(after, "runwire_runs_started_total", flow="metered-ok") == 1
    assert value(after, "runwire_runs_finished_total", status="failed", flow="metered") == 1
    assert value(after, "runwire_runs_finished_total", status="succeeded", flow="metered-ok") == 1
    assert value(after, "runwire_runs_finished_total", status="succeeded", flow="metered") == 0

    attempts = {
        dict(labels)["adapter"] + "/" + dict(labels)["outcome"]: v
        for (name, labels), v in after.items()
        if name == "runwire_node_attempts_total"
    }
    assert attempts == {
        "util/succeeded": 2,
        "ai/succeeded": 1,
        "approval/succeeded": 1,
        "shell/failed": 2,
    }
    for adapter, count in (("util", 2), ("ai", 1), ("approval", 1), ("shell", 2)):
        assert value(after, "runwire_node_attempt_duration_seconds_count", adapter=adapter) == count
        assert (
            value(after, "runwire_node_attempt_duration_seconds_bucket", adapter=adapter, le="+Inf")
            == count
        )

    # Every event of both runs was committed, and counted once, batch by batch.
    total = seen[-1].seq + plain_events[-1].seq
    assert value(after, "runwire_events_committed_total") == total
    assert value(after, "runwire_commit_batch_size_sum") == total
    batches = value(after, "runwire_commit_batch_size_count")
    assert 1 <= batches <= total
    assert value(after, "runwire_commit_duration_seconds_count") == batches
    assert value(after, "runwire_commit_duration_seconds_sum") > 0

    assert value(after, "runwire_gates_pending") == 0
    assert value(after, "runwire_watchers") == 0
    assert value(after, "runwire_leases_held") == 0
    assert value(after, "runwire_takeovers_total") == 0
    # The held-open watcher went live at the gate: each wake-up records its lag.
    assert value(after, "runwire_watcher_lag_seqs_count") >= 1

    model = {"provider": "fake", "model": "fake-model"}
    assert value(after, "runwire_ai_tokens_total", **model, direction="input") == 11
    assert value(after, "runwire_ai_tokens_total", **model, direction="output") == 7
    assert value(after, "runwire_ai_cost_micros_total", **model) == 98


async def test_metrics_listen_refuses_a_bad_address(database_url: str, tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "runwire.cli",
        "serve",
        "--workers",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "no-port",
        "--database-url",
        database_url,
        "--data-dir",
        str(tmp_path),
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), DEADLINE)
    assert proc.returncode == 2
    assert b"--metrics-listen 'no-port' is not HOST:PORT" in err
    assert not out


async def test_metrics_count_a_takeover_on_the_server_that_took_the_run(
    harness_factory: Any,
) -> None:
    """A run left at its gate by a stopping server is counted as started and
    waiting there, and as taken over (not started again) and finished on the next."""
    flow = flow_pb2.Flow(
        name="handed", nodes=[flow_pb2.Node(id="gate", approval=flow_pb2.ApprovalNode())]
    )
    first: Harness = await harness_factory(lease_seconds=0.5, metrics_listen="127.0.0.1:0")
    run = await first.start(flow)
    await wait_for_event(first.stub, run.run_id, lambda e: e.HasField("approval_requested"))
    url = f"http://127.0.0.1:{first.server.metrics_port}/metrics"
    left = await asyncio.to_thread(scrape, url)
    assert value(left, "runwire_runs_started_total", flow="handed") == 1
    assert value(left, "runwire_gates_pending") == 1
    assert value(left, "runwire_leases_held") == 1
    await first.server.stop(grace=0.5)

    second: Harness = await harness_factory(lease_seconds=0.5, metrics_listen="127.0.0.1:0")
    await second.stub.ResolveApproval(
        run_service_pb2.ResolveApprovalRequest(run_id=run.run_id, node_id="gate", approve=True)
    )
    events = await second.events(run.run_id)
    assert events[-1].run_completed.status == events_pb2.RUN_STATUS_SUCCEEDED
    took = await asyncio.to_thread(scrape, f"http://127.0.0.1:{second.server.metrics_port}/metrics")
    assert value(took, "runwire_takeovers_total") == 1
    assert value(took, "runwire_runs_started_total", flow="handed") == 0
    assert value(took, "runwire_runs_finished_total", status="succeeded", flow="handed") == 1
    assert value(took, "runwire_node_attempts_total", adapter="approval", outcome="succeeded") == 1
    assert value(took, "runwire_gates_pending") == 0
    # The second server committed only what it appended: the events after the handover.
    handed_at = next(e.seq for e in events if e.HasField("approval_requested"))
    assert value(took, "runwire_events_committed_total") == events[-1].seq - handed_at


async def test_metrics_are_off_without_an_exporter(harness: Harness) -> None:
    """No --metrics-listen and no OTLP endpoint: nothing listens, and every
    instrument is the no-op one (nothing is aggregated on the hot path)."""
    assert harness.server.metrics_port is None
    assert harness.server.metrics is NOOP_METRICS


class _Collector(metrics_service_pb2_grpc.MetricsServiceServicer):  # type: ignore[misc]
    """An OTLP/gRPC metrics receiver: wakes the test when a wanted sum arrives."""

    def __init__(self, name: str, attributes: dict[str, str], wanted: float) -> None:
        self.name, self.attributes, self.wanted = name, attributes, wanted
        self.arrived = asyncio.Event()
        self.resource: dict[str, str] = {}

    async def Export(
        self, request: metrics_service_pb2.ExportMetricsServiceRequest, context: Any
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name != self.name:
                        continue
                    for point in metric.sum.data_points:
                        attrs = {a.key: a.value.string_value for a in point.attributes}
                        if attrs == self.attributes and point.as_int == self.wanted:
                            self.resource = {
                                a.key: a.value.string_value for a in rm.resource.attributes
                            }
                            self.arrived.set()
        return metrics_service_pb2.ExportMetricsServiceResponse()


async def test_metrics_go_over_otlp_when_an_endpoint_is_configured(
    harness_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    collector = _Collector("runwire.runs.finished", {"status": "succeeded", "flow": "otlp"}, 1)
    receiver = grpc.aio.server()
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(collector, receiver)
    port = receiver.add_insecure_port("127.0.0.1:0")
    await receiver.start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
        monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "100")  # ms between exports
        h: Harness = await harness_factory()
        assert h.server.metrics_port is None  # OTLP only: no endpoint without --metrics-listen
        run = await h.start(flow_pb2.Flow(name="otlp", nodes=[util_node("a", "set", value=1)]))
        assert (await h.events(run.run_id))[-1].run_completed.status == (
            events_pb2.RUN_STATUS_SUCCEEDED
        )
        await asyncio.wait_for(collector.arrived.wait(), DEADLINE)
        assert collector.resource["service.name"] == "runwire"
        await h.server.stop(grace=0.5)  # while the receiver still takes the last export
    finally:
        await receiver.stop(None)


def test_metrics_workers_listen_on_consecutive_ports() -> None:
    assert _worker_metrics(None, 1) == []
    assert _worker_metrics("0.0.0.0:9464", 0) == ["--metrics-listen", "0.0.0.0:9464"]
    assert _worker_metrics("0.0.0.0:9464", 2) == ["--metrics-listen", "0.0.0.0:9466"]
    assert _worker_metrics("[::1]:0", 3) == ["--metrics-listen", "[::1]:0"]


@pytest.mark.timeout(180)
async def test_metrics_each_worker_serves_its_own_endpoint(
    database_url: str, tmp_path: Path
) -> None:
    """`--workers 2 --metrics-listen 127.0.0.1:0`: two endpoints, one per worker;
    a run counts once, on the worker that ran it, so the sum over them is exact."""
    with _log_file(tmp_path) as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "runwire.cli",
            "serve",
            "--workers",
            "2",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--data-dir",
            str(tmp_path),
            "--database-url",
            database_url,
            cwd=ROOT,
            env={**os.environ, "RUNWIRE_LOG_LEVEL": "WARNING"},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
    try:
        assert proc.stdout is not None
        urls: list[str] = []
        listen = ""
        # Worker lines are forwarded as they come, the supervisor's last.
        while not listen or len(urls) < 2:
            line = (await asyncio.wait_for(proc.stdout.readline(), DEADLINE)).decode()
            assert line, (tmp_path / "server.log").read_text()
            if line.startswith("runwire metrics on "):
                urls.append(line.split()[-1])
            elif line.startswith("runwire listening on "):
                listen = line.split()[-1]
        assert len(set(urls)) == 2
        async with grpc.aio.insecure_channel(listen) as channel:
            stub = run_service_pb2_grpc.RunServiceStub(channel)
            run = (await stub.StartRun(run_service_pb2.StartRunRequest(flow=_plain_flow()))).run
            events = await _to_end(
                stub.WatchRun(run_service_pb2.WatchRunRequest(run_id=run.run_id))
            )
        per_worker = [await asyncio.to_thread(scrape, url) for url in urls]
        started = [value(s, "runwire_runs_started_total", flow="metered-ok") for s in per_worker]
        assert sorted(started) == [0, 1]
        committed = [value(s, "runwire_events_committed_total") for s in per_worker]
        assert sum(committed) == events[-1].seq
    finally:
        if proc.returncode is None:
            proc.terminate()
        assert await asyncio.wait_for(proc.wait(), DEADLINE) == 0
