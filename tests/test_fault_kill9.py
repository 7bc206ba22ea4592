"""kill -9 of the replica running a run, with watchers: the quick fault run inside `make test`."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from _faults_kit import (
    LEASE,
    SERVE,
    Watcher,
    check_run,
    report,
    side_effect_chain,
    signal_group,
    start_run,
)
from _live_procs import ServerProcess


async def test_fault_kill_9_mid_run_with_watchers(database_url: str, tmp_path: Path) -> None:
    """SIGKILL the replica running a run: the other adopts it; nothing is lost, duplicated or rerun."""
    a = ServerProcess(database_url, tmp_path / "a", SERVE)
    b = ServerProcess(database_url, tmp_path / "b", SERVE)
    await a.start()
    await b.start()
    ledger = tmp_path / "ledger.txt"
    ledger.touch()
    try:
        run_id = await start_run(a, side_effect_chain(8, ledger, 0.3))
        watchers = [Watcher(run_id, [a.addr, b.addr]) for _ in range(3)]
        deadline = time.monotonic() + 120
        tasks = [asyncio.create_task(w.run(deadline)) for w in watchers]
        await watchers[0].until(lambda e: e.HasField("node_started") and e.node_id == "n3")
        signal_group(a, signal.SIGKILL)
        killed = time.time()
        await asyncio.gather(*tasks)
        after = [e for e in watchers[0].events if e.event_time.ToNanoseconds() / 1e9 > killed]
        adopted_in = after[0].event_time.ToNanoseconds() / 1e9 - killed if after else float("nan")
        figures = check_run(watchers, ledger, 8, interrupted_max=1)
        report(
            "kill -9",
            **figures,
            takeover_s=f"{adopted_in:.2f}",
            lease_s=LEASE,
            reconnects=sum(w.reconnects for w in watchers),
        )
        assert adopted_in < LEASE + LEASE / 3 + 2, "adoption within lease + scan (+ slack)"
    finally:
        await a.kill()
        await b.kill()
