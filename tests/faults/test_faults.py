"""Fault runs (`make faults`): real server processes that the test freezes and floods.

The quick kill -9 scenario runs in `make test` (tests/test_fault_kill9.py).
"""

from __future__ import annotations

import asyncio
import collections
import random
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
from _pg import RestartablePostgres
from conftest import shell_node, util_node

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


@pytest.mark.parametrize("outage", [2.0, 3 * LEASE], ids=["short", "long"])
async def test_fault_postgres_outage_under_20_runs(tmp_path: Path, outage: float) -> None:
    """Postgres goes down under 20 running runs, for less and for more than a lease:
    callers hear UNAVAILABLE meanwhile, and every run completes afterwards, losing nothing."""
    pg = RestartablePostgres()
    url = await asyncio.to_thread(pg.start)
    server = ServerProcess(url, tmp_path / "s", SERVE)
    await server.start()
    try:
        ledgers = [tmp_path / f"ledger-{i}.txt" for i in range(20)]
        run_ids = []
        for ledger in ledgers:
            ledger.touch()
            run_ids.append(await start_run(server, side_effect_chain(4, ledger, 0.3)))
        watchers = [Watcher(run_id, [server.addr]) for run_id in run_ids]
        tasks = [asyncio.create_task(w.run(time.monotonic() + 180)) for w in watchers]
        for w in watchers:
            await w.until(lambda e: e.HasField("node_started"))
        await asyncio.to_thread(pg.down)
        codes: collections.Counter[str] = collections.Counter()
        async with grpc.aio.insecure_channel(server.addr) as channel:
            stub = run_service_pb2_grpc.RunServiceStub(channel)
            ends = time.monotonic() + outage
            while time.monotonic() < ends:  # the outage lasts this long: probe it meanwhile
                try:
                    await stub.GetRun(run_service_pb2.GetRunRequest(run_id=run_ids[0]), timeout=5)
                    codes["OK"] += 1
                except grpc.aio.AioRpcError as exc:
                    codes[exc.code().name] += 1
                await asyncio.sleep(0.2)
        await asyncio.to_thread(pg.up)
        await asyncio.gather(*tasks)
        totals: collections.Counter[str] = collections.Counter()
        for w, ledger in zip(watchers, ledgers, strict=True):
            totals.update(check_run([w], ledger, 4, interrupted_max=1))
        report(
            f"postgres outage {outage:g}s under 20 runs",
            runs_lost=0,
            events_lost=totals["lost"],
            duplicated=totals["duplicated"],
            reruns=totals["reruns"],
            repeated_effects=totals["repeated_effects"],
            during_outage=dict(codes),
        )
        assert set(codes) <= {"OK", "UNAVAILABLE"}, codes
    finally:
        await server.kill()
        await asyncio.to_thread(pg.stop)


async def test_fault_resume_storm_against_live_and_finished_runs(
    database_url: str, tmp_path: Path
) -> None:
    """500 WatchRuns from random seqs of live and finished runs: each gets exactly the
    events after its seq, in order, and then the run's end; past the end, OUT_OF_RANGE."""
    server = ServerProcess(database_url, tmp_path / "s", SERVE)
    await server.start()
    rng = random.Random(20261130)
    try:
        finished = [
            await start_run(server, side_effect_chain(3, tmp_path / f"f{i}.txt", 0))
            for i in range(5)
        ]
        for run_id in finished:
            await Watcher(run_id, [server.addr]).run(time.monotonic() + 60)
        live = [
            await start_run(server, side_effect_chain(6, tmp_path / f"l{i}.txt", 0.4))
            for i in range(5)
        ]
        async with grpc.aio.insecure_channel(server.addr) as channel:
            stub = run_service_pb2_grpc.RunServiceStub(channel)
            lasts = {
                r: (await stub.GetRun(run_service_pb2.GetRunRequest(run_id=r))).run.last_seq
                for r in finished
            }
            limit = asyncio.Semaphore(50)
            outcomes: collections.Counter[str] = collections.Counter()

            async def resume() -> None:
                run_id = rng.choice(finished + live)
                after = rng.randint(0, lasts.get(run_id, 12) + 3)
                async with limit:
                    seqs: list[int] = []
                    ended = False
                    try:
                        request = run_service_pb2.WatchRunRequest(run_id=run_id, after_seq=after)
                        async for response in stub.WatchRun(request, timeout=120):
                            seqs.extend(e.seq for e in response.events)
                            if response.HasField("stream_end"):
                                ended = True
                    except grpc.aio.AioRpcError as exc:
                        code = exc.code()
                    else:
                        code = grpc.StatusCode.OK
                    if code != grpc.StatusCode.OK:
                        assert code == grpc.StatusCode.OUT_OF_RANGE, code
                        assert run_id in lasts
                        assert after > lasts[run_id]
                        outcomes["beyond the end"] += 1
                        return
                    assert ended, "a stream ends with stream_end"
                    assert seqs == list(range(after + 1, after + 1 + len(seqs))), (after, seqs)
                    outcomes["live" if run_id in live else "finished"] += 1

            await asyncio.gather(*(resume() for _ in range(500)))
        report("resume storm", resumes=500, lost=0, duplicated=0, **outcomes)
    finally:
        await server.kill()


async def test_fault_slow_and_stalled_watchers_do_not_slow_a_fast_one(
    database_url: str, tmp_path: Path
) -> None:
    """A run printing 50 000 lines, one fast watcher, one slow, one that stops reading:
    the fast one keeps pace with the run; the others catch up later, missing nothing."""
    server = ServerProcess(database_url, tmp_path / "s", [*SERVE, "--shell-allow", "seq"])
    await server.start()
    try:
        flow = flow_pb2.Flow(name="lines", nodes=[shell_node("seq", "seq", "1", "50000")])
        run_id = await start_run(server, flow)
        done_at: dict[str, float] = {}
        streams: dict[str, list[int]] = {}
        fast_done = asyncio.Event()

        async def watch(name: str, pause: float, stall: bool) -> None:
            seqs: list[int] = []
            async with grpc.aio.insecure_channel(server.addr) as channel:
                stub = run_service_pb2_grpc.RunServiceStub(channel)
                request = run_service_pb2.WatchRunRequest(run_id=run_id)
                async for response in stub.WatchRun(request, timeout=300):
                    seqs.extend(e.seq for e in response.events)
                    if stall and len(seqs) > 100 and not fast_done.is_set():
                        await fast_done.wait()  # stop reading until the fast one is done
                    if pause:
                        await asyncio.sleep(pause)  # a slow reader, not synchronisation
            done_at[name] = time.monotonic()
            streams[name] = seqs
            if name == "fast":
                fast_done.set()

        t0 = time.monotonic()
        await asyncio.gather(
            watch("fast", 0, False), watch("slow", 0.02, False), watch("stalled", 0, True)
        )
        want = list(range(1, len(streams["fast"]) + 1))
        for name, seqs in streams.items():
            assert seqs == want, name
        report(
            "slow and stalled watchers",
            events=len(want),
            fast_s=f"{done_at['fast'] - t0:.2f}",
            slow_s=f"{done_at['slow'] - t0:.2f}",
            stalled_s=f"{done_at['stalled'] - t0:.2f}",
        )
        assert done_at["fast"] <= min(done_at["slow"], done_at["stalled"])
    finally:
        await server.kill()
