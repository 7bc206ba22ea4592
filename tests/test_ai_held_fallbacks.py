"""A takeover while an AI node's destructive tool call is held, when the new server
cannot go on from that call: its gate is closed by `system` (CANCELLED, never left
pending), the call never runs, and

- the stored conversation is unreadable, or the first server's sanitizer hid
  values it alone could put back (a cloud provider): the model is asked again
  from the start, in the same attempt;
- the new server lacks the node's provider: the node fails ADAPTER_DISABLED.

Real servers, real Postgres, the fake OpenAI server (as tests/test_ai_tool_gates.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from _fake_openai import FakeOpenAI, text_reply
from conftest import Harness, cases, wait_for_event
from test_ai import _server
from test_ai_tool_gates import _flow, _held, _script

from runwire.v1 import events_pb2, run_service_pb2

ASKED_AGAIN = "the server holding this call stopped; the model is asked again"
NO_PROVIDER = "this server cannot serve the node's provider"


async def _hold_then_stop(first: Harness) -> str:
    """Start the run on `first`, wait until call_a is held at its gate, stop `first`."""
    run = await first.start(_flow())
    await wait_for_event(first.stub, run.run_id, _held("call_a"))
    await first.server.stop(grace=0.5)
    return run.run_id


def _agent(events: list[events_pb2.RunEvent]) -> list[events_pb2.RunEvent]:
    return [e for e in events if e.node_id == "agent"]


async def _closed_by_system(h: Harness, run_id: str, why: str) -> list[events_pb2.RunEvent]:
    """The run's events once it ended, after checking call_a was closed by `system`
    and nothing was deleted or left pending."""
    events = await h.events(run_id)
    agent = _agent(events)
    closed = [e.confirmation_resolved for e in agent if e.HasField("confirmation_resolved")]
    assert [(c.tool_call_id, c.decision, c.principal, c.comment) for c in closed] == [
        ("call_a", events_pb2.GATE_DECISION_CANCELLED, "system", why)
    ]
    assert [e.tool_call.tool_call_id for e in agent if e.HasField("tool_call")] == ["call_a"]
    assert cases(agent).count("awaiting_confirmation") == 1
    assert cases(agent).count("node_started") == 1  # the same attempt went on
    run = (await h.stub.GetRun(run_service_pb2.GetRunRequest(run_id=run_id))).run
    assert list(run.pending_gates) == []
    workspace = h.data_dir.parent / "server0" / "workspaces" / run_id
    assert (workspace / "a.txt").exists()
    assert (workspace / "b.txt").exists()
    return events


def _asked_again(events: list[events_pb2.RunEvent], requests: list[dict[str, Any]]) -> None:
    """The second server asked the model again from the same opening messages, after
    closing the held call, and the node ended with that answer."""
    assert len(requests) == 2
    assert requests[1]["messages"] == requests[0]["messages"]
    agent = cases(_agent(events))
    closed_at = agent.index("confirmation_resolved")
    assert agent.count("ai_routing_decision") == 2
    assert agent.index("ai_routing_decision", closed_at) > closed_at
    assert agent[-1] == "node_succeeded"
    output = json.loads(_agent(events)[-1].node_succeeded.output_json)
    assert output["text"] == "Nothing deleted."
    assert events[-1].run_completed.status == events_pb2.RUN_STATUS_SUCCEEDED


@pytest.mark.parametrize("stored", ["{not json", "", '{"messages": []}'])
async def test_ai_takeover_with_an_unreadable_held_context_asks_the_model_again(
    harness_factory: Any, database_url: str, tmp_path: Path, stored: str
) -> None:
    async with FakeOpenAI([*_script()[:1], text_reply("Nothing deleted.")]) as fake:
        first = await _server(harness_factory, tmp_path, fake, lease_seconds=5.0)
        run_id = await _hold_then_stop(first)
        conn = await asyncpg.connect(database_url)
        try:
            changed = await conn.execute(
                "UPDATE gates SET context_json = $2 WHERE run_id = $1 AND call_index = 1",
                run_id,
                stored,
            )
        finally:
            await conn.close()
        assert changed == "UPDATE 1"
        second = await _server(harness_factory, tmp_path, fake, lease_seconds=5.0)
        events = await _closed_by_system(second, run_id, ASKED_AGAIN)
        requests = list(fake.requests)
    _asked_again(events, requests)


async def test_ai_takeover_after_the_sanitizer_hid_values_asks_the_model_again(
    harness_factory: Any, tmp_path: Path
) -> None:
    """A cloud provider saw `⟦SECRET_1⟧` for an e-mail address; only the first
    server's memory maps it back, so the second cannot go on from the held call."""
    key = tmp_path / "key"
    key.write_text("sk-test")
    async with FakeOpenAI([*_script()[:1], text_reply("Nothing deleted.")]) as fake:
        config = tmp_path / "cloud.yaml"
        config.write_text(
            json.dumps(
                {
                    "providers": {
                        "fake": {
                            "base_url": fake.base_url,
                            "default_model": "fake-model",
                            "locality": "cloud",
                            "api_key_file": str(key),
                        }
                    }
                }
            )
        )
        first: Harness = await harness_factory(ai_config=config, lease_seconds=5.0)
        flow = _flow()
        flow.nodes[2].ai.task += "; then tell bob@example.com"
        run = await first.start(flow)
        await wait_for_event(first.stub, run.run_id, _held("call_a"))
        await first.server.stop(grace=0.5)
        second: Harness = await harness_factory(ai_config=config, lease_seconds=5.0)
        events = await _closed_by_system(second, run.run_id, ASKED_AGAIN)
        requests = list(fake.requests)
    sent = json.dumps(requests[0]["messages"], ensure_ascii=False)
    assert "⟦SECRET_1⟧" in sent
    assert "bob@example.com" not in sent
    _asked_again(events, requests)


async def test_ai_takeover_without_the_provider_fails_the_node_after_closing_the_call(
    harness_factory: Any, tmp_path: Path
) -> None:
    async with FakeOpenAI(_script()) as fake:
        first = await _server(harness_factory, tmp_path, fake, lease_seconds=5.0)
        run_id = await _hold_then_stop(first)
        second: Harness = await harness_factory(lease_seconds=5.0)  # no AI provider at all
        events = await _closed_by_system(second, run_id, NO_PROVIDER)
        requests = list(fake.requests)
    assert len(requests) == 1  # not asked again
    agent = _agent(events)
    assert cases(agent)[-1] == "node_failed"
    assert agent[-1].node_failed.error.reason == "ADAPTER_DISABLED"
    assert events[-1].run_completed.status == events_pb2.RUN_STATUS_FAILED
