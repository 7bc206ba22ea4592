"""The process's runs: start executors, route control to them, stop them."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from opentelemetry import trace

from runwire.adapters import Registry
from runwire.engine._orchestrator import EngineSettings, RunExecutor, RunPlan
from runwire.engine._ports import Decision, GateStore, Journal

__all__ = ["Engine"]

log = logging.getLogger(__name__)


class Engine:
    """Owns every run this process executes."""

    def __init__(
        self,
        journal: Journal,
        gates: GateStore,
        registry: Registry,
        tracer: trace.Tracer,
        settings: EngineSettings,
    ) -> None:
        self.journal = journal
        self.gates = gates
        self.registry = registry
        self.settings = settings
        self._tracer = tracer
        self._runs: dict[str, tuple[RunExecutor, asyncio.Task[None]]] = {}

    def start(self, plan: RunPlan) -> None:
        """Execute a persisted run in the background."""
        if plan.run_id in self._runs:
            return  # already executing here (a takeover raced a local start)
        executor = RunExecutor(
            plan, self.journal, self.gates, self.registry, self._tracer, self.settings
        )
        task = asyncio.create_task(executor.run(), name=f"run:{plan.run_id}")
        self._runs[plan.run_id] = (executor, task)
        task.add_done_callback(lambda _t: self._runs.pop(plan.run_id, None))

    def control(
        self, run_id: str, *, pause: bool | None, cancel: bool, principal: str, reason: str
    ) -> bool:
        """Apply a control request to a local run; False when this process does not run it."""
        entry = self._runs.get(run_id)
        if entry is None:
            return False
        entry[0].control(pause=pause, cancel=cancel, principal=principal, reason=reason)
        return True

    def deliver_gate(
        self,
        run_id: str,
        node_id: str,
        kind: int,
        decision: Decision,
        item_index: int | None = None,
        *,
        iteration: int,
        call_index: int | None = None,
    ) -> None:
        """Hand a gate decision to a local run's waiting node (fan-out item, tool call), if any."""
        entry = self._runs.get(run_id)
        if entry is not None:
            entry[0].deliver_gate(
                node_id, kind, decision, item_index, iteration=iteration, call_index=call_index
            )

    def task_of(self, run_id: str) -> asyncio.Task[None] | None:
        """The task executing a local run, if any."""
        entry = self._runs.get(run_id)
        return None if entry is None else entry[1]

    def active(self) -> int:
        """How many runs execute in this process."""
        return len(self._runs)

    def gates_pending(self) -> int:
        """How many gates the local runs (and their fan-out items) wait on."""
        # A list first: the metrics endpoint's thread calls this while runs come and go.
        return sum(len(x.gate_waiters) for x, _ in list(self._runs.values()))

    def running(self) -> list[str]:
        """Ids of runs executing in this process."""
        return list(self._runs)

    async def wait_idle(self) -> None:
        """Wait for every local run to finish (tests, drain).

        asyncio.wait, not gather: when a drain's grace period cancels this
        wait, the runs must keep going so that stop() can hand them over.
        """
        while self._runs:
            await asyncio.wait([t for _, t in list(self._runs.values())])

    async def abandon(self, run_id: str) -> None:
        """Stop executing one run without finishing it: another server owns it now."""
        entry = self._runs.get(run_id)
        if entry is not None:
            entry[1].cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await entry[1]

    async def stop(self) -> list[str]:
        """Stop executing; returns the ids of runs left unfinished for takeover."""
        left = list(self._runs)
        for _, task in list(self._runs.values()):
            task.cancel()
        for _, task in list(self._runs.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        return left
