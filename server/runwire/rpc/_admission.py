"""Admission: take work up to a bound and refuse the rest at once, with a retry delay.

Without a bound, a burst of StartRuns queues inside the server until clients
time out on their deadlines, having learnt nothing. Here each kind of work has
a limit; past it the call fails fast with RESOURCE_EXHAUSTED, a RetryInfo and
gRPC's pushback trailer, so clients (and gRPC's own retry policy) back off.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from runwire.errors import Overloaded

__all__ = ["Admission", "Limits"]


@dataclass(frozen=True)
class Limits:
    """How much of each kind of work one server takes at once."""

    starting: int = 128  # StartRun calls in flight
    active_runs: int = 5000  # runs executing in this process
    watchers: int = 10_000  # open WatchRun streams
    retry_after: float = 1.0  # seconds a refused caller is asked to wait


class Admission:
    """Counts work in flight and refuses what is over its limit."""

    def __init__(self, limits: Limits, active_runs: Callable[[], int]) -> None:
        self.limits = limits
        self._active_runs = active_runs
        self.starting = 0
        self.watchers = 0
        self.refused = 0

    def _refuse(self, what: str, limit: int) -> Overloaded:
        self.refused += 1
        return Overloaded(what, limit, self.limits.retry_after)

    @contextmanager
    def start(self) -> Iterator[None]:
        """Hold a place for one StartRun, or raise Overloaded."""
        if self.starting >= self.limits.starting:
            raise self._refuse("StartRun calls in flight", self.limits.starting)
        if self._active_runs() >= self.limits.active_runs:
            raise self._refuse("runs executing on this server", self.limits.active_runs)
        self.starting += 1
        try:
            yield
        finally:
            self.starting -= 1

    def watch(self) -> _Watching:
        """Hold a place for one WatchRun stream (a context manager), or raise Overloaded.

        A plain object, not a generator-based context manager: one is held
        for the whole life of every stream, idle ones included.
        """
        if self.watchers >= self.limits.watchers:
            raise self._refuse("open WatchRun streams", self.limits.watchers)
        self.watchers += 1
        return _Watching(self)


class _Watching:
    """One stream's place among the watchers; leaving the `with` gives it back."""

    __slots__ = ("_admission",)

    def __init__(self, admission: Admission) -> None:
        self._admission = admission

    def __enter__(self) -> None:
        return None

    def __exit__(self, *_exc: object) -> None:
        self._admission.watchers -= 1
