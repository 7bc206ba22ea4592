"""Idle watchers give their memory back: after a wave of watchers leaves, the
hub hands the freed heap back to the system (malloc_trim), in a thread, one
trim at a time; watchers coming and going at a steady level cause none."""

from __future__ import annotations

import asyncio
import platform
import threading

import pytest

from runwire.store import _hub
from runwire.store._hub import TRIM_AFTER_LEAVING, Hub


class _Trims:
    """A stand-in for malloc_trim that records the thread it ran on and can be held."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.threads: list[int] = []
        self.release = threading.Event()
        self.release.set()
        self.started = asyncio.Event()

    def __call__(self, _pad: int) -> int:
        self.threads.append(threading.get_ident())
        self.loop.call_soon_threadsafe(self.started.set)
        assert self.release.wait(30)
        return 1


@pytest.fixture
def trims(monkeypatch: pytest.MonkeyPatch) -> _Trims:
    fake = _Trims(asyncio.get_event_loop_policy().get_event_loop())
    monkeypatch.setattr(_hub, "_malloc_trim", fake)
    monkeypatch.setattr(_hub, "TRIM_DELAY", 0.0)
    return fake


class _Done:
    """Waits for the hub's count of finished trims to reach a number."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.event = asyncio.Event()
        hub.on_trimmed = self.event.set

    async def reach(self, n: int) -> None:
        while self.hub.trims < n:
            await asyncio.wait_for(self.event.wait(), 10)
            self.event.clear()


def test_glibc_malloc_trim_is_found() -> None:
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc_trim is glibc's")
    assert _hub._malloc_trim is not None


async def test_hub_trims_the_heap_off_the_loop_after_a_wave_of_watchers_left(
    trims: _Trims,
) -> None:
    trims.loop = asyncio.get_running_loop()
    hub = Hub()
    done = _Done(hub)
    subs = [hub.subscribe("run") for _ in range(2 * TRIM_AFTER_LEAVING)]
    for sub in subs[: TRIM_AFTER_LEAVING - 1]:
        sub.close()
    assert hub._trim is None  # nothing is due before a wave has left
    subs[TRIM_AFTER_LEAVING - 1].close()
    await done.reach(1)
    assert trims.threads[0] != threading.get_ident()  # never on the event loop
    for sub in subs[TRIM_AFTER_LEAVING:]:
        sub.close()
    await done.reach(2)
    assert len(trims.threads) == 2
    assert hub.watcher_count("run") == 0


async def test_a_wave_that_left_during_a_trim_gets_one_trim_after_it(trims: _Trims) -> None:
    trims.loop = asyncio.get_running_loop()
    trims.release.clear()
    hub = Hub()
    done = _Done(hub)
    subs = [hub.subscribe("run") for _ in range(2 * TRIM_AFTER_LEAVING)]
    for sub in subs[:TRIM_AFTER_LEAVING]:
        sub.close()
    await asyncio.wait_for(trims.started.wait(), 10)  # the first trim runs, held
    for sub in subs[TRIM_AFTER_LEAVING:]:
        sub.close()
    assert len(trims.threads) == 1  # never two trims at once
    trims.release.set()
    await done.reach(2)  # the second wave's trim follows the first
    assert len(trims.threads) == 2


async def test_watchers_coming_and_going_cause_no_trim(trims: _Trims) -> None:
    trims.loop = asyncio.get_running_loop()
    hub = Hub()
    steady = [hub.subscribe(f"run-{i}") for i in range(10)]
    for i in range(10 * TRIM_AFTER_LEAVING):
        steady.append(hub.subscribe(f"run-{i % 7}"))
        gone = steady.pop(0)
        gone.close()
        gone.close()  # closing twice counts once
    assert hub._trim is None
    assert (hub.trims, trims.threads) == (0, [])
    assert hub.watching == 10
