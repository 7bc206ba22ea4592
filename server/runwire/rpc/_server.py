"""Assemble and run a runwire server: database, writer, hub, engine, gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import grpc
from google.protobuf import json_format
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters
from opentelemetry.sdk.trace import TracerProvider

from runwire import telemetry
from runwire.adapters import Registry
from runwire.config import Settings
from runwire.engine import Engine, EngineSettings, RunPlan, validate_flow
from runwire.errors import RunwireError
from runwire.rpc._decode import decode_request
from runwire.rpc._service import RunService
from runwire.rpc._status import to_status
from runwire.store import (
    DurableGates,
    EmbeddedPostgres,
    EventWriter,
    Hub,
    RunRow,
    Store,
    decision_of,
    migrate,
)
from runwire.v1 import events_pb2, flow_pb2, run_service_pb2

__all__ = ["RunwireServer"]

log = logging.getLogger(__name__)

SERVICE_NAME = "runwire.v1.RunService"
# Keepalive pings find watchers whose connection died without a FIN (their
# subscriptions are freed) and keep idle streams alive through proxies and
# meshes that drop quiet connections; clients may ping every 10 s.
_SERVER_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
]
_HEALTH_METHOD_PREFIX = "/grpc.health.v1.Health/"


def _decoding(fn: Any, request: Any) -> Any:
    """`fn` taking the request's bytes: a request that does not parse is INVALID_ARGUMENT."""

    async def handler(data: bytes, context: grpc.aio.ServicerContext) -> Any:
        try:
            decoded = decode_request(request, data)
        except RunwireError as exc:
            await context.abort_with_status(to_status(exc))
        return await fn(decoded, context)

    return handler


def _decoding_stream(fn: Any, request: Any) -> Any:
    async def handler(data: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            decoded = decode_request(request, data)
        except RunwireError as exc:
            await context.abort_with_status(to_status(exc))
        async for item in fn(decoded, context):
            yield item

    return handler


def _handlers(service: RunService) -> grpc.GenericRpcHandler:
    pb = run_service_pb2

    # Requests arrive as bytes (no request_deserializer) and are decoded by
    # rpc/_decode.py, so a parse failure names its field instead of being
    # gRPC's INTERNAL.
    def unary(fn: Any, request: Any, response: Any) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(
            _decoding(fn, request), response_serializer=response.SerializeToString
        )

    return grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {
            "StartRun": unary(service.StartRun, pb.StartRunRequest, pb.StartRunResponse),
            # WatchRun writes pre-serialized WatchRunResponse bytes: identity serializer.
            "WatchRun": grpc.unary_stream_rpc_method_handler(
                _decoding_stream(service.WatchRun, pb.WatchRunRequest),
                response_serializer=lambda b: b,
            ),
            "GetRun": unary(service.GetRun, pb.GetRunRequest, pb.GetRunResponse),
            "ListRuns": unary(service.ListRuns, pb.ListRunsRequest, pb.ListRunsResponse),
            "PauseRun": unary(service.PauseRun, pb.PauseRunRequest, pb.PauseRunResponse),
            "ResumeRun": unary(service.ResumeRun, pb.ResumeRunRequest, pb.ResumeRunResponse),
            "CancelRun": unary(service.CancelRun, pb.CancelRunRequest, pb.CancelRunResponse),
            "ConfirmAction": unary(
                service.ConfirmAction, pb.ConfirmActionRequest, pb.ConfirmActionResponse
            ),
            "ResolveApproval": unary(
                service.ResolveApproval, pb.ResolveApprovalRequest, pb.ResolveApprovalResponse
            ),
            "ResolveReview": unary(
                service.ResolveReview, pb.ResolveReviewRequest, pb.ResolveReviewResponse
            ),
            "ValidateFlow": unary(
                service.ValidateFlow, pb.ValidateFlowRequest, pb.ValidateFlowResponse
            ),
        },
    )


class _BearerAuth(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no types
    """Require `authorization: Bearer <token>` on every RPC but health checks."""

    def __init__(self, tokens: tuple[str, ...]) -> None:
        self._tokens = [t.encode() for t in tokens]

        async def deny(_request: Any, context: grpc.aio.ServicerContext) -> None:
            from runwire.errors import Unauthenticated
            from runwire.rpc._status import to_status

            await context.abort_with_status(
                to_status(Unauthenticated("a valid bearer token is required"))
            )

        self._deny_unary = grpc.unary_unary_rpc_method_handler(deny)
        self._deny_stream = grpc.unary_stream_rpc_method_handler(deny)

    def _ok(self, metadata: Any) -> bool:
        for key, value in metadata or ():
            if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
                given = value[len("Bearer ") :].encode()
                return any(hmac.compare_digest(given, t) for t in self._tokens)
        return False

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if details.method.startswith(_HEALTH_METHOD_PREFIX) or self._ok(
            details.invocation_metadata
        ):
            return await continuation(details)
        return self._deny_stream if details.method.endswith("/WatchRun") else self._deny_unary


class RunwireServer:
    """One server process: start it, serve, drain it."""

    def __init__(
        self, settings: Settings, *, tracer_provider: TracerProvider | None = None
    ) -> None:
        if (settings.tls_cert is None) != (settings.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if settings.tls_client_ca is not None and settings.tls_cert is None:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
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
        self.settings = settings
        self.tracer_provider = tracer_provider or telemetry.make_tracer_provider()
        self.port = 0
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
        self._control_tasks: set[asyncio.Task[None]] = set()
        self._leases: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Connect (or start an embedded Postgres), migrate, and listen; returns the port."""
        if not self.database_url:
            self._embedded = EmbeddedPostgres(self.settings.data_dir / "postgres")
            self.database_url = await asyncio.to_thread(self._embedded.start)
        url = self.database_url
        self._pool = await asyncpg.create_pool(url, min_size=2, max_size=10)
        async with self._pool.acquire() as conn:
            await migrate(conn)
        self.store = Store(self._pool)
        self.hub.on_control = self._on_control
        self.hub.start(lambda: asyncpg.connect(url))
        self._writer = EventWriter(
            self._pool,
            self.hub,
            owner_id=self.settings.server_id,
            interval=self.settings.commit_interval,
        )
        self._writer.start()
        self.engine = Engine(
            self._writer,
            DurableGates(self.store),
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
            ),
        )
        self.service = RunService(
            self.store,
            self.hub,
            self.engine,
            server_id=self.settings.server_id,
            lease_seconds=self.settings.lease_seconds,
            tracer=telemetry.tracer(self.tracer_provider),
        )
        # WatchRun makes its own span (see RunService.WatchRun): the aio
        # interceptor keeps a context attached across the stream's yields and
        # cannot detach it when a client drops the stream mid-write.
        not_watch = filters.negate(filters.method_name("WatchRun"))
        interceptors: list[Any] = [
            aio_server_interceptor(tracer_provider=self.tracer_provider, filter_=not_watch)  # type: ignore[no-untyped-call]  # untyped library
        ]
        if self.settings.auth_tokens:
            interceptors.insert(0, _BearerAuth(self.settings.auth_tokens))
        self._grpc = grpc.aio.server(interceptors=interceptors, options=_SERVER_OPTIONS)
        self._grpc.add_generic_rpc_handlers((_handlers(self.service),))
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._grpc)
        if self.settings.reflection:
            reflection.enable_server_reflection(
                (SERVICE_NAME, reflection.SERVICE_NAME, "grpc.health.v1.Health"), self._grpc
            )
        self.port = self._listen()
        await self._grpc.start()
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self._leases = asyncio.create_task(self._lease_loop(), name="runwire-leases")
        log.info("runwire serving on %s (port %d)", self.settings.listen, self.port)
        return self.port

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

    async def _set_health(self, status: int) -> None:
        for name in ("", SERVICE_NAME):
            result = self._health.set(name, status)
            if asyncio.iscoroutine(result):
                await result

    def _on_control(self, run_id: str) -> None:
        # Another process recorded a control request for a run; apply it if it is ours.
        if self.engine is None or self.store is None or run_id not in self.engine.running():
            return
        task = asyncio.create_task(self._apply_control(run_id))
        self._control_tasks.add(task)
        task.add_done_callback(self._control_tasks.discard)

    async def _apply_control(self, run_id: str) -> None:
        assert self.store is not None
        assert self.engine is not None
        row = await self.store.get_run(run_id)
        if row is not None:
            self.engine.control(
                run_id,
                pause=row.pause_requested,
                cancel=row.cancel_requested,
                principal=row.control_principal,
                reason=row.control_reason,
            )
        for gate in await self.store.gates(run_id, pending=False):
            decision = decision_of(gate)
            if decision is not None:
                self.engine.deliver_gate(run_id, gate.node_id, gate.kind, decision)

    async def _lease_loop(self) -> None:
        """Keep leases on local runs fresh and take over runs whose owner went away."""
        assert self.store is not None
        assert self.engine is not None
        period = max(self.settings.lease_seconds / 3, 0.05)
        while True:
            try:
                local = self.engine.running()
                if local:
                    still = set(
                        await self.store.renew_leases(
                            self.settings.server_id, local, self.settings.lease_seconds
                        )
                    )
                    for run_id in local:
                        if run_id not in still:
                            await self._maybe_abandon(run_id)
                if not (self.service and self.service.draining.is_set()):
                    for row in await self.store.claim_runs(
                        self.settings.server_id, self.settings.lease_seconds, 16
                    ):
                        await self._take_over(row)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("lease upkeep failed (%s); retrying", exc)
            await asyncio.sleep(period)

    async def _maybe_abandon(self, run_id: str) -> None:
        """Stop executing a run whose lease another server has taken."""
        assert self.store is not None
        assert self.engine is not None
        row = await self.store.get_run(run_id)
        if row is None or row.finished or row.owner_id == self.settings.server_id:
            return
        log.error("lost the lease on run %s to %s; stopping it here", run_id, row.owner_id)
        await self.engine.abandon(run_id)

    async def _take_over(self, row: RunRow) -> None:
        """Continue a run another process (or an earlier life of this one) left unfinished."""
        assert self.store is not None
        assert self.engine is not None
        flow = json_format.ParseDict(row.flow_json, flow_pb2.Flow())
        try:
            graph = validate_flow(flow, self.engine.registry)
        except RunwireError as exc:
            log.error("run %s cannot be taken over: %s", row.run_id, exc)
            return
        history = [
            events_pb2.RunEvent.FromString(e.payload)
            for e in await self.store.all_events(row.run_id)
        ]
        log.info("taking over run %s at seq %d", row.run_id, history[-1].seq if history else 0)
        self.engine.start(
            RunPlan(
                run_id=row.run_id,
                graph=graph,
                inputs=row.inputs,
                flow_digest=row.flow_digest,
                principal=row.principal,
                trigger="api",
                request_id=row.request_id or "",
                history=history or None,
                pause_requested=row.pause_requested,
                cancel_requested=row.cancel_requested,
            )
        )
        # A pause, resume or cancel recorded between the claim and now found no
        # local run to tell and its NOTIFY was ignored: read the row again.
        await self._apply_control(row.run_id)

    async def drain(self) -> None:
        """Graceful stop: refuse new runs, close streams after the grace period, stop."""
        assert self.service is not None
        log.info("draining")
        self.service.draining.set()
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        grace = self.settings.drain_grace
        if self.engine is not None and self.engine.running():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.engine.wait_idle(), grace)
        self.service.closing_streams.set()
        await self.stop(grace=min(grace, 1.0))

    async def stop(self, grace: float | None = None) -> None:
        """Stop everything this server started."""
        if self.service is not None:
            self.service.draining.set()
            self.service.closing_streams.set()
        if self._grpc is not None:
            await self._grpc.stop(grace)
        if self._leases is not None:
            self._leases.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._leases
        if self.engine is not None:
            left = await self.engine.stop()
            if left and self._writer is not None and self.store is not None:
                await self._writer.flush()
                # Hand the runs over at once instead of waiting for leases to expire.
                await self.store.release_leases(left)
                log.warning("%d runs left for takeover: %s", len(left), ", ".join(left))
        if self._writer is not None:
            await self._writer.stop()
        await self.hub.stop()
        if self._pool is not None:
            await self._pool.close()
        if self._embedded is not None:
            await asyncio.to_thread(self._embedded.stop)
        self.tracer_provider.shutdown()

    async def serve_until_signal(self) -> None:
        """Run until SIGTERM or SIGINT, then drain."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await self.drain()
