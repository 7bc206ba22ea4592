"""The process's runs: start executors, route control to them, stop them."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from opentelemetry import trace

from runwire.adapters import Registry
from runwire.engine._executor import EngineSettings, RunExecutor, RunPlan
from runwire.engine._state import Journal

__all__ = ["Engine"]

log = logging.getLogger(__name__)


class Engine:
    """Owns every run this process executes."""

    def __init__(
        self, journal: Journal, registry: Registry, tracer: trace.Tracer, settings: EngineSettings
    ) -> None:
        self.journal = journal
        self.registry = registry
        self.settings = settings
        self._tracer = tracer
        self._runs: dict[str, tuple[RunExecutor, asyncio.Task[None]]] = {}

    def start(self, plan: RunPlan) -> None:
        """Execute a persisted run in the background."""
        executor = RunExecutor(plan, self.journal, self.registry, self._tracer, self.settings)
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

    def running(self) -> list[str]:
        """Ids of runs executing in this process."""
        return list(self._runs)

    async def wait_idle(self) -> None:
        """Wait for every local run to finish (tests, drain)."""
        while self._runs:
            await asyncio.gather(*(t for _, t in list(self._runs.values())), return_exceptions=True)

    async def stop(self) -> list[str]:
        """Stop executing; returns the ids of runs left unfinished for takeover."""
        left = list(self._runs)
        for _, task in list(self._runs.values()):
            task.cancel()
        for _, task in list(self._runs.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        return left
