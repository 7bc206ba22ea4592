"""The engine: validates flows, schedules their graphs and narrates runs as RunEvents.

It knows flows, adapters and events; it knows nothing of gRPC or Postgres.
"""

from runwire.engine._engine import Engine
from runwire.engine._events import VARIANTS, NodeRef, SpanIds, new_event
from runwire.engine._executor import EngineSettings, RunExecutor, RunPlan
from runwire.engine._limits import (
    MAX_EVENT_BYTES,
    MAX_JSON_BYTES,
    TRUNCATED_KEY,
    bound_event,
    json_size,
)
from runwire.engine._ports import Decision, GateStore, Journal, LeaseLost, RunPatch
from runwire.engine._validate import (
    Graph,
    canonical_json,
    flow_digest,
    struct_problems,
    validate_flow,
)

__all__ = [
    "MAX_EVENT_BYTES",
    "MAX_JSON_BYTES",
    "TRUNCATED_KEY",
    "VARIANTS",
    "Decision",
    "Engine",
    "EngineSettings",
    "GateStore",
    "Graph",
    "Journal",
    "LeaseLost",
    "NodeRef",
    "RunExecutor",
    "RunPatch",
    "RunPlan",
    "SpanIds",
    "bound_event",
    "canonical_json",
    "flow_digest",
    "json_size",
    "new_event",
    "struct_problems",
    "validate_flow",
]
