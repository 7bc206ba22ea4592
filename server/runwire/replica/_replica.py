"""One replica's share of the runs: keep the leases it holds, take over runs
whose lease expired, stop runs it can no longer prove it holds, and apply
control requests recorded in the store."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from google.protobuf import json_format

from runwire.engine import Engine, RunPlan, validate_flow
from runwire.metrics import NOOP_METRICS, Metrics
from runwire.store import EventWriter, RunRow, Store, decision_of, is_transient
from runwire.v1 import events_pb2, flow_pb2

__all__ = ["Replica"]

log = logging.getLogger(__name__)


class Replica:
    """Lease upkeep, takeover and control routing for one server.

    Control requests take one route: the RPC records the request in the store,
    which NOTIFYs every replica; the replica that executes the run reads the
    row and applies it (`on_control`). After the LISTEN connection comes back,
    every local run re-reads its row (`on_listen`), so a request NOTIFYed
    while it was down is not lost.
    """

    def __init__(
        self,
        store: Store,
        engine: Engine,
        writer: EventWriter,
        *,
        server_id: str,
        lease_seconds: float,
        draining: Callable[[], bool] = lambda: False,
        on_health: Callable[[bool], None] | None = None,
        metrics: Metrics = NOOP_METRICS,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._engine = engine
        self._writer = writer
        self._server_id = server_id
        self._lease_seconds = lease_seconds
        self._draining = draining
        self._on_health = on_health
        self._task: asyncio.Task[None] | None = None
        self._control_tasks: set[asyncio.Task[None]] = set()
        self.renew_failing_since: float | None = None

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The lease task; its end (other than by stop()) is fatal to the server."""
        return self._task

    def start(self) -> None:
        """Begin lease upkeep and takeovers in the background."""
        self._task = asyncio.create_task(self._lease_loop(), name="runwire-leases")

    async def stop(self) -> None:
        """Stop renewing, taking over and applying control."""
        tasks = [t for t in (self._task, *self._control_tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- control ----------------------------------------------------------------

    def on_control(self, run_id: str) -> None:
        """A control request or gate decision was recorded for a run: apply it if it is ours."""
        if run_id in self._engine.running():
            self._spawn(self.apply_control(run_id))

    def on_listen(self) -> None:
        """The LISTEN connection is (back) up: re-read every local run's control state."""
        for run_id in self._engine.running():
            self._spawn(self.apply_control(run_id))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._control_tasks.add(task)
        task.add_done_callback(self._control_done)

    def _control_done(self, task: asyncio.Task[None]) -> None:
        self._control_tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            # The next NOTIFY or reconnect re-reads the row; a run is never
            # left with a request that is recorded but not applied for good.
            log.warning("applying a control request failed: %r", exc)

    async def apply_control(self, run_id: str) -> None:
        """Hand the run's recorded control state and gate decisions to its local executor."""
        row = await self._store.get_run(run_id)
        if row is not None:
            self._engine.control(
                run_id,
                pause=row.pause_requested,
                cancel=row.cancel_requested,
                principal=row.control_principal,
                reason=row.control_reason,
            )
        for gate in await self._store.gates(run_id, pending=False):
            decision = decision_of(gate)
            if decision is not None:
                self._engine.deliver_gate(
                    run_id,
                    gate.node_id,
                    gate.kind,
                    decision,
                    gate.item_index,
                    iteration=gate.iteration,
                    call_index=gate.call_index,
                )

    # -- leases -----------------------------------------------------------------

    def _health(self, ok: bool) -> None:
        if self._on_health is not None:
            self._on_health(ok)

    async def _lease_loop(self) -> None:
        """Keep leases on local runs fresh and take over runs whose owner went away.

        Database errors a restart can raise are retried; once the leases could
        not be renewed for a whole lease period this server cannot prove it
        holds any of its runs, so it stops them all (another replica, or this
        one once the database is back, resumes them from the store). Anything
        else ends the task, which the server treats as fatal.
        """
        period = max(self._lease_seconds / 3, 0.05)
        proven = time.monotonic()
        while True:
            attempt = time.monotonic()
            try:
                await self._renew()
                proven = attempt
                if self.renew_failing_since is not None:
                    log.warning("lease renewal works again")
                    self.renew_failing_since = None
                    self._health(True)
                if not self._draining():
                    for row in await self._store.claim_runs(
                        self._server_id, self._lease_seconds, 16
                    ):
                        await self._take_over(row)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                if self.renew_failing_since is None:
                    self.renew_failing_since = attempt
                    self._health(False)
                log.warning("lease upkeep failed (%s: %s); retrying", type(exc).__name__, exc)
                if time.monotonic() - proven >= self._lease_seconds and self._engine.running():
                    await self._stop_unproven()
            await asyncio.sleep(period)

    async def _renew(self) -> None:
        local = self._engine.running()
        if not local:
            return
        still = set(await self._store.renew_leases(self._server_id, local, self._lease_seconds))
        for run_id in local:
            if run_id not in still:
                await self._maybe_abandon(run_id)

    async def _stop_unproven(self) -> None:
        runs = self._engine.running()
        log.error(
            "leases not renewed for %.1fs: stopping %d runs this server can no longer "
            "prove it holds (%s)",
            self._lease_seconds,
            len(runs),
            ", ".join(runs),
        )
        for run_id in runs:
            await self._abandon(run_id)

    async def _maybe_abandon(self, run_id: str) -> None:
        """Stop executing a run whose lease this server no longer holds.

        Only a run that finished here (its RunCompleted is committed and its
        executor is returning) is left alone. A run another server took over,
        finished or not, and a run whose lease expired are stopped at once:
        nothing more may start for them here.
        """
        row = await self._store.get_run(run_id)
        if row is not None and row.finished and row.owner_id == self._server_id:
            return
        if row is None or row.owner_id == self._server_id:
            log.error("the lease on run %s expired; stopping it here", run_id)
        else:
            log.error("lost the lease on run %s to %s; stopping it here", run_id, row.owner_id)
        await self._abandon(run_id)

    async def _abandon(self, run_id: str) -> None:
        """Stop the run's executor, then forget its uncommitted events, so that a
        later takeover (here or elsewhere) continues from the committed stream."""
        await self._engine.abandon(run_id)
        dropped = self._writer.discard(run_id)
        # A commit sent before the discard may still carry this life's events:
        # let it land (or fail) before anything may claim the run again.
        await self._writer.settled(run_id)
        if dropped:
            log.warning("dropped %d uncommitted events of run %s", dropped, run_id)

    async def _take_over(self, row: RunRow) -> None:
        """Continue a run another process (or an earlier life of this one) left unfinished."""
        try:
            flow = json_format.ParseDict(row.flow_json, flow_pb2.Flow())
            graph = validate_flow(
                flow, self._engine.registry, ai=self._engine.settings.ai, check_providers=False
            )
        except Exception as exc:  # a flow this server cannot run must not stop the lease task
            log.error("run %s cannot be taken over here: %s", row.run_id, exc)
            return
        history = [
            events_pb2.RunEvent.FromString(e.payload)
            for e in await self._store.all_events(row.run_id)
        ]
        log.info("taking over run %s at seq %d", row.run_id, history[-1].seq if history else 0)
        self._engine.start(
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
        self._metrics.takeovers.add(1)
        # A pause, resume or cancel recorded between the claim and now found no
        # local run to tell and its NOTIFY was ignored: read the row again.
        await self.apply_control(row.run_id)
