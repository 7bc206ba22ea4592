"""Every runwire metric instrument, in one place, and how the process exports them.

Instruments are OpenTelemetry ones; the names below are the OpenTelemetry
names, and the Prometheus names (`--metrics-listen`) follow from them: dots
become underscores, a unit of seconds adds `_seconds`, a counter adds
`_total` (`runwire.runs.started` -> `runwire_runs_started_total`). Those
Prometheus names are a contract: dashboards (deploy/) query them.

Recording is one call at a narrow point: the engine's emit (runs, attempts,
AI usage), the writer's commit (one add per batch, never per event), the
replica's takeover, a watcher's wake-up. Gauges are observed only when
collected, from counts the server keeps anyway. Without an exporter every
instrument is a no-op.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, NoOpMeter, Observation

__all__ = ["METER_NAME", "NOOP_METRICS", "Metrics", "MetricsExport", "parse_listen"]

log = logging.getLogger(__name__)

METER_NAME = "runwire"

_SECONDS_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    600.0, 1800.0, 3600.0,
)  # fmt: skip
_COMMIT_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
_BATCH_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)
_LAG_BUCKETS = (0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0, 10000.0)


class Metrics:
    """The process's instruments (a no-op set when nothing exports them)."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        m = meter
        # Runs: started here by StartRun (a takeover does not start a run again).
        self.runs_started = m.create_counter(
            "runwire.runs.started", unit="{run}", description="Runs started, by flow."
        )
        self.runs_finished = m.create_counter(
            "runwire.runs.finished",
            unit="{run}",
            description="Runs finished (RunCompleted), by status and flow.",
        )
        # Attempts: one per NodeSucceeded or NodeFailed of an attempt (a
        # fan-out node counts its items' attempts, not its frame).
        self.node_attempts = m.create_counter(
            "runwire.node.attempts",
            unit="{attempt}",
            description="Node attempts finished, by adapter and outcome (succeeded, failed).",
        )
        self.node_attempt_duration = m.create_histogram(
            "runwire.node.attempt.duration",
            unit="s",
            description="Wall time of node attempts, by adapter.",
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
        )
        # The event writer: one record per committed batch.
        self.events_committed = m.create_counter(
            "runwire.events.committed", unit="{event}", description="Events committed."
        )
        self.commit_batch_size = m.create_histogram(
            "runwire.commit.batch_size",
            unit="{event}",
            description="Events per committed batch (group commit).",
            explicit_bucket_boundaries_advisory=_BATCH_BUCKETS,
        )
        self.commit_duration = m.create_histogram(
            "runwire.commit.duration",
            unit="s",
            description="Time of one batch's commit statement.",
            explicit_bucket_boundaries_advisory=_COMMIT_BUCKETS,
        )
        # Watchers: how far behind the newest committed seq a watcher was when it woke.
        self.watcher_lag = m.create_histogram(
            "runwire.watcher.lag_seqs",
            unit="{seq}",
            description="Seqs a live watcher had yet to receive when it woke.",
            explicit_bucket_boundaries_advisory=_LAG_BUCKETS,
        )
        self.takeovers = m.create_counter(
            "runwire.takeovers",
            unit="{run}",
            description="Runs this process took over from another (or an earlier) process.",
        )
        self.ai_tokens = m.create_counter(
            "runwire.ai.tokens",
            unit="{token}",
            description="Model tokens billed, by provider, model and direction (input, output).",
        )
        self.ai_cost_micros = m.create_counter(
            "runwire.ai.cost_micros",
            unit="1",
            description="Model cost in millionths of a US dollar, by provider and model.",
        )

    def observe(
        self,
        *,
        watchers: Callable[[], int],
        leases_held: Callable[[], int],
        gates_pending: Callable[[], int],
    ) -> None:
        """Register the gauges, read from the server's own counts at each collection."""
        for name, unit, description, read in (
            (
                "runwire.watchers",
                "{watcher}",
                "Live watcher streams this process serves.",
                watchers,
            ),
            (
                "runwire.leases_held",
                "{run}",
                "Runs this process executes, each under its lease.",
                leases_held,
            ),
            (
                "runwire.gates_pending",
                "{gate}",
                "Gates (confirmations, approvals, reviews) this process's runs wait on.",
                gates_pending,
            ),
        ):
            self.meter.create_observable_gauge(
                name, callbacks=[_gauge(read)], unit=unit, description=description
            )


def _gauge(read: Callable[[], int]) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(_options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(read())]

    return callback


NOOP_METRICS = Metrics(NoOpMeter(METER_NAME))


def parse_listen(listen: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 in brackets) as (host, port).

    Raises:
        ValueError: Not HOST:PORT with a port in 0-65535.
    """
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--metrics-listen {listen!r} is not HOST:PORT, e.g. 127.0.0.1:9464")
    return host.strip("[]"), int(port)


@dataclass
class _Endpoint:
    server: Any
    thread: threading.Thread


class MetricsExport:
    """The process's meter provider: OTLP when an OTLP endpoint is configured, a
    Prometheus text endpoint (`GET /metrics`) when `listen` is given; neither
    makes every instrument a no-op.

    The endpoint is prometheus_client's HTTP server on a thread of its own, so
    a scrape never waits for the event loop; collection reads the SDK's
    aggregates, which are thread-safe.
    """

    def __init__(self, listen: str | None = None) -> None:
        self.listen = listen
        self.port: int | None = None  # the endpoint's port once started
        self._provider: Any = None
        self._endpoint: _Endpoint | None = None
        self._registry: Any = None
        readers: list[Any] = []
        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
        ):
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter,
            )
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        if listen is not None:
            parse_listen(listen)
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from prometheus_client import CollectorRegistry

            # A registry of this server's own, not prometheus_client's global one:
            # several servers in one process (tests) export separately.
            self._registry = CollectorRegistry(auto_describe=True)
            readers.append(
                PrometheusMetricReader(scope_info_enabled=False, registry=self._registry)
            )
        if not readers:
            self.metrics = NOOP_METRICS
            return
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.resources import Resource

        resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "runwire")})
        self._provider = MeterProvider(metric_readers=readers, resource=resource)
        self.metrics = Metrics(self._provider.get_meter(METER_NAME))

    def start(self) -> int | None:
        """Listen for scrapes (with `listen`); returns the port (the kernel's pick for 0).

        Raises:
            ValueError: The address cannot be bound.
        """
        if self.listen is None or self._endpoint is not None:
            return self.port
        from prometheus_client import start_http_server

        host, port = parse_listen(self.listen)
        try:
            server, thread = start_http_server(port, addr=host, registry=self._registry)
        except OSError as exc:
            raise ValueError(
                f"cannot listen on --metrics-listen {self.listen}: {exc.strerror or exc}"
            ) from exc
        self._endpoint = _Endpoint(server, thread)
        self.port = int(server.server_port)
        log.info("metrics on http://%s:%d/metrics", host, self.port)
        return self.port

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop the endpoint, export what is left over OTLP (for at most `timeout`
        seconds: a collector that is gone must not hold a stopping server), and
        stop the provider. It blocks: call it off the event loop."""
        if self._endpoint is not None:
            self._endpoint.server.shutdown()
            self._endpoint.server.server_close()
            self._endpoint.thread.join(timeout=5)
            self._endpoint = None
        if self._provider is not None:
            self._provider.shutdown(timeout_millis=timeout * 1000)
            self._provider = None
