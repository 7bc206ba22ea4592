"""A fan-out visit: a node with `for_each` runs once per item of an array known at run time.

The node's own NodeStarted (no item) opens the visit and records the items in
its params (`{"for_each": [...]}`), so a takeover runs exactly the items the
visit began with. Each item then runs its attempts like a node visit does
(`_attempts`: retries, timeouts, heartbeats, its own confirmation gate), its
events carrying `item_index`. When every item has finished (or, failing fast,
every item in flight has), the node's own NodeSucceeded or NodeFailed closes
the visit with the list of item outputs in item order, each failed item's
error in its place.

A takeover finds the items in the run state: finished items are not run
again, an item whose attempt was open is closed as INTERRUPTED and retried,
an item never started starts.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from runwire.engine._attempts import _attempts, _Where, duration_of
from runwire.engine._events import NodeRef
from runwire.engine._gates import decision_word, hold_gate
from runwire.engine._limits import MAX_JSON_BYTES, json_size
from runwire.engine._run_state import NodeStatus
from runwire.engine._templates import TemplateError, render_value
from runwire.engine._validate import canonical_json
from runwire.v1 import events_pb2 as ev
from runwire.v1 import flow_pb2, run_service_pb2

if TYPE_CHECKING:
    from runwire.engine._orchestrator import RunExecutor

__all__ = ["MAX_FAN_OUT_ITEMS", "run_fan_out"]

MAX_FAN_OUT_ITEMS = 10_000
"""The most items one fan-out visit runs; a longer array fails the node when it becomes ready."""

_ITEMS_KEY = "for_each"


class _Refused(Exception):
    """The items cannot be run: not an array, too many, not JSON."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _items_of(x: RunExecutor, node: flow_pb2.Node) -> list[Any]:
    try:
        value = render_value(node.for_each.items, x.template_context(), "for_each.items")
    except TemplateError as exc:
        raise _Refused("TEMPLATE", str(exc)) from exc
    if not isinstance(value, list):
        raise _Refused(
            "FOR_EACH_NOT_ARRAY",
            f"for_each.items evaluated to {type(value).__name__}, not a JSON array",
        )
    if len(value) > MAX_FAN_OUT_ITEMS:
        raise _Refused(
            "FOR_EACH_TOO_LARGE",
            f"for_each.items has {len(value)} items; the limit is {MAX_FAN_OUT_ITEMS}",
        )
    for i, item in enumerate(value):
        try:
            canonical_json(item)
        except Exception as exc:
            raise _Refused(
                "FOR_EACH_ITEM_INVALID", f"for_each item {i} is not JSON: {exc}"
            ) from exc
    size = json_size({_ITEMS_KEY: value})
    if size > MAX_JSON_BYTES:
        raise _Refused(
            "FOR_EACH_TOO_LARGE",
            f"for_each.items is {size} bytes of JSON; the limit is {MAX_JSON_BYTES}",
        )
    return value


def _key_of(item: Any, key_field: str) -> str:
    if not key_field or not isinstance(item, dict) or key_field not in item:
        return ""
    value = item[key_field]
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return canonical_json(value)
    return ""


def _item_output(n_item: Any) -> Any:
    if n_item is None or n_item.status is NodeStatus.SKIPPED:
        return None
    if n_item.status is NodeStatus.SUCCEEDED:
        return json.loads(n_item.output_json)
    error = n_item.error
    return {
        "error": {
            "reason": error.reason if error is not None else "",
            "message": error.message if error is not None else "",
        }
    }


async def run_fan_out(x: RunExecutor, node_id: str, *, resume: bool) -> None:
    """Run one fan-out visit of `node_id`: a new one, or the one a takeover found open."""
    node = x.graph.nodes[node_id]
    n = x.state.nodes[node_id]
    iteration = n.visit if resume else n.visit + 1
    frame = NodeRef(node_id, iteration, 1)
    action = node.action
    if resume and n.attempt_open:
        items: list[Any] = json.loads(n.params_json).get(_ITEMS_KEY, [])
    else:
        try:
            items = _items_of(x, node)
        except _Refused as refused:
            # One append: a takeover never finds this visit open without its items.
            started = ev.NodeStarted(
                adapter=action.adapter,
                action=action.action,
                params_json=canonical_json({"for_each_error": refused.reason}),
            )
            closed = ev.NodeFailed(
                error=ev.ErrorSummary(reason=refused.reason, message=refused.message),
                duration=duration_of(0),
                will_retry=False,
                output_json="null",
            )
            await x.emit_many([("node_started", started), ("node_failed", closed)], node=frame)
            return
        await x.emit(
            "node_started",
            ev.NodeStarted(
                adapter=action.adapter,
                action=action.action,
                params_json=canonical_json({_ITEMS_KEY: items}),
            ),
            node=frame,
        )
    policy = node.for_each.failure_policy or flow_pb2.ITEM_FAILURE_POLICY_FAIL_FAST
    limit = node.for_each.max_parallel or x.max_parallel
    pending = deque(i for i in range(len(items)) if _open_or_new(n.items.get(i)))
    running: dict[asyncio.Task[None], int] = {}
    fail_fast = policy == flow_pb2.ITEM_FAILURE_POLICY_FAIL_FAST
    # An item that failed before a takeover stops a fail-fast visit too.
    stop = fail_fast and any(s.status is NodeStatus.FAILED for s in n.items.values())
    try:
        while pending or running:
            while pending and not stop and len(running) < limit and x.has_room(len(running)):
                i = pending.popleft()
                task = asyncio.create_task(_run_item(x, node, iteration, i, items[i]))
                running[task] = i
                x.items_running += 1
                task.add_done_callback(lambda _t: x.item_done())
            if not running:
                break
            waits: set[asyncio.Future[Any]] = set(running)
            slot = asyncio.ensure_future(x.room_changed())
            waits.add(slot)
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            slot.cancel()
            for finished in done:
                index = running.pop(finished, None)  # type: ignore[call-overload]  # a task
                if index is None:
                    continue
                finished.result()  # an item's crash (a lost lease) stops the visit
                state = n.items.get(index)
                if fail_fast and state is not None and state.status is NodeStatus.FAILED:
                    stop = True
            if x.cancelled.is_set():
                stop = True
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
    outputs = [_item_output(n.items.get(i)) for i in range(len(items))]
    failed = [i for i, s in sorted(n.items.items()) if s.status is NodeStatus.FAILED]
    error = None
    if x.cancelled.is_set() and len(n.items) < len(items):
        error = ev.ErrorSummary(reason="CANCELLED", message="run cancelled")
    elif failed and policy != flow_pb2.ITEM_FAILURE_POLICY_CONTINUE:
        first = n.items[failed[0]].error
        detail = f": {first.message}" if first is not None and first.message else ""
        error = ev.ErrorSummary(
            reason="ITEM_FAILED",
            message=f"{len(failed)} of {len(items)} items failed; first item {failed[0]}{detail}",
        )
    await _close(x, frame, error, outputs)


def _open_or_new(item: Any) -> bool:
    return item is None or item.status in (NodeStatus.PENDING, NodeStatus.RUNNING)


async def _close(
    x: RunExecutor, frame: NodeRef, error: ev.ErrorSummary | None, outputs: list[Any] | None
) -> None:
    n = x.state.nodes[frame.node_id]
    elapsed = duration_of(max(0, time.time_ns() - n.attempt_started_ns))
    output_json = canonical_json(outputs)
    if error is None:
        await x.emit(
            "node_succeeded",
            ev.NodeSucceeded(output_json=output_json, duration=elapsed),
            node=frame,
        )
    else:
        await x.emit(
            "node_failed",
            ev.NodeFailed(error=error, duration=elapsed, will_retry=False, output_json=output_json),
            node=frame,
            error=None,
        )


async def _run_item(
    x: RunExecutor, node: flow_pb2.Node, iteration: int, index: int, item: Any
) -> None:
    n = x.state.nodes[node.id]
    state = n.items.get(index)
    ref = NodeRef(node.id, iteration, 0, index, _key_of(item, node.for_each.key_field))
    params: dict[str, Any] = {}
    render_error: TemplateError | None = None
    if state is not None and state.params_json:
        params = json.loads(state.params_json)  # rendered when the item began
    else:
        raw, templated = x.raw_params(node.id)
        context = {**x.template_context(), "item": item, "item_index": index}
        try:
            params = render_value(raw, context) if templated else raw
        except TemplateError as exc:
            render_error = exc
    where = _Where.of(state) if state is not None else _Where()
    if render_error is None and x.confirm and where.attempt == 0:
        summary = x.describe_destructive(node.action, params)
        if summary is not None:
            decision = await hold_gate(
                x,
                ref,
                run_service_pb2.GATE_KIND_CONFIRMATION,
                summary,
                None,
                details=ev.AwaitingConfirmation(
                    action_summary=summary,
                    adapter=node.action.adapter,
                    action=node.action.action,
                    params_json=canonical_json(params),
                ),
            )
            if decision.decision != ev.GATE_DECISION_APPROVED:
                word = decision_word(decision).lower()
                await x.emit(
                    "node_skipped",
                    ev.NodeSkipped(reason=f"confirmation {word} by {decision.principal}"),
                    node=ref,
                )
                return
    await _attempts(x, node, iteration, params, render_error, where, item=ref)
