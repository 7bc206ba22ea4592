"""Idle watchers give their memory back: after a wave of watchers leaves, the
hub hands the freed heap back to the system (malloc_trim)."""

from __future__ import annotations

import asyncio

import pytest

from runwire.store import _hub
from runwire.store._hub import TRIM_AFTER_LEAVING, Hub


async def test_hub_trims_the_heap_after_a_wave_of_watchers_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trimmed = asyncio.Event()
    monkeypatch.setattr(_hub, "_malloc_trim", lambda _pad: trimmed.set() or 1)
    monkeypatch.setattr(_hub, "TRIM_DELAY", 0.0)
    hub = Hub()
    subs = [hub.subscribe("run") for _ in range(TRIM_AFTER_LEAVING)]
    for sub in subs[:-1]:
        sub.close()
    await asyncio.sleep(0)  # one loop step: nothing is due before the wave has left
    assert not trimmed.is_set()
    subs[-1].close()
    await asyncio.wait_for(trimmed.wait(), 10)
    assert hub.watcher_count("run") == 0
