"""Where a contract-bound AI answer goes (its review policy), and its review gate.

The routes: AUTO_APPROVE, HUMAN_REVIEW, SUPPRESS, CONTRACT_VIOLATION (see
ai.md). A held answer waits at a durable review gate that survives restarts
without calling the model again.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from runwire.engine._ai_audit import AiResult
from runwire.engine._ai_contracts import contract_violations
from runwire.engine._gates import decision_word, hold_gate
from runwire.engine._ports import Decision
from runwire.engine._validate import canonical_json
from runwire.v1 import events_pb2 as ev
from runwire.v1 import flow_pb2, run_service_pb2

if TYPE_CHECKING:
    from runwire.engine._attempts import AttemptContext
    from runwire.engine._orchestrator import RunExecutor

__all__ = ["hold_for_review", "pointer_value", "route_answer"]


def pointer_value(doc: Any, pointer: str) -> Any:
    """RFC 6901: the value at `pointer` in `doc`; raises LookupError when absent."""
    if pointer == "":
        return doc
    for token in pointer.split("/")[1:]:
        key = token.replace("~1", "/").replace("~0", "~")
        if isinstance(doc, dict):
            doc = doc[key]
        elif isinstance(doc, list) and key.isdigit() and int(key) < len(doc):
            doc = doc[int(key)]
        else:
            raise LookupError(pointer)
    return doc


def route_answer(
    ai: flow_pb2.AiNode, parsed: Any, violations: list[str]
) -> tuple[int, float, str, str]:
    """(route, confidence, threshold, why) of a contract-bound answer, per ai.md."""
    if violations:
        return (ev.AI_ROUTE_CONTRACT_VIOLATION, 0.0, "contract",
                "the answer breaks its contract after one repair turn")  # fmt: skip
    if not ai.HasField("review_policy"):
        return ev.AI_ROUTE_AUTO_APPROVE, 0.0, "contract", "the answer satisfies its contract"
    policy = ai.review_policy
    if policy.escalate_pointer:
        try:
            escalate = pointer_value(parsed, policy.escalate_pointer)
        except LookupError:
            escalate = False
        if escalate is True:
            return (ev.AI_ROUTE_HUMAN_REVIEW, 0.0, f"escalate={policy.escalate_pointer}",
                    "the answer asks for a human")  # fmt: skip
    try:
        confidence = pointer_value(parsed, policy.confidence_pointer)
    except LookupError:
        confidence = None
    if (
        not policy.confidence_pointer
        or not isinstance(confidence, int | float)
        or isinstance(confidence, bool)
        or not 0 <= confidence <= 1
    ):
        return (ev.AI_ROUTE_HUMAN_REVIEW, 0.0, f"confidence={policy.confidence_pointer}",
                "the answer states no confidence in [0,1]")  # fmt: skip
    c = float(confidence)
    if c < policy.suppress_below:
        return (ev.AI_ROUTE_SUPPRESS, c, f"suppress_below={policy.suppress_below:g}",
                f"confidence {c:g} is below suppress_below {policy.suppress_below:g}")  # fmt: skip
    if c < policy.approve_at:
        return (ev.AI_ROUTE_HUMAN_REVIEW, c, f"approve_at={policy.approve_at:g}",
                f"confidence {c:g} is below approve_at {policy.approve_at:g}")  # fmt: skip
    return (ev.AI_ROUTE_AUTO_APPROVE, c, f"approve_at={policy.approve_at:g}",
            f"confidence {c:g} is at least approve_at {policy.approve_at:g}")  # fmt: skip


async def hold_for_review(
    x: RunExecutor,
    ctx: AttemptContext,
    node: flow_pb2.Node,
    schema: dict[str, Any] | None,
    held: Any,
    output: dict[str, Any],
    details: ev.AiReviewRequired | None,
) -> AiResult:
    """Hold the answer at the review gate (durable, listed, survives restarts) until decided."""
    policy = node.ai.review_policy
    timeout = None
    if node.ai.HasField("review_policy") and policy.HasField("review_timeout"):
        timeout = policy.review_timeout.ToNanoseconds() / 1e9

    def standing(d: Decision) -> str:
        if d.decision != ev.GATE_DECISION_APPROVED:
            return "null"
        return canonical_json(json.loads(d.output_json)) if d.output_json else canonical_json(held)

    decision = await hold_gate(
        x,
        ctx.ref,
        run_service_pb2.GATE_KIND_REVIEW,
        details.reason if details else "answer held for review",
        timeout,
        details=details or ev.AiReviewRequired(),
        span=ctx.span,
        review_output=standing,
    )
    word = decision_word(decision)
    output = {**output, "review": {"decision": word, "principal": decision.principal}}
    if decision.decision == ev.GATE_DECISION_APPROVED:
        final = json.loads(decision.output_json) if decision.output_json else held
        if broken := contract_violations(schema, final):
            # ResolveReview checks an edited answer first; this guards what it cannot see.
            return (
                False,
                output,
                ev.ErrorSummary(
                    reason="REVIEW_REJECTED",
                    message=f"the reviewed answer breaks its contract: {broken[0]}",
                ),
            )
        # The answer that stands is what a person saw and approved (or wrote):
        # its text is its canonical JSON, whichever server held it.
        output["text"] = canonical_json(final)
        output["json"] = final
        return True, output, None
    reason = {
        ev.GATE_DECISION_EXPIRED: "REVIEW_EXPIRED",
        ev.GATE_DECISION_CANCELLED: "CANCELLED",
    }.get(decision.decision, "REVIEW_REJECTED")
    return (
        False,
        output,
        ev.ErrorSummary(reason=reason, message=f"review {word.lower()} by {decision.principal}"),
    )
