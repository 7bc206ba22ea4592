"""The engine: validates flows, schedules their graphs and narrates runs as RunEvents.

It knows flows, adapters and events; it knows nothing of gRPC or Postgres.
"""

from runwire.engine._engine import Engine
from runwire.engine._events import VARIANTS, NodeRef, SpanIds, new_event
from runwire.engine._orchestrator import EngineSettings, RunExecutor, RunPlan
from runwire.engine._ports import Decision, GateStore, Journal, LeaseLost, RunPatch
from runwire.engine._run_state import NodeStatus, RunState
from runwire.engine._validate import (
    Graph,
    canonical_json,
    flow_digest,
    struct_problems,
    validate_flow,
)

__all__ = [
    "VARIANTS",
    "Decision",
    "Engine",
    "EngineSettings",
    "GateStore",
    "Graph",
    "Journal",
    "LeaseLost",
    "NodeRef",
    "NodeStatus",
    "RunExecutor",
    "RunPatch",
    "RunPlan",
    "RunState",
    "SpanIds",
    "canonical_json",
    "flow_digest",
    "new_event",
    "struct_problems",
    "validate_flow",
]
