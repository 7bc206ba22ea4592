"""Fault-run helpers: server processes to kill and freeze, failover watchers, loss checks.

Each scenario prints its figures (`FAULT <scenario>: ...`) and fails on any
loss: every watcher must see the same gapless stream, checked by the grammar
checker; no finished node visit may start again; a node's side effect (a line
it appends to a file) may repeat only for the one attempt a fault interrupted.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import time
from pathlib import Path
from typing import Any

import grpc
from _live_procs import ServerProcess
from conftest import assert_grammar, edge, shell_node

from runwire.v1 import events_pb2, flow_pb2, run_service_pb2, run_service_pb2_grpc

LEASE = 2.0
SERVE = [
    "--shell-allow",
    "sh",
    "--lease-seconds",
    str(LEASE),
    "--heartbeat-interval",
    "0.5",
    "--commit-interval",
    "0.002",
]


def report(scenario: str, **figures: Any) -> None:
    """One line a person reads in the `make faults` output."""
    print(f"FAULT {scenario}: " + ", ".join(f"{k}={v}" for k, v in figures.items()), flush=True)


def side_effect_chain(n: int, ledger: Path, pause: float) -> flow_pb2.Flow:
    """n shell nodes in a chain; each appends its id to `ledger`, then waits `pause` s."""
    script = f'echo "$1" >> {ledger}; sleep {pause}'
    nodes = [shell_node(f"n{i}", "sh", "-c", script, "sh", f"n{i}") for i in range(n)]
    edges = [edge(f"n{i}", f"n{i + 1}") for i in range(n - 1)]
    return flow_pb2.Flow(name="faults", nodes=nodes, edges=edges)


class Watcher:
    """A client that follows one run to RunCompleted across servers, resuming with after_seq."""

    def __init__(self, run_id: str, addrs: list[str]) -> None:
        self.run_id = run_id
        self.addrs = addrs
        self.events: list[events_pb2.RunEvent] = []
        self.reconnects = 0
        self.duplicates = 0
        self.seen = asyncio.Condition()

    async def run(self, deadline: float) -> None:
        turn = 0
        while time.monotonic() < deadline:
            addr = self.addrs[turn % len(self.addrs)]
            turn += 1
            after = self.events[-1].seq if self.events else 0
            try:
                async with grpc.aio.insecure_channel(addr) as channel:
                    stub = run_service_pb2_grpc.RunServiceStub(channel)
                    request = run_service_pb2.WatchRunRequest(run_id=self.run_id, after_seq=after)
                    async for response in stub.WatchRun(
                        request, timeout=deadline - time.monotonic()
                    ):
                        for e in response.events:
                            if self.events and e.seq <= self.events[-1].seq:
                                self.duplicates += 1
                                continue
                            async with self.seen:
                                self.events.append(e)
                                self.seen.notify_all()
                            if e.HasField("run_completed"):
                                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.CANCELLED,
                    grpc.StatusCode.UNKNOWN,
                    grpc.StatusCode.INTERNAL,
                ):
                    raise
            self.reconnects += 1
            await asyncio.sleep(0.05)  # backoff between reconnects (not synchronisation)
        raise AssertionError(f"watcher of {self.run_id} timed out at {len(self.events)} events")

    async def until(self, predicate: Any) -> events_pb2.RunEvent:
        async with self.seen:
            await self.seen.wait_for(lambda: any(predicate(e) for e in self.events))
        return next(e for e in self.events if predicate(e))


def check_run(
    watchers: list[Watcher], ledger: Path, nodes: int, interrupted_max: int
) -> dict[str, int]:
    """Every watcher saw one identical, grammatical stream; count reruns and repeated effects."""
    first = watchers[0].events
    assert_grammar(first)
    for w in watchers[1:]:
        assert [e.SerializeToString() for e in w.events] == [e.SerializeToString() for e in first]
    finished: set[tuple[str, int]] = set()
    reruns = 0
    for e in first:
        case = e.WhichOneof("event")
        if case == "node_started" and (e.node_id, e.iteration) in finished:
            reruns += 1
        if case in ("node_succeeded", "node_skipped") or (
            case == "node_failed" and not e.node_failed.will_retry
        ):
            finished.add((e.node_id, e.iteration))
    counts = collections.Counter(ledger.read_text().split())
    repeated = sum(c - 1 for c in counts.values() if c > 1)
    assert first[-1].run_completed.status == events_pb2.RUN_STATUS_SUCCEEDED
    assert sorted(counts) == sorted(f"n{i}" for i in range(nodes)), "every node ran"
    assert reruns == 0, "a finished node ran again"
    assert repeated <= interrupted_max, f"side effects repeated {repeated} times: {counts}"
    return {
        "events": len(first),
        "lost": 0,
        "duplicated": sum(w.duplicates for w in watchers),
        "reruns": reruns,
        "repeated_effects": repeated,
    }


async def start_run(server: ServerProcess, flow: flow_pb2.Flow) -> str:
    async with grpc.aio.insecure_channel(server.addr) as channel:
        stub = run_service_pb2_grpc.RunServiceStub(channel)
        return (await stub.StartRun(run_service_pb2.StartRunRequest(flow=flow))).run.run_id


def signal_group(server: ServerProcess, sig: signal.Signals) -> None:
    assert server.proc is not None
    os.killpg(server.proc.pid, sig)
