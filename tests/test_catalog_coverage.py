"""Every variant of the closed catalog is produced by a real run, not only by the golden corpus.

Three runs on one server (real gRPC, Postgres, and the loopback SSE model
server) between them narrate all 24 variants; a variant no run produces
would be a promise the server cannot keep.
"""

from __future__ import annotations

import json
from typing import Any

from _fake_openai import FakeOpenAI, text_reply, tool_reply
from conftest import Harness, edge, shell_node, util_node, wait_for_event

from runwire.engine import VARIANTS
from runwire.v1 import events_pb2, flow_pb2, run_service_pb2

FAILURE = flow_pb2.EDGE_CONDITION_FAILURE
ALWAYS = flow_pb2.EDGE_CONDITION_ALWAYS


def _node(node_id: str, adapter: str, action: str, **params: Any) -> flow_pb2.Node:
    node = flow_pb2.Node(id=node_id)
    node.action.adapter, node.action.action = adapter, action
    node.action.params.update(params)
    return node


def _actions_flow() -> flow_pb2.Flow:
    """Logs, heartbeats, a retry into a failure edge, a skip, a sandbox refusal, both human gates."""
    flaky = util_node("flaky", "fail", message="flaky fails")
    flaky.retry_policy.max_attempts = 2
    flaky.retry_policy.initial_backoff.FromMilliseconds(1)
    return flow_pb2.Flow(
        name="actions",
        nodes=[
            shell_node("talk", "echo", "hello"),
            shell_node("nap", "sleep", "1"),  # against a 0.2 s heartbeat interval
            flaky,
            util_node("handler", "set", value="handled"),
            util_node("deploy", "set", value="never"),
            _node("probe", "http", "request", url="http://127.0.0.1:9/"),
            flow_pb2.Node(id="approve", approval=flow_pb2.ApprovalNode(message="go?")),
            _node("cleanup", "fs", "delete-file", path="old.txt", missing_ok=True),
        ],
        edges=[
            edge("talk", "nap"),
            edge("nap", "flaky"),
            edge("flaky", "handler", FAILURE),
            edge("flaky", "deploy"),
            edge("handler", "probe"),
            edge("probe", "approve", ALWAYS),
            edge("approve", "cleanup"),
        ],
    )


def _loop_flow() -> flow_pb2.Flow:
    head = util_node("head", "set", value=1)
    head.max_visits = 2
    return flow_pb2.Flow(
        name="loop",
        nodes=[head, util_node("check", "fail", message="not yet")],
        edges=[edge("head", "check"), edge("check", "head", FAILURE)],
    )


def _ai_flow() -> flow_pb2.Flow:
    agent = flow_pb2.Node(id="agent")
    agent.ai.provider, agent.ai.task = "local", "look it up"
    agent.ai.tools.append("util.set")
    triage = flow_pb2.Node(id="triage")
    triage.ai.provider, triage.ai.task = "local", "classify"
    triage.ai.contract.update({"type": "object", "required": ["label"]})
    triage.ai.review_policy.CopyFrom(
        flow_pb2.AiReviewPolicy(confidence_pointer="/confidence", approve_at=0.9)
    )
    return flow_pb2.Flow(
        name="ai",
        nodes=[agent, triage, util_node("fallback", "set", value=0)],
        edges=[edge("agent", "triage"), edge("triage", "fallback", FAILURE)],
    )


def _cases(events: list[events_pb2.RunEvent]) -> set[str]:
    return {e.WhichOneof("event") or "?" for e in events}


async def test_catalog_every_variant_is_produced_by_some_run(harness_factory: Any) -> None:
    script = [
        tool_reply(("call_1", "util__set", json.dumps({"value": 1}))),
        text_reply("done"),
        text_reply(json.dumps({"label": "bug", "confidence": 0.5})),
    ]
    seen: set[str] = set()
    async with FakeOpenAI(script) as fake:
        h: Harness = await harness_factory(ai_providers=(f"local={fake.base_url}#fake-model",))

        run = await h.start(_actions_flow())
        await wait_for_event(h.stub, run.run_id, lambda e: e.HasField("approval_requested"))
        # Paused while the gate waits: the pause takes effect at the next node boundary.
        await h.stub.PauseRun(run_service_pb2.PauseRunRequest(run_id=run.run_id, reason="check"))
        await h.stub.ResolveApproval(
            run_service_pb2.ResolveApprovalRequest(
                run_id=run.run_id, node_id="approve", approve=True
            )
        )
        await wait_for_event(h.stub, run.run_id, lambda e: e.HasField("run_paused"))
        await h.stub.ResumeRun(run_service_pb2.ResumeRunRequest(run_id=run.run_id))
        await wait_for_event(h.stub, run.run_id, lambda e: e.HasField("awaiting_confirmation"))
        await h.stub.ConfirmAction(
            run_service_pb2.ConfirmActionRequest(run_id=run.run_id, node_id="cleanup", approve=True)
        )
        seen |= _cases(await h.events(run.run_id))

        run = await h.start(_loop_flow())
        seen |= _cases(await h.events(run.run_id))

        run = await h.start(_ai_flow())
        await wait_for_event(h.stub, run.run_id, lambda e: e.HasField("ai_review_required"))
        await h.stub.ResolveReview(
            run_service_pb2.ResolveReviewRequest(run_id=run.run_id, node_id="triage", approve=True)
        )
        seen |= _cases(await h.events(run.run_id))
    assert len(VARIANTS) == 24
    assert set(VARIANTS) <= seen, f"never produced: {sorted(set(VARIANTS) - seen)}"
