"""In-process engine runs for tests/engine: the real executor over an in-memory journal and gates.

No server, no Postgres: the executor is driven exactly as the server drives
it, and what it journals is the run's stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from opentelemetry import trace

from runwire.adapters import ActionFailed, ActionSpec, NodeContext, Registry, UtilAdapter
from runwire.engine import (
    Decision,
    EngineSettings,
    HeldCall,
    LeaseLost,
    ModelGateway,
    RunExecutor,
    RunPatch,
    RunPlan,
    RunState,
    validate_flow,
)
from runwire.v1 import events_pb2, flow_pb2

APPROVED = events_pb2.GATE_DECISION_APPROVED
REJECTED = events_pb2.GATE_DECISION_REJECTED


class ZapAdapter:
    """A destructive, non-pure test action that records every time it really runs."""

    name = "test"
    actions: Mapping[str, ActionSpec] = {
        "zap": ActionSpec(
            "zap",
            "Zap a target (destructive)",
            {
                "type": "object",
                "properties": {
                    "target": {"type": "string"},
                    "fail": {"type": "boolean"},
                    "flaky": {"type": "boolean"},
                },
                "required": ["target"],
                "additionalProperties": False,
            },
            destructive=True,
        ),
    }

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.in_flight = 0
        self.peak = 0  # the most calls in flight at once

    def check(self, action: str, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        return []

    def describe_destructive(self, action: str, params: Mapping[str, Any]) -> str | None:
        return f"zap {params.get('target')}"

    async def execute(self, ctx: NodeContext, action: str, params: Mapping[str, Any]) -> Any:
        call = f"{ctx.node_id}:{params['target']}"
        first = call not in self.calls
        self.calls.append(call)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            # Yield a few times, so calls that may overlap do.
            for _ in range(3):
                await asyncio.sleep(0)
        finally:
            self.in_flight -= 1
        if params.get("flaky") and first:
            raise ActionFailed("ZAP_FLAKY", "zap failed the first time")
        if params.get("fail"):
            raise ActionFailed("ZAP_FAILED", "zap failed on purpose")
        return {"zapped": params["target"]}


@dataclass
class MemoryJournal:
    """engine.Journal in memory. `fence_from` makes every event from that seq on fenced at flush."""

    events: list[events_pb2.RunEvent] = field(default_factory=list)
    patches: list[RunPatch] = field(default_factory=list)
    fence_from: int | None = None
    on_append: Callable[[events_pb2.RunEvent], None] | None = None
    _fenced: bool = False

    async def wait_for_space(self) -> None:
        return None

    def append(
        self, run_id: str, events: list[events_pb2.RunEvent], patch: RunPatch | None = None
    ) -> None:
        for e in events:
            copy = events_pb2.RunEvent()
            copy.CopyFrom(e)
            self.events.append(copy)
        if patch is not None:
            self.patches.append(patch)
        if self.on_append is not None:
            for e in events:
                self.on_append(e)

    async def flush(self) -> None:
        # A commit: the writer fences events of a run this server lost.
        if self.fence_from is not None and self.events and self.events[-1].seq >= self.fence_from:
            self._fenced = True
        await asyncio.sleep(0)

    def holds(self, run_id: str) -> bool:
        return not self._fenced


@dataclass
class MemoryGates:
    """engine.GateStore in memory; `decisions` says how a person decides each node's gate.

    `call_decisions` decides a held tool call's gate by its tool_call_id
    (before `decisions`); `contexts` keeps what each call's gate was opened
    with, so a takeover life can be handed the gates a previous life opened.
    """

    decisions: Mapping[str, int] = field(default_factory=dict)
    call_decisions: Mapping[str, int] = field(default_factory=dict)
    contexts: dict[tuple[str, int, int], str] = field(default_factory=dict)
    opened: list[tuple[str, int, int, int | None]] = field(default_factory=list)
    decided: dict[tuple[str, int, int, int | None, int | None], Decision] = field(
        default_factory=dict
    )
    lost: bool = False

    async def open_gate(
        self,
        run_id: str,
        node_id: str,
        iteration: int,
        kind: int,
        message: str,
        expire_time: datetime | None,
        *,
        item_index: int | None = None,
        call: HeldCall | None = None,
        renew: bool = False,
    ) -> Decision | None:
        if self.lost:
            raise LeaseLost(run_id)
        call_index = None if call is None else call.call_index
        key = (node_id, iteration, kind, item_index, call_index)
        self.opened.append((node_id, iteration, kind, item_index))
        if call is not None and (
            renew or (node_id, iteration, call.call_index) not in self.contexts
        ):
            self.contexts[(node_id, iteration, call.call_index)] = call.context_json
        if key not in self.decided:
            if call is not None and call.tool_call_id in self.call_decisions:
                scripted = self.call_decisions[call.tool_call_id]
                self.decided[key] = Decision(scripted, "tester", "scripted")  # type: ignore[arg-type]
            elif node_id in self.decisions:
                self.decided[key] = Decision(self.decisions[node_id], "tester", "scripted")  # type: ignore[arg-type]
        return self.decided.get(key)

    async def call_context(self, run_id: str, node_id: str, iteration: int, call_index: int) -> str:
        return self.contexts.get((node_id, iteration, call_index), "")

    async def decide_gate(
        self,
        run_id: str,
        node_id: str,
        iteration: int,
        kind: int,
        decision: Decision,
        *,
        item_index: int | None = None,
        call_index: int | None = None,
    ) -> Decision:
        if self.lost:
            raise LeaseLost(run_id)
        return self.decided.setdefault((node_id, iteration, kind, item_index, call_index), decision)


@dataclass
class EngineRun:
    """What one executor life journaled, and the executor itself."""

    executor: RunExecutor
    journal: MemoryJournal
    zap: ZapAdapter

    @property
    def events(self) -> list[events_pb2.RunEvent]:
        return self.journal.events


def flow_of(spec: Mapping[str, Any]) -> flow_pb2.Flow:
    """A Flow from its proto3 JSON mapping."""
    return json_format.ParseDict(spec, flow_pb2.Flow())


def make_executor(
    flow: flow_pb2.Flow,
    workspace: Path,
    *,
    history: list[events_pb2.RunEvent] | None = None,
    gates: MemoryGates | None = None,
    journal: MemoryJournal | None = None,
    zap: ZapAdapter | None = None,
    inputs: dict[str, Any] | None = None,
    run_id: str = "run_test",
    ai: ModelGateway | None = None,
) -> EngineRun:
    """An executor for `flow` (continuing `history` if given), not started."""
    zap = zap or ZapAdapter()
    registry = Registry([UtilAdapter(), zap])
    graph = validate_flow(flow, registry, ai=ai)
    journal = journal or MemoryJournal()
    executor = RunExecutor(
        RunPlan(
            run_id=run_id,
            graph=graph,
            inputs=inputs if inputs is not None else {"who": "tester"},
            flow_digest="digest",
            principal="tester",
            trigger="test",
            request_id="",
            history=[_copy(e) for e in history] if history else None,
        ),
        journal,
        gates or MemoryGates(),
        registry,
        trace.NoOpTracerProvider().get_tracer("engine-tests"),
        EngineSettings(workspace_root=workspace, heartbeat_interval=3600, max_parallel=4, ai=ai),
    )
    return EngineRun(executor, journal, zap)


async def run_engine(flow: flow_pb2.Flow, workspace: Path, **kwargs: Any) -> EngineRun:
    """Run (or continue) a flow to its end in this process."""
    run = make_executor(flow, workspace, **kwargs)
    await asyncio.wait_for(run.executor.run(), 30)
    return run


def fold(
    flow: flow_pb2.Flow, events: list[events_pb2.RunEvent], ai: ModelGateway | None = None
) -> RunState:
    """The run state the events describe."""
    registry = Registry([UtilAdapter(), ZapAdapter()])
    state = RunState("run_test", validate_flow(flow, registry, ai=ai))
    for e in events:
        state.apply(e)
    return state


def _copy(e: events_pb2.RunEvent) -> events_pb2.RunEvent:
    c = events_pb2.RunEvent()
    c.CopyFrom(e)
    return c


def summary(state: RunState) -> dict[str, Any]:
    """What must not depend on whether the run was taken over: status, outputs, counters."""
    return {
        "finished": state.finished,
        "status": state.status,
        "capped": state.capped,
        "failed_node": state.failed_node,
        "nodes": {
            n: (s.status.value, s.visit, s.output if s.status.value == "succeeded" else None)
            for n, s in state.nodes.items()
        },
    }
