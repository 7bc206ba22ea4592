"""Assemble and run a runwire server: database, writer, hub, engine, gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import Awaitable
from typing import Any

import asyncpg
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters
from opentelemetry.sdk.trace import TracerProvider

from runwire import telemetry
from runwire.adapters import EgressPolicy, Registry
from runwire.adapters.ai import OpenAiGateway, load_ai_config
from runwire.config import Settings
from runwire.engine import Engine, EngineSettings
from runwire.metrics import MetricsExport
from runwire.replica import Replica, Retention
from runwire.rpc._admin import ADMIN_SERVICE_NAME, AdminService
from runwire.rpc._admission import Admission, Limits
from runwire.rpc._auth import BearerAuth
from runwire.rpc._handlers import (
    SERVICE_NAME,
    admin_handlers,
    run_service_handlers,
    subscription_handlers,
)
from runwire.rpc._service import RunService
from runwire.rpc._subscriptions import SUBSCRIPTION_SERVICE_NAME, SubscriptionService
from runwire.rpc._watch_events import WatchEventsService
from runwire.store import (
    DurableGates,
    EmbeddedPostgres,
    EventWriter,
    Hub,
    LogTail,
    SchemaBehind,
    Store,
    SubscriptionStore,
    migrate,
    open_pool,
    pending_migrations,
    writer_settings,
)
from runwire.webhooks import Deliverer, DeliverySettings

__all__ = ["RunwireServer", "ServerFailed"]

log = logging.getLogger(__name__)

# Keepalive pings find watchers whose connection died without a FIN (their
# subscriptions are freed) and keep idle streams alive through proxies and
# meshes that drop quiet connections; clients may ping every 10 s.
# (`--keepalive-time` sets the interval; `connection_options` adds it.)
_SERVER_OPTIONS = [
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    # gRPC core cancels calls that wait unrequested beyond 1000 (CANCELLED, which
    # says nothing). Let them reach rpc/_admission.py instead, which answers
    # RESOURCE_EXHAUSTED with a retry delay past its bounds.
    ("grpc.server.max_pending_requests", 20_000),
    ("grpc.server.max_pending_requests_hard_limit", 40_000),
]


def connection_options(settings: Settings) -> list[tuple[str, int]]:
    """HTTP/2 connection options from the settings: keepalive interval, and the
    maximum connection age (and its grace) when one is set (see deploy/README.md)."""
    options = [("grpc.keepalive_time_ms", round(settings.keepalive_time * 1000))]
    if settings.max_connection_age > 0:
        options.append(("grpc.max_connection_age_ms", round(settings.max_connection_age * 1000)))
        if settings.max_connection_age_grace > 0:
            grace_ms = round(settings.max_connection_age_grace * 1000)
            options.append(("grpc.max_connection_age_grace_ms", grace_ms))
    return options


# A grpc.health.v1 service name for liveness probes: SERVING while the process
# serves, even with its database down or while draining (`""` and
# SERVICE_NAME say whether to route calls here: readiness).
LIVENESS_SERVICE = "runwire.liveness"
# How long a stopping server waits for the database (last commits, releasing
# leases, closing the pool) before it gives up on it and exits anyway.
_STOP_DB_TIMEOUT = 5.0
# How long start waits for the first LISTEN connect before serving anyway.
_LISTEN_WAIT = 10.0


class ServerFailed(RuntimeError):
    """A background task the server cannot live without ended: the server stopped.

    `runwire serve` exits non-zero on it, so a supervisor restarts the process.
    """


class RunwireServer:
    """One server process: start it, serve, drain it.

    Alive or honestly dead: the event writer, the LISTEN task and the lease
    task are vital. While the database is unreachable they retry and health
    says NOT_SERVING; if one of them ends, the server goes dead at once (no
    lease renewals, no new node attempts, NOT_SERVING, UNAVAILABLE to
    callers), logs why, and `serve_until_signal` raises ServerFailed.
    """

    def __init__(
        self, settings: Settings, *, tracer_provider: TracerProvider | None = None
    ) -> None:
        if settings.require_database_url and not settings.database_url:
            raise ValueError(
                "DATABASE_URL (or --database-url) is required here: --require-database-url "
                "(RUNWIRE_REQUIRE_DATABASE_URL=1, as in the container image) turns the embedded "
                "Postgres off, which is for a laptop, not a pod"
            )
        if (settings.tls_cert is None) != (settings.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if settings.tls_client_ca is not None and settings.tls_cert is None:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        # An admin token is an auth token that may also call AdminService.
        extra = tuple(t for t in settings.admin_tokens if t not in settings.auth_tokens)
        settings = dataclasses.replace(settings, auth_tokens=settings.auth_tokens + extra)
        if any(not t.strip() for t in settings.auth_tokens):
            raise ValueError("--auth-token must not be empty or blank: such a token guards nothing")
        if (
            not settings.listen_is_loopback()
            and settings.auth_tokens
            and settings.tls_cert is None
            and not settings.trusted_network
        ):
            raise ValueError(
                f"refusing to accept bearer tokens in clear text on non-loopback address "
                f"{settings.listen!r}: serve TLS (--tls-cert, --tls-key), or pass "
                "--trusted-network when a mesh sidecar terminates mTLS in front of this server"
            )
        if not settings.listen_is_loopback() and not (
            settings.auth_tokens or settings.mutual_tls()
        ):
            raise ValueError(
                f"refusing to listen on non-loopback address {settings.listen!r} without "
                "--auth-token or mutual TLS (--tls-cert, --tls-key, --tls-client-ca)"
            )
        if settings.keepalive_time <= 0:
            raise ValueError("--keepalive-time must be more than 0 seconds")
        if settings.max_connection_age < 0 or settings.max_connection_age_grace < 0:
            raise ValueError("--max-connection-age and its grace must not be negative")
        if settings.webhook_max_failures < 1 or settings.webhook_batch_events < 1:
            raise ValueError("--webhook-max-failures and --webhook-batch-events must be at least 1")
        EgressPolicy.parse(settings.webhook_allow)  # a malformed entry stops the server here
        # A bad AI configuration stops the server here, naming the provider and field.
        ai_config = load_ai_config(
            settings.ai_config,
            settings.ai_providers,
            max_turns=settings.ai_max_turns,
            read_timeout=settings.ai_read_timeout,
            local_only=settings.ai_local_only,
            capture_content=settings.ai_capture_content,
        )
        self.ai = OpenAiGateway(ai_config) if ai_config is not None else None
        self.settings = settings
        self.tracer_provider = tracer_provider or telemetry.make_tracer_provider()
        # OTLP and/or the Prometheus endpoint (--metrics-listen); a bad address stops here.
        self.metrics_export = MetricsExport(settings.metrics_listen)
        self.metrics = self.metrics_export.metrics
        self.port = 0
        self.metrics_port: int | None = None  # the Prometheus endpoint's port once listening
        self.database_url = settings.database_url or ""
        self._embedded: EmbeddedPostgres | None = None
        self._pool: asyncpg.Pool | None = None
        self.hub = Hub(settings.watcher_queue_chunks)
        self._writer: EventWriter | None = None
        self._grpc: grpc.aio.Server | None = None
        self._health = (
            health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
        )
        self.service: RunService | None = None
        self.engine: Engine | None = None
        self.store: Store | None = None
        self.replica: Replica | None = None
        self.deliverer: Deliverer | None = None
        self.log_tail: LogTail | None = None  # shared by WatchEvents and the deliverer
        self.failure: str | None = None  # why the server went dead, once it did
        self.dead = asyncio.Event()  # set once a dead server has stopped its runs
        self._signalled: asyncio.Event | None = None
        self._unhealthy: set[str] = set()
        self._serving: int | None = None
        self._alive: int | None = None
        self._stopping = False
        self._background: set[asyncio.Task[None]] = set()
        self._left: list[str] = []  # runs a dead server stopped, to hand over on stop()
        self.retention: Retention | None = None

    async def start(self) -> int:
        """Connect (or start an embedded Postgres), migrate, and listen; returns the port.

        A start that fails half-way stops what it started (an embedded Postgres
        above all) before it raises.
        """
        try:
            return await self._start()
        except BaseException:
            with contextlib.suppress(Exception):
                await self.stop(grace=0)
            raise

    async def _start(self) -> int:
        if not self.database_url:
            self._embedded = EmbeddedPostgres(self.settings.data_dir / "postgres")
            self.database_url = await asyncio.to_thread(self._embedded.start)
        url = self.database_url
        # Migrations on a connection of their own: their session advisory lock
        # must never reach the pool, which does not reset connections.
        conn = await asyncpg.connect(url)
        try:
            if self.settings.migrate:
                await migrate(conn)
            elif missing := await pending_migrations(conn):
                raise SchemaBehind(missing)
        finally:
            await conn.close()
        self._pool = await open_pool(
            url, lease_seconds=self.settings.lease_seconds, min_size=2, max_size=10
        )
        self.store = Store(self._pool)
        self.retention = Retention(
            self.store,
            (self.settings.data_dir / "workspaces").resolve(),
            max_age=self.settings.retention,
            batch=self.settings.retention_batch,
            interval=self.settings.retention_interval,
        )
        await self.retention.prepare()  # today's events partition, and the next days'
        connect_settings = writer_settings(self.settings.lease_seconds)
        self._writer = EventWriter(
            lambda: asyncpg.connect(url, server_settings=connect_settings),
            self.hub,
            owner_id=self.settings.server_id,
            lease_seconds=self.settings.lease_seconds,
            interval=self.settings.commit_interval,
            on_health=lambda ok: self._condition("event commits", ok),
            metrics=self.metrics,
        )
        self._writer.start()
        self.engine = Engine(
            self._writer,
            DurableGates(self.store, owner_id=self.settings.server_id),
            Registry.default(
                shell_allow=self.settings.shell_allow,
                shell_destructive=self.settings.shell_destructive,
                shell_limits=self.settings.shell_limits,
                fs_roots=self.settings.fs_roots,
                fs_max_bytes=self.settings.fs_max_bytes,
                http_allow=self.settings.http_allow,
                http_max_bytes=self.settings.http_max_bytes,
            ),
            telemetry.tracer(self.tracer_provider),
            EngineSettings(
                workspace_root=(self.settings.data_dir / "workspaces").resolve(),
                heartbeat_interval=self.settings.heartbeat_interval,
                max_parallel=self.settings.max_parallel,
                ai=self.ai,
                metrics=self.metrics,
            ),
        )
        self.service = RunService(
            self.store,
            self.hub,
            self.engine,
            server_id=self.settings.server_id,
            lease_seconds=self.settings.lease_seconds,
            tracer=telemetry.tracer(self.tracer_provider),
            metrics=self.metrics,
        )
        service = self.service
        self.replica = Replica(
            self.store,
            self.engine,
            self._writer,
            server_id=self.settings.server_id,
            lease_seconds=self.settings.lease_seconds,
            draining=service.draining.is_set,
            on_health=lambda ok: self._condition("lease renewal", ok),
            metrics=self.metrics,
        )
        engine = self.engine
        self.metrics.observe(
            watchers=lambda: self.hub.watching,
            leases_held=engine.active,
            gates_pending=engine.gates_pending,
        )
        self.hub.on_control = self.replica.on_control
        self.hub.on_listen = self.replica.on_listen
        self.hub.start(lambda: asyncpg.connect(url))
        # WatchRun and WatchEvents make their own spans (rpc/_streams.py): the aio
        # interceptor keeps a context attached across the stream's yields and
        # cannot detach it when a client drops the stream mid-write.
        not_watch = filters.negate(
            filters.any_of(filters.method_name("WatchRun"), filters.method_name("WatchEvents"))
        )
        interceptors: list[Any] = [
            aio_server_interceptor(tracer_provider=self.tracer_provider, filter_=not_watch)  # type: ignore[no-untyped-call]  # untyped library
        ]
        if self.settings.auth_tokens:
            interceptors.insert(0, BearerAuth(self.settings.auth_tokens))
        # gRPC sets SO_REUSEPORT by default, which would let a second server of
        # the same user start on a port in use and take half its connections.
        # Only the workers of one `serve --workers N` share a port.
        options = [
            *_SERVER_OPTIONS,
            *connection_options(self.settings),
            ("grpc.so_reuseport", 1 if self.settings.reuse_port else 0),
        ]
        self._grpc = grpc.aio.server(interceptors=interceptors, options=options)
        self.admission = Admission(
            Limits(
                starting=self.settings.max_starting,
                active_runs=self.settings.max_active_runs,
                watchers=self.settings.max_watchers,
            ),
            self.engine.active,
        )
        # One shared reader of the log's newest entries per process, for
        # caught-up WatchEvents streams and webhook subscriptions alike.
        store = self.store
        self.log_tail = LogTail(lambda: store.pool, self.hub)
        self.watch_events = WatchEventsService(
            self.store,
            self.hub,
            self.service.closing_streams,
            tracer=telemetry.tracer(self.tracer_provider),
            tail=self.log_tail,
        )
        admin = AdminService(
            self.retention,
            admin_tokens=self.settings.admin_tokens,
            guarded=bool(self.settings.auth_tokens) or self.settings.mutual_tls(),
        )
        self._grpc.add_generic_rpc_handlers(
            (
                run_service_handlers(self.service, self.watch_events, self.admission),
                admin_handlers(admin),
            )
        )
        self.deliverer = self._deliverer()
        self.hub.on_subscriptions = self.deliverer.wake  # claim on any replica's NOTIFY
        self._grpc.add_generic_rpc_handlers(
            (
                subscription_handlers(
                    SubscriptionService(
                        SubscriptionStore(self._pool),
                        self.deliverer,
                        EgressPolicy.parse(self.settings.webhook_allow),
                    )
                ),
            )
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._grpc)
        if self.settings.reflection:
            reflection.enable_server_reflection(
                (
                    SERVICE_NAME,
                    ADMIN_SERVICE_NAME,
                    SUBSCRIPTION_SERVICE_NAME,
                    reflection.SERVICE_NAME,
                    "grpc.health.v1.Health",
                ),
                self._grpc,
            )
        # Serve once this process hears the others (their commits wake its
        # watchers): a watcher that subscribed before the first LISTEN connect
        # is only woken by the connect's wake-everyone, to read the store.
        # Bounded: the LISTEN task retries on its own and its death is fatal.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_LISTEN_WAIT):
                await self.hub.listening.wait()
        self.port = self._listen()
        self.metrics_port = self.metrics_export.start()
        await self._grpc.start()
        await self._refresh_health()
        self.replica.start()
        self.retention.start()
        self.deliverer.start()
        for what, task in (
            ("the event writer", self._writer.task),
            ("the LISTEN task", self.hub.task),
            ("the lease task", self.replica.task),
        ):
            assert task is not None
            self._supervise(what, task)
        log.info("runwire serving on %s (port %d)", self.settings.listen, self.port)
        return self.port

    def _deliverer(self) -> Deliverer:
        """Webhook deliveries of this process (see runwire.webhooks)."""
        assert self._pool is not None
        s = self.settings
        return Deliverer(
            SubscriptionStore(self._pool),
            self._pool,
            owner_id=s.server_id,
            settings=DeliverySettings(
                allow=s.webhook_allow,
                max_failures=s.webhook_max_failures,
                timeout=s.webhook_timeout,
                batch_events=s.webhook_batch_events,
                retry_initial=s.webhook_retry_initial,
                retry_max=s.webhook_retry_max,
                lease_seconds=s.lease_seconds,
            ),
            log_changed=self.hub.log_changed,
            tail=self.log_tail,
        )

    def _listen(self) -> int:
        assert self._grpc is not None
        s = self.settings
        if s.tls_cert is None or s.tls_key is None:
            return int(self._grpc.add_insecure_port(s.listen))
        credentials = grpc.ssl_server_credentials(
            [(s.tls_key.read_bytes(), s.tls_cert.read_bytes())],
            root_certificates=s.tls_client_ca.read_bytes() if s.tls_client_ca else None,
            require_client_auth=s.tls_client_ca is not None,
        )
        return int(self._grpc.add_secure_port(s.listen, credentials))

    # -- health and death -------------------------------------------------------

    def _spawn(self, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _condition(self, name: str, ok: bool) -> None:
        """A vital function (commits, lease renewal) started or stopped working."""
        if ok:
            self._unhealthy.discard(name)
        else:
            self._unhealthy.add(name)
            log.error("%s failing: health is NOT_SERVING until it works again", name)
        if self.service is not None:
            self.service.unavailable = ", ".join(sorted(self._unhealthy)) or None
        self._spawn(self._refresh_health())

    async def _refresh_health(self) -> None:
        # Liveness stays SERVING through a database outage and a drain (a
        # restart would help neither); only a dead server says NOT_SERVING.
        alive = (
            health_pb2.HealthCheckResponse.SERVING
            if self.failure is None
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        if alive != self._alive:
            self._alive = alive
            result = self._health.set(LIVENESS_SERVICE, alive)
            if asyncio.iscoroutine(result):
                await result
        draining = self.service is not None and self.service.draining.is_set()
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if not (self._unhealthy or draining or self.failure)
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        if status == self._serving:
            return
        self._serving = status
        for name in ("", SERVICE_NAME):
            result = self._health.set(name, status)
            if asyncio.iscoroutine(result):
                await result

    def _supervise(self, what: str, task: asyncio.Task[None]) -> None:
        def done(t: asyncio.Task[None]) -> None:
            if self._stopping or self.failure is not None:
                return
            exc = None if t.cancelled() else t.exception()
            self.fail(f"{what} ended: {exc!r}" if exc else f"{what} ended", exc)

        task.add_done_callback(done)

    def fail(self, reason: str, exc: BaseException | None = None) -> None:
        """Go dead: the server can no longer keep its promises, so it stops pretending."""
        if self.failure is not None:
            return
        self.failure = reason
        log.critical(
            "FATAL: %s. This server stops renewing leases, stops its runs, reports "
            "NOT_SERVING and exits non-zero; another replica (or its restart) takes the "
            "runs over from their last committed event.",
            reason,
            exc_info=exc,
        )
        self._spawn(self._go_dead())

    async def _go_dead(self) -> None:
        if self.service is not None:
            self.service.draining.set()
            self.service.unavailable = self.failure
        await self._refresh_health()
        if self.replica is not None:
            await self.replica.stop()
        if self.deliverer is not None:
            await self.deliverer.stop()
        if self.engine is not None:
            self._left = await self.engine.stop()
        if self.service is not None:
            self.service.close_streams()
        self.dead.set()

    # -- stopping ---------------------------------------------------------------

    async def drain(self) -> None:
        """Graceful stop: refuse new runs, close streams after the grace period, stop."""
        assert self.service is not None
        log.info("draining")
        self.service.draining.set()
        await self._refresh_health()
        grace = self.settings.drain_grace
        if self.engine is not None and self.engine.running():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self.engine.wait_idle()
        self.service.close_streams()
        await self.stop(grace=min(grace, 1.0))

    async def stop(self, grace: float | None = None) -> None:
        """Stop everything this server started; never waits long on a database that is gone."""
        self._stopping = True
        if self.service is not None:
            self.service.draining.set()
            self.service.close_streams()
        if self._grpc is not None:
            await self._grpc.stop(grace)
        if self.replica is not None:
            await self.replica.stop()
        if self.retention is not None:
            await self.retention.stop()
        if self.deliverer is not None:
            await self.deliverer.stop()
        if self.engine is not None:
            left = [*self._left, *await self.engine.stop()]
            if left and self._writer is not None and self.store is not None:
                await self._hand_over(left)
        if self._writer is not None:
            await self._writer.stop(wait=_STOP_DB_TIMEOUT)
        await self.hub.stop()
        for task in list(self._background):
            task.cancel()
        if self._pool is not None:
            try:
                async with asyncio.timeout(_STOP_DB_TIMEOUT):
                    await self._pool.close()
            except Exception as exc:
                log.warning("closing the database pool failed (%r); terminating it", exc)
                self._pool.terminate()
        if self._embedded is not None:
            await asyncio.to_thread(self._embedded.stop)
        # Both flush to their exporters (an OTLP collector may take its 10 s
        # deadline): off the loop, which may still serve other servers (tests).
        await asyncio.to_thread(self.tracer_provider.shutdown)
        await asyncio.to_thread(self.metrics_export.shutdown, _STOP_DB_TIMEOUT)

    async def _hand_over(self, left: list[str]) -> None:
        """Commit what the stopped runs appended, then release their leases at once
        instead of making a successor wait for them to expire."""
        assert self._writer is not None
        assert self.store is not None
        try:
            async with asyncio.timeout(_STOP_DB_TIMEOUT):
                await self._writer.flush()
            async with asyncio.timeout(_STOP_DB_TIMEOUT):
                await self.store.release_leases(left)
            log.warning("%d runs left for takeover: %s", len(left), ", ".join(left))
        except Exception as exc:
            log.error(
                "could not hand over %d runs (%r); they are taken over when their leases expire",
                len(left),
                exc,
            )

    def watch_signals(self) -> asyncio.Event:
        """Catch SIGTERM and SIGINT from now on (call it before `start`, so a signal
        that arrives while starting, or right after the listening line, drains
        the server instead of killing it); the event is set on either."""
        if self._signalled is None:
            signalled = self._signalled = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, signalled.set)
        return self._signalled

    async def serve_until_signal(self) -> None:
        """Run until SIGTERM or SIGINT, then drain; raise ServerFailed if the server went dead."""
        stop = self.watch_signals()
        signalled = asyncio.ensure_future(stop.wait())
        died = asyncio.ensure_future(self.dead.wait())
        try:
            await asyncio.wait({signalled, died}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            signalled.cancel()
            died.cancel()
        if self.failure is None:
            await self.drain()
        else:
            await self.stop(grace=0.5)
        if self.failure is not None:
            raise ServerFailed(self.failure)
