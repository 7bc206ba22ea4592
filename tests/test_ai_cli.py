"""The AI examples as a person runs them: `runwire run --watch`, `runwire review`, against the fake SSE server."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from _fake_openai import FakeOpenAI, text_reply, tool_reply
from conftest import Harness, wait_for_event

from runwire.v1 import events_pb2

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
AI_VARIANTS = {
    "node_token",
    "tool_call",
    "ai_invocation",
    "ai_routing_decision",
    "ai_review_required",
    "ai_review_resolved",
}


async def _cli(harness: Harness, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runwire.cli", *args, "--addr", harness.addr,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "RUNWIRE_PRINCIPAL": "tester"},
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _server(harness_factory: Any, fake: FakeOpenAI) -> Harness:
    h: Harness = await harness_factory(ai_providers=(f"local={fake.base_url}#fake-model",))
    return h


def _kinds(events: list[events_pb2.RunEvent]) -> set[str]:
    return {e.WhichOneof("event") or "?" for e in events}


async def test_ai_examples_run_and_their_streams_hold_every_ai_variant(
    harness_factory: Any,
) -> None:
    seen: set[str] = set()
    script = [
        # ai-summarise
        text_reply("- one\n", "- two\n", "- three"),
        # ai-agent: read the seeded file, then answer
        tool_reply(("call_1", "fs__read-file", json.dumps({"path": "notes/todo.txt"}))),
        text_reply("The list has three steps."),
        # ai-classify-review: doubtful, so held for review
        text_reply(json.dumps({"label": "bug", "confidence": 0.5})),
    ]
    async with FakeOpenAI(script) as fake:
        h = await _server(harness_factory, fake)

        code, out, err = await _cli(
            h, "run", str(EXAMPLES / "ai-summarise.yaml"), "--input", "text=hello",
            "--watch", "--plain",
        )  # fmt: skip
        assert code == 0, err
        assert "node_token summarise (visit 1, attempt 1)" in out
        assert "model tokens 11 in / 7 out" in out
        run_id = out.split()[1]
        seen |= _kinds(await h.stored(run_id))

        code, out, err = await _cli(
            h, "run", str(EXAMPLES / "ai-agent.yaml"), "--input", "topic=plan", "--watch", "--plain"
        )
        assert code == 0, err
        assert 'tool_call agent (visit 1, attempt 1) tool_call_id: "call_1"' in out
        run_id = out.split()[1]
        stored = await h.stored(run_id)
        seen |= _kinds(stored)
        # The tool read the seeded file in the run's workspace, and the model got it.
        tool_result = next(m for m in fake.requests[2]["messages"] if m["role"] == "tool")
        assert "1. bump version" in tool_result["content"]

        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "runwire.cli", "run", str(EXAMPLES / "ai-classify-review.yaml"),
            "--input", "ticket=it crashes", "--watch", "--plain", "--addr", h.addr,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        run_id = (await proc.stdout.readline()).decode().split()[1]
        await wait_for_event(h.stub, run_id, lambda e: e.HasField("ai_review_required"))
        fixed = Path(h.data_dir) / "fixed.json"
        fixed.write_text(json.dumps({"label": "bug", "confidence": 0.95}))
        code, out, err = await _cli(
            h, "review", run_id, "triage", "--approve", "--answer", str(fixed)
        )
        assert code == 0, err
        assert "approved with an edited answer" in out
        rest = (await proc.stdout.read()).decode()
        assert await proc.wait() == 0
        assert f"runwire review {run_id} triage --approve|--reject" in rest
        stored = await h.stored(run_id)
        seen |= _kinds(stored)
        route = next(
            e.node_succeeded
            for e in stored
            if e.node_id == "route" and e.HasField("node_succeeded")
        )
        assert json.loads(route.output_json) == "queue bug"
    assert seen >= AI_VARIANTS, AI_VARIANTS - seen


async def test_ai_review_cli_refuses_an_answer_that_is_not_json(
    harness_factory: Any, tmp_path: Path
) -> None:
    async with FakeOpenAI() as fake:
        h = await _server(harness_factory, fake)
        bad = tmp_path / "bad.json"
        bad.write_text("{nope")
        code, _, err = await _cli(h, "review", "run_x", "triage", "--approve", "--answer", str(bad))
    assert code == 2
    assert "not JSON" in err
