"""The engine: validates flows, schedules their graphs and narrates runs as RunEvents.

It knows flows, adapters and events; it knows nothing of gRPC or Postgres.
"""

from runwire.engine._engine import Engine
from runwire.engine._events import VARIANTS, NodeRef, SpanIds, new_event
from runwire.engine._fan_out import MAX_FAN_OUT_ITEMS
from runwire.engine._limits import (
    MAX_EVENT_BYTES,
    MAX_JSON_BYTES,
    TRUNCATED_KEY,
    bound_event,
    json_size,
)
from runwire.engine._orchestrator import EngineSettings, RunExecutor, RunPlan
from runwire.engine._ports import (
    Decision,
    GateStore,
    HeldCall,
    Journal,
    JournalFailed,
    LeaseLost,
    ModelCallFailed,
    ModelEmbedding,
    ModelGateway,
    ModelRoute,
    ModelToolCall,
    ModelTurn,
    RunPatch,
)
from runwire.engine._run_state import NodeStatus, RunState
from runwire.engine._validate import (
    Graph,
    canonical_json,
    flow_digest,
    struct_problems,
    validate_flow,
)

__all__ = [
    "MAX_EVENT_BYTES",
    "MAX_FAN_OUT_ITEMS",
    "MAX_JSON_BYTES",
    "TRUNCATED_KEY",
    "VARIANTS",
    "Decision",
    "Engine",
    "EngineSettings",
    "GateStore",
    "Graph",
    "HeldCall",
    "Journal",
    "JournalFailed",
    "LeaseLost",
    "ModelCallFailed",
    "ModelEmbedding",
    "ModelGateway",
    "ModelRoute",
    "ModelToolCall",
    "ModelTurn",
    "NodeRef",
    "NodeStatus",
    "RunExecutor",
    "RunPatch",
    "RunPlan",
    "RunState",
    "SpanIds",
    "bound_event",
    "canonical_json",
    "flow_digest",
    "json_size",
    "new_event",
    "struct_problems",
    "validate_flow",
]
