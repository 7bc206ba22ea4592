"""Human gates of a node visit: open one durably, announce it, wait, record the decision.

A gate is a confirmation (a destructive action waits for a person) or an
approval (an approval node). Its row in the GateStore is written before the
event that announces it, so a person who reacts to the event always finds the
gate pending. After a takeover the run state says how far the gate got: an
announced gate is not announced again and a decided one is not reopened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from runwire.engine._events import NodeRef, SpanIds
from runwire.engine._ports import Decision, HeldCall
from runwire.engine._run_state import ItemState
from runwire.v1 import events_pb2 as ev
from runwire.v1 import run_service_pb2

if TYPE_CHECKING:
    from runwire.engine._orchestrator import RunExecutor

__all__ = ["SYSTEM", "GateKey", "decision_word", "gate_key", "hold_gate"]

_VARIANTS: dict[int, tuple[str, str]] = {
    run_service_pb2.GATE_KIND_CONFIRMATION: ("awaiting_confirmation", "confirmation_resolved"),
    run_service_pb2.GATE_KIND_APPROVAL: ("approval_requested", "approval_resolved"),
    run_service_pb2.GATE_KIND_REVIEW: ("ai_review_required", "ai_review_resolved"),
}

SYSTEM = "system"

GateKey = tuple[str, int, int, int | None, int | None]
"""(node_id, iteration, kind, item_index, call_index): one gate of a run."""


def gate_key(
    node_id: str, iteration: int, kind: int, item_index: int | None, call: HeldCall | int | None
) -> GateKey:
    """The key a waiting gate is found by when its decision arrives."""
    call_index = call.call_index if isinstance(call, HeldCall) else call
    return (node_id, iteration, kind, item_index, call_index)


def decision_word(decision: Decision) -> str:
    """`APPROVED`, `REJECTED`, `EXPIRED`, `CANCELLED`."""
    return ev.GateDecision.Name(decision.decision).removeprefix("GATE_DECISION_")


async def hold_gate(
    x: RunExecutor,
    ref: NodeRef,
    kind: int,
    message: str,
    expires_in: float | None,
    *,
    details: Message,
    span: SpanIds | None = None,
    review_output: Callable[[Decision], str] | None = None,
    call: HeldCall | None = None,
) -> Decision:
    """Open the gate of this visit (or continue the one a takeover found) and return its decision.

    For a review gate, `review_output` gives the answer that stands after a
    decision (canonical JSON), which AiReviewResolved records. `call` names a
    model's tool call held at its own confirmation gate: a visit may hold
    several, and each is decided on its own.
    """
    n = x.state.nodes[ref.node_id]
    # A fan-out item's gate is its own: several per node visit.
    node = n if ref.item_index is None else n.items.get(ref.item_index, ItemState())
    if call is not None:
        decided = n.tool_decisions.get(call.call_index)
        if decided is not None:
            return decided  # this call's gate was decided and recorded before a takeover
        announced = n.tool_gate_open == call.call_index
    else:
        if node.decided_kind == kind and node.decision is not None:
            return node.decision  # decided and recorded before a takeover
        announced = node.gate == kind
    confirmation = kind == run_service_pb2.GATE_KIND_CONFIRMATION
    opened, closed = _VARIANTS[kind]
    expire = datetime.now(UTC) + timedelta(seconds=expires_in) if expires_in else None
    waiter: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
    key = gate_key(ref.node_id, ref.iteration, kind, ref.item_index, call)
    x.gate_waiters[key] = waiter
    try:
        standing = await x.gates.open_gate(
            x.run_id,
            ref.node_id,
            ref.iteration,
            kind,
            message,
            expire,
            item_index=ref.item_index,
            call=call,
            renew=call is not None and not announced,
        )
        if not announced:
            if isinstance(details, ev.ApprovalRequested) and expire is not None:
                ts = Timestamp()
                ts.FromDatetime(expire)
                details.expire_time.CopyFrom(ts)
            await x.emit(opened, details, node=ref, span=span)
        if standing is None:
            standing = await _wait(x, ref, kind, waiter, expires_in, call)
    finally:
        x.gate_waiters.pop(key, None)
    resolved: Any
    if kind == run_service_pb2.GATE_KIND_REVIEW:
        standing_output = review_output(standing) if review_output else "null"
        resolved = ev.AiReviewResolved(output_json=standing_output)
    elif confirmation:
        resolved = ev.ConfirmationResolved(tool_call_id=call.tool_call_id if call else "")
    else:
        resolved = ev.ApprovalResolved()
    resolved.decision = standing.decision
    resolved.principal = standing.principal
    resolved.comment = standing.comment
    await x.emit(closed, resolved, node=ref, span=span)
    return standing


async def _wait(
    x: RunExecutor,
    ref: NodeRef,
    kind: int,
    waiter: asyncio.Future[Decision],
    expires_in: float | None,
    call: HeldCall | None,
) -> Decision:
    cancelled = asyncio.ensure_future(x.cancelled.wait())
    try:
        waits: set[asyncio.Future[Any]] = {waiter, cancelled}
        await asyncio.wait(waits, timeout=expires_in, return_when=asyncio.FIRST_COMPLETED)
    finally:
        cancelled.cancel()
    if waiter.done():
        return waiter.result()
    # Expired or cancelled: record it, unless a person decided first.
    if x.cancelled.is_set():
        mine = Decision(ev.GATE_DECISION_CANCELLED, SYSTEM, "run cancelled")
    else:
        mine = Decision(ev.GATE_DECISION_EXPIRED, SYSTEM, "timed out")
    return await x.gates.decide_gate(
        x.run_id,
        ref.node_id,
        ref.iteration,
        kind,
        mine,
        item_index=ref.item_index,
        call_index=call.call_index if call else None,
    )
