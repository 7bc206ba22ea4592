"""The engine's GateStore, kept in Postgres so a waiting gate survives a restart."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from runwire.engine import Decision, HeldCall
from runwire.store._store import GateRow, Store
from runwire.v1 import events_pb2, run_service_pb2

__all__ = ["DurableGates", "decision_of"]


def decision_of(row: GateRow) -> Decision | None:
    """The decision recorded on a gate row, or None while it is pending."""
    if row.decision is None:
        return None
    return Decision(
        cast(events_pb2.GateDecision, row.decision),
        row.principal,
        row.comment,
        row.output_json,
    )


class DurableGates:
    """engine.GateStore over the gates table, fenced by the runs' leases.

    Every open and decision made here is the engine's own (a node reaching a
    gate, a gate expiring, a cancel): it raises LeaseLost unless `owner_id`
    holds the run's unexpired lease. A person's decision goes through
    Store.decide_gate unfenced, on any replica.
    """

    def __init__(self, store: Store, *, owner_id: str) -> None:
        self._store = store
        self._owner_id = owner_id

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
        """Record the pending gate; the decision if one was already made."""
        row = await self._store.open_gate(
            run_id,
            node_id,
            iteration,
            kind,
            message,
            expire_time,
            owner_id=self._owner_id,
            item_index=item_index,
            call_index=None if call is None else call.call_index,
            tool_call_id="" if call is None else call.tool_call_id,
            context_json="" if call is None else call.context_json,
            renew=renew,
        )
        return decision_of(row)

    async def call_context(self, run_id: str, node_id: str, iteration: int, call_index: int) -> str:
        """The context a held tool call's gate was opened with."""
        return await self._store.gate_context(
            run_id,
            node_id,
            iteration,
            run_service_pb2.GATE_KIND_CONFIRMATION,
            call_index=call_index,
        )

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
        """Decide the gate unless someone already did; the standing decision."""
        row, _ = await self._store.decide_gate(
            run_id,
            node_id,
            kind,
            decision=decision.decision,
            principal=decision.principal,
            comment=decision.comment,
            output_json=decision.output_json,
            iteration=iteration,
            owner_id=self._owner_id,
            item_index=item_index,
            call_index=call_index,
        )
        assert row is not None, "the engine decides only gates it opened"
        standing = decision_of(row)
        assert standing is not None
        return standing
