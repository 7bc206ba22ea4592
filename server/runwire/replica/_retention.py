"""Retention: delete finished runs older than an age, in small batches, with
their gates, events and workspaces; keep the events partitions ahead of time.

Every server runs the loop, with retention on or off: it creates the events
partitions of the coming days (so a day's events never wait for a partition),
drops the past ones whose runs are all gone, and removes the workspaces on
its own disk whose run was deleted (by it, another replica or `runwire runs
prune`). With `--retention AGE` it also deletes the runs that finished more
than AGE ago, `batch` runs per transaction, so no statement holds many locks
or runs long. Replicas prune side by side (a batch skips runs another one
holds) and serialise partition changes on an advisory lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from runwire.store import Store, is_transient

__all__ = ["PruneResult", "Retention"]

log = logging.getLogger(__name__)

# Partitions are made for today and this many days ahead.
_AHEAD_DAYS = 3


@dataclass(frozen=True)
class PruneResult:
    """What one prune did (or, dry, would do)."""

    runs: int  # runs deleted (dry: runs that would be)
    partitions_dropped: int = 0
    workspaces_removed: int = 0


class Retention:
    """One server's retention duties (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        workspace_root: Path,
        *,
        max_age: float | None,
        batch: int = 100,
        interval: float = 300.0,
    ) -> None:
        self._store = store
        self._workspaces = workspace_root
        self.max_age = max_age
        self.batch = batch
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one prune at a time in this process
        self.rounds = 0  # rounds completed (tests wait on it)
        self.round_done = asyncio.Condition()

    async def prepare(self) -> None:
        """Create today's and the coming days' events partitions (on start)."""
        await self._store.ensure_partitions(_AHEAD_DAYS)

    def start(self) -> None:
        """Begin the periodic rounds in the background."""
        self._task = asyncio.create_task(self._loop(), name="runwire-retention")

    async def stop(self) -> None:
        """Stop the rounds (a batch in flight is rolled back with its connection)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Not fatal: inserts go on (the default partition takes any
                # day not created), and the next round tries again.
                level = logging.WARNING if is_transient(exc) else logging.ERROR
                log.log(level, "retention round failed: %r", exc, exc_info=not is_transient(exc))
            async with self.round_done:
                self.rounds += 1
                self.round_done.notify_all()
            await asyncio.sleep(self.interval)

    async def round(self) -> PruneResult:
        """One round: partitions ahead, the prune when retention is on, workspaces."""
        await self._store.ensure_partitions(_AHEAD_DAYS)
        if self.max_age is None:
            dropped = await self._store.drop_pruned_partitions()
            removed = await self.sweep_workspaces()
            return PruneResult(0, len(dropped), removed)
        return await self.prune(self.max_age)

    async def prune(self, older_than: float, *, dry_run: bool = False) -> PruneResult:
        """Delete every run that finished more than `older_than` seconds ago, in
        batches, then drop the partitions left without runs and the workspaces
        left without a run. Dry: count the runs, change nothing."""
        if dry_run:
            return PruneResult(await self._store.count_prunable(older_than))
        async with self._lock:
            runs = removed = 0
            while True:
                ids = await self._store.prune_batch(older_than, self.batch)
                runs += len(ids)
                removed += await asyncio.to_thread(self._remove_workspaces, ids)
                if ids:
                    log.info("retention deleted %d runs (%s ...)", len(ids), ids[0])
                if len(ids) < self.batch:
                    break
                await asyncio.sleep(0)  # let the server's other work in between batches
            dropped = await self._store.drop_pruned_partitions()
            removed += await self.sweep_workspaces()
        return PruneResult(runs, len(dropped), removed)

    def _remove_workspaces(self, run_ids: list[str]) -> int:
        removed = 0
        for run_id in run_ids:
            path = self._workspaces / run_id
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
        return removed

    async def sweep_workspaces(self) -> int:
        """Remove this server's workspaces whose run is no longer stored (deleted
        on another replica). A workspace is made after its run is stored, so a
        workspace without a run belongs to a deleted one."""
        names = await asyncio.to_thread(self._workspace_names)
        if not names:
            return 0
        gone: list[str] = []
        for i in range(0, len(names), 1000):
            chunk = names[i : i + 1000]
            kept = await self._store.existing_runs(chunk)
            gone += [n for n in chunk if n not in kept]
        return await asyncio.to_thread(self._remove_workspaces, gone)

    def _workspace_names(self) -> list[str]:
        if not self._workspaces.is_dir():
            return []
        return sorted(p.name for p in self._workspaces.iterdir() if p.name.startswith("run_"))
