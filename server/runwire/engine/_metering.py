"""A run's metrics, read off the events it emits: one place sees every event once.

Runs started and finished, node attempts and their durations, and AI usage
are all in the events the executor emits, so they are counted where the event
is built (`RunExecutor.emit_many`) and nowhere else. Events replayed by a
takeover are folded, not emitted, so nothing is counted twice.
"""

from __future__ import annotations

from google.protobuf.message import Message

from runwire.engine._events import NodeRef
from runwire.engine._validate import Graph
from runwire.metrics import Metrics
from runwire.v1 import events_pb2 as ev

__all__ = ["METERED", "RunMeter"]

# The variants RunMeter looks at; emit_many checks membership before calling it.
METERED = frozenset(
    {"run_started", "run_completed", "node_succeeded", "node_failed", "ai_invocation"}
)


def _adapter(node_id: str, graph: Graph) -> str:
    node = graph.nodes[node_id]
    kind = node.WhichOneof("kind")
    return node.action.adapter if kind == "action" else (kind or "unknown")


class RunMeter:
    """Records one run's events on the process's instruments."""

    def __init__(self, metrics: Metrics, graph: Graph) -> None:
        self._m = metrics
        self._graph = graph
        self._flow = graph.flow.name
        # Attribute sets are built once per run and node, not per event.
        self._by_flow = {"flow": self._flow}
        self._attempt_attrs: dict[tuple[str, str], dict[str, str]] = {}
        self._duration_attrs: dict[str, dict[str, str]] = {}

    def saw(self, variant: str, payload: Message, node: NodeRef | None) -> None:
        """Count one emitted event of a METERED variant."""
        m = self._m
        if variant == "run_started":
            m.runs_started.add(1, self._by_flow)
        elif variant == "run_completed":
            assert isinstance(payload, ev.RunCompleted)
            status = ev.RunStatus.Name(payload.status).removeprefix("RUN_STATUS_").lower()
            m.runs_finished.add(1, {"status": status, "flow": self._flow})
        elif variant == "ai_invocation":
            assert isinstance(payload, ev.AiInvocation)
            model = {"provider": payload.provider, "model": payload.model}
            m.ai_tokens.add(payload.input_token_count, {**model, "direction": "input"})
            m.ai_tokens.add(payload.output_token_count, {**model, "direction": "output"})
            m.ai_cost_micros.add(payload.cost_micros, model)
        elif node is not None:
            assert isinstance(payload, ev.NodeSucceeded | ev.NodeFailed)
            if node.item_index is None and self._graph.nodes[node.node_id].HasField("for_each"):
                return  # a fan-out's frame: its items' attempts were counted
            outcome = "succeeded" if variant == "node_succeeded" else "failed"
            key = (node.node_id, outcome)
            attrs = self._attempt_attrs.get(key)
            if attrs is None:
                adapter = _adapter(node.node_id, self._graph)
                attrs = self._attempt_attrs[key] = {"adapter": adapter, "outcome": outcome}
                self._duration_attrs.setdefault(node.node_id, {"adapter": adapter})
            m.node_attempts.add(1, attrs)
            d = payload.duration
            m.node_attempt_duration.record(
                d.seconds + d.nanos / 1e9, self._duration_attrs[node.node_id]
            )
