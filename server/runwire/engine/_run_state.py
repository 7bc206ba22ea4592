"""A run's state as a pure fold of its events: `RunState.apply(event)` is its only mutator.

The live executor changes a run only by emitting events (build, apply,
journal); a takeover folds the stored events through the same `apply`, so
the two paths cannot disagree. Everything the executor asks (which nodes are
ready, which became unreachable and why, which loops were capped, how the run
ends) is a query here. No asyncio, no I/O.

Scheduling is incremental: each node counts its forward in-edges whose source
has not finished (`waiting`) and those whose source finished without taking
the edge (`blocked`), so finishing a node costs O(its out-edges) and a loop
re-opens only the nodes downstream of its head.

A loop edge is not an event of its own: when a loop source finishes, `apply`
decides then and there whether its edge back fires (the head's visits are
below `max_visits`: the loop body is re-opened) or is capped (recorded in
`caps_due` until the executor emits `IterationCapped`). The decision depends
only on events already applied, so the live path and a takeover make it alike.
"""

from __future__ import annotations

import enum
import heapq
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from runwire.engine._events import SpanIds
from runwire.engine._ports import Decision
from runwire.engine._validate import Graph
from runwire.v1 import events_pb2 as ev
from runwire.v1 import flow_pb2, run_service_pb2

__all__ = ["Cap", "ItemState", "NodeState", "NodeStatus", "RunEnd", "RunState", "edge_taken"]


class NodeStatus(enum.Enum):
    """Where a node's current visit is."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


_TERMINAL = frozenset({NodeStatus.SUCCEEDED, NodeStatus.FAILED, NodeStatus.SKIPPED})

_CONDITION_WORD = {
    flow_pb2.EDGE_CONDITION_UNSPECIFIED: "success",
    flow_pb2.EDGE_CONDITION_SUCCESS: "success",
    flow_pb2.EDGE_CONDITION_FAILURE: "failure",
    flow_pb2.EDGE_CONDITION_ALWAYS: "any outcome",
}


def edge_taken(condition: int, source: NodeStatus) -> bool:
    """Whether an edge with `condition` fires from a source that ended in `source`."""
    if condition == flow_pb2.EDGE_CONDITION_FAILURE:
        return source is NodeStatus.FAILED
    if condition == flow_pb2.EDGE_CONDITION_ALWAYS:
        return source in _TERMINAL
    return source is NodeStatus.SUCCEEDED


_GATE_KINDS = {
    "awaiting_confirmation": run_service_pb2.GATE_KIND_CONFIRMATION,
    "confirmation_resolved": run_service_pb2.GATE_KIND_CONFIRMATION,
    "approval_requested": run_service_pb2.GATE_KIND_APPROVAL,
    "approval_resolved": run_service_pb2.GATE_KIND_APPROVAL,
    "ai_review_required": run_service_pb2.GATE_KIND_REVIEW,
    "ai_review_resolved": run_service_pb2.GATE_KIND_REVIEW,
}


@dataclass
class ItemState:
    """One item of a fan-out node's current visit: its last attempt, an open gate, how it ended."""

    status: NodeStatus = NodeStatus.PENDING
    attempt: int = 0
    attempt_open: bool = False
    attempt_started_ns: int = 0
    next_attempt: int = 0
    max_attempts: int = 0
    gate: int = 0
    gate_span: SpanIds | None = None
    decision: Decision | None = None
    decided_kind: int = 0
    output_json: str = "null"  # of its success, or the output its last failure recorded
    error: ev.ErrorSummary | None = None  # of its last failure
    params_json: str = ""


@dataclass
class NodeState:
    """One node: its current visit, its last attempt, an open gate, its scheduling counters."""

    index: int  # position in the flow: ready nodes start in flow order
    status: NodeStatus = NodeStatus.PENDING
    visit: int = 0  # iteration of the current (or last) visit; 0 before the first
    attempt: int = 0  # the last attempt that started in this visit
    attempt_open: bool = False  # its NodeStarted has no terminal event yet
    attempt_started_ns: int = 0  # event_time of that NodeStarted
    next_attempt: int = 0  # NodeRetrying announced this attempt; not started yet
    max_attempts: int = 0  # as announced by the last NodeRetrying
    gate: int = 0  # GATE_KIND_* opened in this visit and not resolved yet
    gate_span: SpanIds | None = None  # the span the open gate was announced in
    decision: Decision | None = None  # how this visit's gate was decided
    decided_kind: int = 0
    held_json: str = ""  # the answer an open review gate holds (AiReviewRequired)
    # An AI visit's held tool calls: their ids by call_index - 1 (announced
    # order), the one waiting now (its call_index; 0: none) and the decisions.
    tool_gates: list[str] = field(default_factory=list)
    tool_gate_open: int = 0
    tool_decisions: dict[int, Decision] = field(default_factory=dict)
    output_json: str = "null"  # of the last success, as NodeSucceeded recorded it
    params_json: str = ""  # rendered params of this visit, as its first event recorded them
    waiting: int = 0  # forward in-edges whose source has not finished
    blocked: int = 0  # forward in-edges whose source finished without taking the edge
    items: dict[int, ItemState] = field(default_factory=dict)  # a fan-out visit's started items
    _parsed: tuple[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def output(self) -> Any:
        """The last success's output, parsed when first read (most are never read)."""
        if self._parsed is None or self._parsed[0] is not self.output_json:
            self._parsed = (self.output_json, json.loads(self.output_json))
        return self._parsed[1]


@dataclass(frozen=True)
class Cap:
    """A loop edge that could not fire: its head reached `max_visits`."""

    source: str
    head: str
    max_visits: int
    head_visit: int


@dataclass(frozen=True)
class RunEnd:
    """How a run ends: its status, why, and the error RunCompleted carries."""

    status: int
    why: str
    error: ev.ErrorSummary | None


class NodesView(Mapping[str, Mapping[str, Any]]):
    """`nodes.<id>` in templates: built per key on access, so rendering is O(what it reads)."""

    def __init__(self, state: RunState) -> None:
        self._state = state

    def __getitem__(self, node_id: str) -> Mapping[str, Any]:
        n = self._state.nodes[node_id]
        return {"output": n.output, "status": n.status.value, "iteration": n.visit}

    def __iter__(self) -> Iterator[str]:
        return iter(self._state.nodes)

    def __len__(self) -> int:
        return len(self._state.nodes)


class RunState:
    """Everything known about a run, folded from its events in seq order."""

    def __init__(self, run_id: str, graph: Graph) -> None:
        self.run_id = run_id
        self.graph = graph
        self.seq = 0
        self.status: int = ev.RUN_STATUS_PENDING
        self.started_ns = 0  # event_time of RunStarted
        self.run_span = SpanIds("", "")
        self.paused = False
        self.paused_ns = 0  # event_time of the RunPaused in force
        self.finished = False
        self.capped = False
        self.failed_node: str | None = None  # first node that failed with no edge to handle it
        self.caps_due: list[Cap] = []  # decided when the source finished; not yet emitted
        self.token_index = 0  # NodeTokens so far (the next one's index)
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost_micros = 0
        self.nodes: dict[str, NodeState] = {}
        self._counts = dict.fromkeys(NodeStatus, 0)
        for i, (node_id, _) in enumerate(graph.nodes.items()):
            self.nodes[node_id] = NodeState(index=i, waiting=len(graph.incoming[node_id]))
        self._counts[NodeStatus.PENDING] = len(self.nodes)
        self._handled = {n: self._has_failure_edge(n) for n in graph.nodes}
        self._order = list(graph.nodes)
        # Pending nodes whose forward in-edges have all resolved, by flow
        # position, split when they resolve: ready to start, or unreachable (an
        # edge into them was not taken). Entries are checked when read (a loop
        # may have re-opened them since) and stale ones dropped.
        self._ready: list[int] = []
        self._unreachable: list[int] = []
        self._in_ready: set[str] = set()
        self._in_unreachable: set[str] = set()
        for node_id, n in self.nodes.items():
            if n.waiting == 0:
                self._enqueue(node_id)
        self._apply_item: dict[str, Callable[[ev.RunEvent, ItemState], None]] = {
            "node_started": self._item_started,
            "node_succeeded": self._item_succeeded,
            "node_failed": self._item_failed,
            "node_retrying": self._item_retrying,
            "node_skipped": self._item_skipped,
            "awaiting_confirmation": self._item_gate_opened,
            "confirmation_resolved": self._item_gate_resolved,
        }
        self._apply: dict[str, Callable[[ev.RunEvent], None]] = {
            "run_started": self._run_started,
            "run_status_changed": self._run_status_changed,
            "run_paused": self._run_paused,
            "run_resumed": self._run_resumed,
            "run_completed": self._run_completed,
            "node_started": self._node_started,
            "node_succeeded": self._node_succeeded,
            "node_failed": self._node_failed,
            "node_skipped": self._node_skipped,
            "node_retrying": self._node_retrying,
            "awaiting_confirmation": self._gate_opened,
            "approval_requested": self._gate_opened,
            "confirmation_resolved": self._gate_resolved,
            "approval_resolved": self._gate_resolved,
            "ai_review_required": self._gate_opened,
            "ai_review_resolved": self._gate_resolved,
            "iteration_capped": self._iteration_capped,
            "node_token": self._node_token,
            "ai_invocation": self._ai_invocation,
        }

    # -- the one mutator --------------------------------------------------------

    def apply(self, event: ev.RunEvent) -> None:
        """Fold one event into the state; events must come in seq order, gapless."""
        if event.seq != self.seq + 1:
            raise ValueError(f"run {self.run_id}: seq {event.seq} after {self.seq}")
        self.seq = event.seq
        case = event.WhichOneof("event")
        if event.HasField("item_index") and event.node_id in self.nodes:
            item_handler = self._apply_item.get(case or "")
            if item_handler is not None:
                n = self._open_visit(event)
                item = n.items.get(event.item_index)
                if item is None:
                    item = n.items[event.item_index] = ItemState()
                item_handler(event, item)
            return
        handler = self._apply.get(case or "")
        if handler is not None and (not event.node_id or event.node_id in self.nodes):
            handler(event)

    # -- queries ---------------------------------------------------------------

    def count(self, status: NodeStatus) -> int:
        """How many nodes are in `status` now."""
        return self._counts[status]

    def handled(self, node_id: str) -> bool:
        """The node has a FAILURE or ALWAYS edge out, so its failure does not fail the run."""
        return self._handled[node_id]

    def nodes_view(self) -> Mapping[str, Mapping[str, Any]]:
        """The `nodes` of the template context."""
        return NodesView(self)

    def unreachable(self) -> tuple[str, str] | None:
        """A pending node that can never run (an edge into it was not taken) and why."""
        found = self._first(self._unreachable, self._in_unreachable, blocked=True, exclude=set())
        return None if found is None else (found, self._skip_reason(found))

    def ready(self, limit: int, exclude: set[str]) -> list[str]:
        """Up to `limit` pending nodes whose every in-edge fired, in flow order."""
        out: list[str] = []
        while len(out) < limit:
            found = self._first(self._ready, self._in_ready, blocked=False, exclude=exclude)
            if found is None:
                break
            out.append(found)
            exclude = exclude | {found}
        return out

    def has_candidates(self) -> bool:
        """Some pending node has all its in-edges resolved (ready or unreachable)."""
        return (
            self._first(self._ready, self._in_ready, blocked=False, exclude=set()) is not None
            or self._first(self._unreachable, self._in_unreachable, blocked=True, exclude=set())
            is not None
        )

    def open_nodes(self) -> list[str]:
        """Nodes in the middle of a visit (an attempt, a retry or a gate), in flow order."""
        return [n for n, s in self.nodes.items() if s.status is NodeStatus.RUNNING]

    def end(self, *, cancelled: str | None, crashed: bool) -> RunEnd:
        """How the run ends now; `cancelled` is the cancel reason when a cancel took effect."""
        if crashed:
            return RunEnd(
                ev.RUN_STATUS_FAILED,
                "internal error",
                ev.ErrorSummary(reason="INTERNAL", message="the engine failed; see the server log"),
            )
        if cancelled is not None:
            return RunEnd(
                ev.RUN_STATUS_CANCELLED,
                "cancelled",
                ev.ErrorSummary(reason="CANCELLED", message=cancelled or "run cancelled"),
            )
        if self.failed_node is not None:
            why = f"node {self.failed_node!r} failed"
            return RunEnd(
                ev.RUN_STATUS_FAILED, why, ev.ErrorSummary(reason="NODE_FAILED", message=why)
            )
        if self.capped:
            return RunEnd(
                ev.RUN_STATUS_PARTIAL,
                "a loop was capped",
                ev.ErrorSummary(
                    reason="ITERATION_CAPPED", message="a loop reached its node's max_visits"
                ),
            )
        return RunEnd(ev.RUN_STATUS_SUCCEEDED, "all nodes finished", None)

    # -- scheduling index ------------------------------------------------------

    def _enqueue(self, node_id: str) -> None:
        n = self.nodes[node_id]
        heap, queued = (
            (self._unreachable, self._in_unreachable)
            if n.blocked
            else (self._ready, self._in_ready)
        )
        if node_id not in queued:
            queued.add(node_id)
            heapq.heappush(heap, n.index)

    def _first(
        self, heap: list[int], queued: set[str], *, blocked: bool, exclude: set[str]
    ) -> str | None:
        """The first valid entry of `heap` not in `exclude`; drops stale entries.

        Entries it passes over (excluded: being started right now) are pushed
        back, so a query leaves the index as it found it, less stale entries.
        """
        held: list[int] = []
        found: str | None = None
        while heap:
            node_id = self._order[heap[0]]
            n = self.nodes[node_id]
            if n.status is not NodeStatus.PENDING or n.waiting or (n.blocked > 0) != blocked:
                heapq.heappop(heap)
                queued.discard(node_id)
                if n.status is NodeStatus.PENDING and not n.waiting:
                    self._enqueue(node_id)  # resolved again, in the other class
                continue
            if node_id not in exclude:
                found = node_id
                break
            held.append(heapq.heappop(heap))
        for index in held:
            heapq.heappush(heap, index)
        return found

    def _skip_reason(self, node_id: str) -> str:
        for e in self.graph.incoming[node_id]:
            source = self.nodes[e.source].status
            if not edge_taken(e.condition, source):
                return (
                    f"upstream {e.source!r} {source.value}; "
                    f"the edge needs {_CONDITION_WORD[e.condition]}"
                )
        return ""

    def _has_failure_edge(self, node_id: str) -> bool:
        edges = (*self.graph.outgoing[node_id], *self.graph.back_edges[node_id])
        return any(
            e.condition in (flow_pb2.EDGE_CONDITION_FAILURE, flow_pb2.EDGE_CONDITION_ALWAYS)
            for e in edges
        )

    # -- transitions -----------------------------------------------------------

    def _set(self, node_id: str, status: NodeStatus) -> None:
        n = self.nodes[node_id]
        old = n.status
        if old is status:
            return
        self._counts[old] -= 1
        self._counts[status] += 1
        n.status = status
        if status in _TERMINAL and old not in _TERMINAL:
            self._finished(node_id, status)
        elif old in _TERMINAL and status not in _TERMINAL:
            self._reopened(node_id, old)

    def _finished(self, node_id: str, status: NodeStatus) -> None:
        for e in self.graph.outgoing[node_id]:
            t = self.nodes[e.target]
            t.waiting -= 1
            if not edge_taken(e.condition, status):
                t.blocked += 1
            if t.waiting == 0 and t.status is NodeStatus.PENDING:
                self._enqueue(e.target)
        if status is NodeStatus.FAILED and not self._handled[node_id] and self.failed_node is None:
            self.failed_node = node_id
        if status is not NodeStatus.SKIPPED:
            self._follow_loops(node_id, status)

    def _reopened(self, node_id: str, old: NodeStatus) -> None:
        for e in self.graph.outgoing[node_id]:
            t = self.nodes[e.target]
            t.waiting += 1
            if not edge_taken(e.condition, old):
                t.blocked -= 1
        if self.failed_node == node_id:
            self.failed_node = None
        n = self.nodes[node_id]
        if n.waiting == 0:
            self._enqueue(node_id)

    def _follow_loops(self, node_id: str, status: NodeStatus) -> None:
        for e in self.graph.back_edges[node_id]:
            if not edge_taken(e.condition, status):
                continue
            head = self.nodes[e.target]
            limit = self.graph.nodes[e.target].max_visits
            if head.visit >= limit:
                self.caps_due.append(Cap(node_id, e.target, limit, head.visit))
                continue
            for m in self.graph.downstream(e.target):
                if self.nodes[m].status in _TERMINAL:
                    self._set(m, NodeStatus.PENDING)

    def _open_visit(self, e: ev.RunEvent) -> NodeState:
        n = self.nodes[e.node_id]
        if e.iteration != n.visit:
            n.visit = e.iteration
            n.attempt = n.next_attempt = n.max_attempts = n.gate = n.decided_kind = 0
            n.attempt_open = False
            n.gate_span = n.decision = None
            n.params_json = n.held_json = ""
            n.items = {}
            n.tool_gates, n.tool_gate_open, n.tool_decisions = [], 0, {}
        return n

    # -- handlers, one per variant that changes the state -----------------------

    def _run_started(self, e: ev.RunEvent) -> None:
        self.started_ns = e.event_time.ToNanoseconds()
        self.run_span = SpanIds(e.trace_id, e.span_id)

    def _run_status_changed(self, e: ev.RunEvent) -> None:
        self.status = e.run_status_changed.new_status

    def _run_paused(self, e: ev.RunEvent) -> None:
        self.paused, self.paused_ns = True, e.event_time.ToNanoseconds()

    def _run_resumed(self, _e: ev.RunEvent) -> None:
        self.paused = False

    def _run_completed(self, _e: ev.RunEvent) -> None:
        self.finished = True

    def _node_started(self, e: ev.RunEvent) -> None:
        n = self._open_visit(e)
        n.attempt, n.attempt_open = e.attempt, True
        n.next_attempt = 0
        n.attempt_started_ns = e.event_time.ToNanoseconds()
        n.params_json = e.node_started.params_json
        self._set(e.node_id, NodeStatus.RUNNING)

    def _node_succeeded(self, e: ev.RunEvent) -> None:
        n = self.nodes[e.node_id]
        n.attempt_open = False
        n.output_json = e.node_succeeded.output_json or "null"
        self._set(e.node_id, NodeStatus.SUCCEEDED)

    def _node_failed(self, e: ev.RunEvent) -> None:
        n = self.nodes[e.node_id]
        n.attempt_open = False
        if not e.node_failed.will_retry:
            self._set(e.node_id, NodeStatus.FAILED)

    def _node_retrying(self, e: ev.RunEvent) -> None:
        n = self.nodes[e.node_id]
        n.next_attempt = e.node_retrying.next_attempt
        n.max_attempts = e.node_retrying.max_attempts

    def _node_skipped(self, e: ev.RunEvent) -> None:
        self._open_visit(e).attempt_open = False
        self._set(e.node_id, NodeStatus.SKIPPED)

    def _gate_opened(self, e: ev.RunEvent) -> None:
        n = self._open_visit(e)
        if e.HasField("awaiting_confirmation") and e.awaiting_confirmation.tool_call_id:
            # A model's tool call waits: the node's own gate and params are untouched.
            n.tool_gates.append(e.awaiting_confirmation.tool_call_id)
            n.tool_gate_open = len(n.tool_gates)
            n.gate_span = SpanIds(e.trace_id, e.span_id)
            return
        n.gate = _GATE_KINDS[e.WhichOneof("event") or ""]
        if e.HasField("ai_review_required"):
            n.held_json = e.ai_review_required.output_json
        n.gate_span = SpanIds(e.trace_id, e.span_id)
        if e.HasField("awaiting_confirmation"):
            n.params_json = e.awaiting_confirmation.params_json
        self._set(e.node_id, NodeStatus.RUNNING)

    def _gate_resolved(self, e: ev.RunEvent) -> None:
        n = self.nodes[e.node_id]
        case = e.WhichOneof("event") or ""
        r: Any = getattr(e, case)
        if case == "confirmation_resolved" and r.tool_call_id:
            if n.tool_gate_open:
                n.tool_decisions[n.tool_gate_open] = Decision(r.decision, r.principal, r.comment)
                n.tool_gate_open = 0
            return
        n.decided_kind = n.gate or _GATE_KINDS[case]
        n.gate = 0
        edited = r.output_json if case == "ai_review_resolved" else ""
        n.decision = Decision(r.decision, r.principal, r.comment, edited)

    # -- fan-out items: they change their item, never the node's status ------------

    def _item_started(self, e: ev.RunEvent, item: ItemState) -> None:
        item.status = NodeStatus.RUNNING
        item.attempt, item.attempt_open, item.next_attempt = e.attempt, True, 0
        item.attempt_started_ns = e.event_time.ToNanoseconds()
        item.params_json = e.node_started.params_json

    def _item_succeeded(self, e: ev.RunEvent, item: ItemState) -> None:
        item.attempt_open = False
        item.output_json = e.node_succeeded.output_json or "null"
        item.status = NodeStatus.SUCCEEDED

    def _item_failed(self, e: ev.RunEvent, item: ItemState) -> None:
        item.attempt_open = False
        item.output_json = e.node_failed.output_json or "null"
        item.error = e.node_failed.error
        if not e.node_failed.will_retry:
            item.status = NodeStatus.FAILED

    def _item_retrying(self, e: ev.RunEvent, item: ItemState) -> None:
        item.next_attempt = e.node_retrying.next_attempt
        item.max_attempts = e.node_retrying.max_attempts

    def _item_skipped(self, _e: ev.RunEvent, item: ItemState) -> None:
        item.attempt_open = False
        item.status = NodeStatus.SKIPPED

    def _item_gate_opened(self, e: ev.RunEvent, item: ItemState) -> None:
        item.status = NodeStatus.RUNNING
        item.gate = run_service_pb2.GATE_KIND_CONFIRMATION
        item.gate_span = SpanIds(e.trace_id, e.span_id)
        item.params_json = e.awaiting_confirmation.params_json

    def _item_gate_resolved(self, e: ev.RunEvent, item: ItemState) -> None:
        r = e.confirmation_resolved
        item.decided_kind = run_service_pb2.GATE_KIND_CONFIRMATION
        item.gate = 0
        item.decision = Decision(r.decision, r.principal, r.comment)

    def _iteration_capped(self, e: ev.RunEvent) -> None:
        self.capped = True
        source = e.iteration_capped.source_node_id
        for i, cap in enumerate(self.caps_due):
            if cap.source == source and cap.head == e.node_id:
                del self.caps_due[i]
                break

    def _node_token(self, e: ev.RunEvent) -> None:
        self.token_index = max(self.token_index, e.node_token.token_index + 1)

    def _ai_invocation(self, e: ev.RunEvent) -> None:
        a = e.ai_invocation
        self.input_tokens += a.input_token_count
        self.output_tokens += a.output_token_count
        self.cost_micros += a.cost_micros
