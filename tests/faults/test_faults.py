"""Fault runs (`make faults`): real server processes that the test freezes and floods.

The quick kill -9 scenario runs in `make test` (tests/test_fault_kill9.py).
"""

from __future__ import annotations

import asyncio
import collections
import signal
import time
from pathlib import Path

import grpc
import pytest
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
from conftest import util_node

from runwire.v1 import flow_pb2, run_service_pb2, run_service_pb2_grpc


async def test_fault_frozen_replica_starts_nothing_after_it_wakes(
    database_url: str, tmp_path: Path
) -> None:
    """SIGSTOP the replica mid-node beyond its lease: the other adopts the run; woken, the
    zombie starts no node (its side effects would repeat) and commits nothing."""
    a = ServerProcess(database_url, tmp_path / "a", SERVE)
    b = ServerProcess(database_url, tmp_path / "b", SERVE)
    await a.start()
    await b.start()
    ledger = tmp_path / "ledger.txt"
    ledger.touch()
    try:
        run_id = await start_run(a, side_effect_chain(6, ledger, 0.5))
        watcher = Watcher(run_id, [b.addr])
        deadline = time.monotonic() + 120
        task = asyncio.create_task(watcher.run(deadline))
        await watcher.until(lambda e: e.HasField("node_started") and e.node_id == "n1")
        signal_group(a, signal.SIGSTOP)
        frozen = time.time()
        # Adopted by b: an event committed after the freeze by the new owner.
        adopted = await watcher.until(
            lambda e: e.event_time.ToNanoseconds() / 1e9 > frozen + LEASE / 2
        )
        signal_group(a, signal.SIGCONT)
        await task
        figures = check_run([watcher], ledger, 6, interrupted_max=1)
        report(
            "frozen replica",
            **figures,
            adoption_s=f"{adopted.event_time.ToNanoseconds() / 1e9 - frozen:.2f}",
            zombie_side_effects=figures["repeated_effects"] - 1
            if figures["repeated_effects"]
            else 0,
        )
    finally:
        signal_group(a, signal.SIGCONT) if a.proc and a.proc.returncode is None else None
        await a.kill()
        await b.kill()


@pytest.mark.parametrize("burst", [200, 2000, 5000])
async def test_fault_burst_of_start_runs_is_admitted_or_refused_fast(
    database_url: str, tmp_path: Path, burst: int
) -> None:
    """A burst of StartRuns: each is admitted (and its run completes) or refused at once
    with RESOURCE_EXHAUSTED; nothing waits out its deadline."""
    server = ServerProcess(database_url, tmp_path / "s", SERVE)
    await server.start()
    flow = flow_pb2.Flow(name="burst", nodes=[util_node("a", "set", value=1)])
    try:
        async with grpc.aio.insecure_channel(server.addr) as channel:
            stub = run_service_pb2_grpc.RunServiceStub(channel)

            async def one() -> tuple[str, float, str]:
                t0 = time.perf_counter()
                try:
                    run = (
                        await stub.StartRun(run_service_pb2.StartRunRequest(flow=flow), timeout=30)
                    ).run
                    return "OK", time.perf_counter() - t0, run.run_id
                except grpc.aio.AioRpcError as exc:
                    return exc.code().name, time.perf_counter() - t0, ""

            results = await asyncio.gather(*(one() for _ in range(burst)))
            codes = collections.Counter(code for code, _, _ in results)
            refused = sorted(t for code, t, _ in results if code == "RESOURCE_EXHAUSTED")
            admitted = [run_id for code, _, run_id in results if code == "OK"]
            for run_id in admitted[:50]:
                events = [
                    e
                    async for r in stub.WatchRun(run_service_pb2.WatchRunRequest(run_id=run_id))
                    for e in r.events
                ]
                assert events[-1].HasField("run_completed")
        p99 = refused[int(len(refused) * 0.99) - 1] * 1e3 if refused else 0.0
        report(
            f"burst {burst}",
            admitted=codes["OK"],
            refused=codes["RESOURCE_EXHAUSTED"],
            other=sum(v for k, v in codes.items() if k not in ("OK", "RESOURCE_EXHAUSTED")),
            refusal_p99_ms=f"{p99:.0f}",
        )
        assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, codes
    finally:
        await server.kill()
