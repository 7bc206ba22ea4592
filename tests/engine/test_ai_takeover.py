"""The prefix-takeover property for an AI flow, with the real gateway and a loopback SSE server.

The flow streams tokens, calls a tool, and holds a contract-bound answer at a
review gate. Taken over after every prefix of its stream it must end like the
uninterrupted run: grammatical, token_index gapless from 0, no finished visit
restarted, the same statuses and answers; a takeover mid-stream starts a new
attempt, and one whose prefix holds the answer at review calls no model again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from _engine_kit import APPROVED, MemoryGates, flow_of, fold, run_engine
from _fake_openai import FakeOpenAI, Reply, text_reply, tool_reply
from conftest import assert_grammar

from runwire.adapters.ai import OpenAiGateway, load_ai_config
from runwire.v1 import events_pb2

CONTRACT = {
    "type": "object",
    "required": ["label", "confidence"],
    "properties": {"label": {"type": "string"}, "confidence": {"type": "number"}},
}

FLOW = {
    "name": "ai-takeover",
    "nodes": [
        {
            "id": "agent",
            "ai": {"provider": "fake", "task": "look it up", "tools": ["util.set"]},
        },
        {
            "id": "triage",
            "ai": {
                "provider": "fake",
                "task": "classify {{ nodes.agent.output.text }}",
                "contract": CONTRACT,
                "reviewPolicy": {"confidencePointer": "/confidence", "approveAt": 0.9},
            },
        },
        {"id": "fallback", "action": {"adapter": "util", "action": "set", "params": {"value": 0}}},
    ],
    "edges": [
        {"source": "agent", "target": "triage"},
        {"source": "triage", "target": "fallback", "condition": "EDGE_CONDITION_FAILURE"},
    ],
}

# Output fields that measure this life of the attempt, not what it decided.
_VOLATILE = {"latency_ms", "turns", "tool_calls", "input_tokens", "output_tokens", "cost_micros",
             "finish_reason"}  # fmt: skip


def _respond(request: dict[str, Any]) -> Reply:
    """Answers from the request alone, so every life of the run hears the same model."""
    messages = request["messages"]
    if "tools" in request:
        if messages[-1]["role"] == "tool":
            return text_reply("the value ", "is 42")
        return tool_reply(("call_1", "util__set", json.dumps({"value": 42})))
    return text_reply(json.dumps({"label": "answer", "confidence": 0.5}))


def _summary(state: Any) -> dict[str, Any]:
    nodes = {}
    for node_id, n in state.nodes.items():
        output = n.output if n.status.value == "succeeded" else None
        if isinstance(output, dict):
            output = {k: v for k, v in output.items() if k not in _VOLATILE}
        nodes[node_id] = (n.status.value, n.visit, output)
    return {"status": state.status, "failed_node": state.failed_node, "nodes": nodes}


async def test_ai_takeover_after_every_prefix_ends_like_the_uninterrupted_run(
    tmp_path: Path,
) -> None:
    async with FakeOpenAI(respond=_respond) as fake:
        config = load_ai_config(None, [f"fake={fake.base_url}#fake-model"])
        assert config is not None
        ai = OpenAiGateway(config, max_retries=0)
        flow = flow_of(FLOW)
        decisions = {"triage": APPROVED}
        whole = await run_engine(flow, tmp_path, gates=MemoryGates(decisions), ai=ai)
        full = whole.events
        assert_grammar(full)
        kinds = {e.WhichOneof("event") for e in full}
        assert {"node_token", "tool_call", "ai_invocation", "ai_routing_decision",
                "ai_review_required", "ai_review_resolved"} <= kinds  # fmt: skip
        expected = _summary(fold(flow, full, ai))
        assert expected["nodes"]["triage"][0] == "succeeded"
        review_at = next(i for i, e in enumerate(full) if e.HasField("ai_review_required"))
        for k in range(1, len(full)):
            prefix = full[:k]
            before = len(fake.requests)
            rest = await run_engine(
                flow, tmp_path, history=prefix, gates=MemoryGates(decisions), ai=ai
            )
            joined = prefix + rest.events
            where = f"taken over after seq {k} ({prefix[-1].WhichOneof('event')})"
            assert_grammar(joined)
            tokens = [e.node_token.token_index for e in joined if e.HasField("node_token")]
            assert tokens == list(range(len(tokens))), where
            assert _summary(fold(flow, joined, ai)) == expected, where
            if k > review_at:
                # The answer was held at review: waiting there again calls no model.
                assert len(fake.requests) == before, where
                assert [e.WhichOneof("event") for e in rest.events].count(
                    "ai_review_required"
                ) == 0, where
            interrupted = [
                e for e in rest.events
                if e.HasField("node_failed") and e.node_failed.error.reason == "INTERRUPTED"
            ]  # fmt: skip
            open_attempt = fold(flow, prefix, ai).nodes
            if any(
                n.attempt_open and n.gate == 0 and n.decided_kind == 0
                for n in open_attempt.values()
            ):
                # Mid-stream (or mid-tool): the attempt is closed and a new one starts.
                assert interrupted, where
        completed = full[-1].run_completed
        invocations = [e.ai_invocation for e in full if e.HasField("ai_invocation")]
        assert completed.input_token_count == sum(i.input_token_count for i in invocations)
        assert completed.status == events_pb2.RUN_STATUS_SUCCEEDED


GATED_FLOW = {
    "name": "ai-gated-tools",
    "nodes": [
        {"id": "agent", "ai": {"provider": "fake", "task": "zap a and b", "tools": ["test.zap"]}},
        {"id": "after", "action": {"adapter": "util", "action": "set", "params": {"value": 1}}},
    ],
    "edges": [{"source": "agent", "target": "after"}],
}
# The person approves call_a and rejects call_b, whichever life holds them.
CALL_DECISIONS = {"call_a": APPROVED, "call_b": events_pb2.GATE_DECISION_REJECTED}


def _zap_twice(request: dict[str, Any]) -> Reply:
    """Two destructive calls in one turn; then an answer that quotes what the tools said."""
    messages = request["messages"]
    if messages[-1]["role"] == "tool":
        results = [m["content"] for m in messages if m["role"] == "tool"]
        return text_reply(json.dumps(results))
    return tool_reply(
        ("call_a", "test__zap", json.dumps({"target": "a"})),
        ("call_b", "test__zap", json.dumps({"target": "b"})),
    )


async def test_ai_gated_tool_calls_taken_over_after_every_prefix_end_alike(
    tmp_path: Path,
) -> None:
    async with FakeOpenAI(respond=_zap_twice) as fake:
        config = load_ai_config(None, [f"fake={fake.base_url}#fake-model"])
        assert config is not None
        ai = OpenAiGateway(config, max_retries=0)
        flow = flow_of(GATED_FLOW)
        gates = MemoryGates(call_decisions=CALL_DECISIONS)
        whole = await run_engine(flow, tmp_path, gates=gates, ai=ai)
        full = whole.events
        assert_grammar(full)
        held = [e.awaiting_confirmation for e in full if e.HasField("awaiting_confirmation")]
        assert [h.tool_call_id for h in held] == ["call_a", "call_b"]
        resolved = [e.confirmation_resolved for e in full if e.HasField("confirmation_resolved")]
        assert [(r.tool_call_id, r.decision) for r in resolved] == list(CALL_DECISIONS.items())
        assert whole.zap.calls == ["agent:a"]  # b was rejected: it never ran
        answer = json.loads(fold(flow, full, ai).nodes["agent"].output["text"])
        assert answer[0] == json.dumps({"zapped": "a"}).replace(" ", "")
        assert answer[1].startswith("Error: rejected by tester")
        expected = _summary(fold(flow, full, ai))
        assert expected["nodes"]["agent"][0] == "succeeded"
        calls_before = len(fake.requests)
        assert calls_before == 2
        for k in range(1, len(full)):
            prefix = full[:k]
            state = fold(flow, prefix, ai)
            before = len(fake.requests)
            # The gates the dead life opened (rows are written before their events).
            lives_gates = MemoryGates(call_decisions=CALL_DECISIONS, contexts=dict(gates.contexts))
            rest = await run_engine(flow, tmp_path, history=prefix, gates=lives_gates, ai=ai)
            joined = prefix + rest.events
            where = f"taken over after seq {k} ({prefix[-1].WhichOneof('event')})"
            assert_grammar(joined)
            assert _summary(fold(flow, joined, ai)) == expected, where
            tokens = [e.node_token.token_index for e in joined if e.HasField("node_token")]
            assert tokens == list(range(len(tokens))), where
            waiting = state.nodes["agent"].tool_gate_open
            if waiting:
                # Held at call `waiting`: it waits there again, announced once, and the
                # model is asked only for the turn after the tool results.
                assert len(fake.requests) == before + 1, where
                again = [e for e in rest.events if e.HasField("awaiting_confirmation")]
                assert len(again) == (1 if waiting == 1 else 0), where
                assert not any(e.HasField("tool_call") for e in rest.events[:1]), where
                zapped = "a" if waiting == 1 else None
                assert rest.zap.calls == ([f"agent:{zapped}"] if zapped else []), where
