"""AI nodes end to end: a real server, real Postgres, a real OpenAI-protocol SSE server on loopback."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from _fake_openai import FakeOpenAI, Reply, chunk, text_reply, tool_reply
from conftest import Harness, cases, edge, error_reason, wait_for_event
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from opentelemetry import trace

from runwire.adapters.ai import AiConfigError, StreamAccumulator, load_ai_config
from runwire.v1 import events_pb2, flow_pb2, run_service_pb2

# Loose bounds only guard against a hang; every wait is on an event.
GUARD = 30.0


def ai_node(node_id: str, task: str, **fields: Any) -> flow_pb2.Node:
    node = flow_pb2.Node(id=node_id)
    if "retry_policy" in fields:
        node.retry_policy.CopyFrom(fields.pop("retry_policy"))
    node.ai.provider = fields.pop("provider", "fake")
    node.ai.task = task
    for key, value in fields.items():
        if key in ("tools", "labels"):
            getattr(node.ai, key).extend(value)
        else:
            setattr(node.ai, key, value)
    return node


def _config(tmp_path: Path, fake: FakeOpenAI, **extra: Any) -> Path:
    config = {
        "providers": {"fake": {"base_url": fake.base_url, "default_model": "fake-model"}},
        "aliases": {"fast": "fake/fake-model"},
        # USD per million tokens: 11 prompt tokens at 2.5 and 7 completion tokens at 10
        # cost 27.5 + 70 = 97.5 micro-dollars, 98 rounded half up.
        "prices": {"fake/fake-model": {"input": "2.5", "output": "10"}},
        **extra,
    }
    path = tmp_path / "ai.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


async def _server(harness_factory: Any, tmp_path: Path, fake: FakeOpenAI, **kw: Any) -> Harness:
    h: Harness = await harness_factory(ai_config=_config(tmp_path, fake), **kw)
    return h


def _violations(exc: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(exc)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    next(d for d in status.details if d.Is(bad.DESCRIPTOR)).Unpack(bad)
    return [v.field for v in bad.field_violations]


def _of(events: list[events_pb2.RunEvent], case: str) -> list[Any]:
    return [getattr(e, case) for e in events if e.WhichOneof("event") == case]


# -- generate ---------------------------------------------------------------------


async def test_ai_generate_streams_tokens_and_records_the_audit_trail(
    harness_factory: Any, tmp_path: Path
) -> None:
    async with FakeOpenAI([text_reply("Hello", ", ", "wörld")]) as fake:
        h = await _server(harness_factory, tmp_path, fake)
        flow = flow_pb2.Flow(
            name="gen",
            nodes=[
                ai_node("write", "Say hello to {{ inputs.who }}", model="fast", prompt="Be brief")
            ],
        )
        inputs = struct_pb2.Struct()
        inputs.update({"who": "the world"})
        run = await h.start(flow, inputs=inputs)
        events = await h.events(run.run_id)
    kinds = cases(events)
    node_events = [
        k for k in kinds if k not in {"run_started", "run_status_changed", "run_completed"}
    ]
    assert node_events[:2] == ["node_started", "ai_routing_decision"]
    assert node_events[-2:] == ["ai_invocation", "node_succeeded"]
    assert set(node_events[2:-2]) == {"node_token"}
    started = _of(events, "node_started")[0]
    assert started.adapter == "ai"
    assert json.loads(started.params_json)["task"] == "Say hello to the world"
    routing = _of(events, "ai_routing_decision")[0]
    assert (routing.route, routing.provider, routing.model, routing.requested_model) == (
        events_pb2.AI_ROUTE_MODEL, "fake", "fake-model", "fast",
    )  # fmt: skip
    assert "alias fast" in routing.reason
    tokens = _of(events, "node_token")
    assert "".join(t.delta for t in tokens) == "Hello, wörld"
    assert [t.token_index for t in tokens] == list(range(len(tokens)))
    inv = _of(events, "ai_invocation")[0]
    assert (inv.input_token_count, inv.output_token_count, inv.cost_micros) == (11, 7, 98)
    assert (inv.finish_reason, inv.turn, inv.input_preview) == ("stop", 1, "Say hello to the world")
    output = json.loads(_of(events, "node_succeeded")[0].output_json)
    assert output["text"] == "Hello, wörld"
    assert output["cost_micros"] == 98
    assert output["turns"] == 1
    done = _of(events, "run_completed")[0]
    assert (done.input_token_count, done.output_token_count, done.cost_micros) == (11, 7, 98)
    # What was sent: the rendered messages, streamed with usage requested.
    sent = fake.requests[0]
    assert sent["model"] == "fake-model"
    assert sent["stream"] is True
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "Say hello to the world"},
    ]


async def test_ai_token_index_is_gapless_across_nodes_and_attempts(
    harness_factory: Any, tmp_path: Path
) -> None:
    broken = Reply([chunk(content="par"), chunk(content="tial")], cut_after=2)
    script = [text_reply("a", "b"), broken, text_reply("c", "d", "e")]
    async with FakeOpenAI(script) as fake:
        h = await _server(harness_factory, tmp_path, fake)
        retry = flow_pb2.RetryPolicy(max_attempts=2)
        retry.initial_backoff.FromMilliseconds(1)
        flow = flow_pb2.Flow(
            name="gapless",
            nodes=[ai_node("one", "first"), ai_node("two", "second", retry_policy=retry)],
            edges=[edge("one", "two")],
        )
        run = await h.start(flow)
        events = await h.events(run.run_id)
    tokens = _of(events, "node_token")
    assert [t.token_index for t in tokens] == list(range(len(tokens)))
    assert "".join(t.delta for t in tokens).endswith("cde")
    failed = _of(events, "node_failed")[0]
    assert failed.error.reason == "AI_STREAM_BROKEN"
    assert failed.will_retry
    # The broken call is audited too (it was billed and its data left).
    assert len(_of(events, "ai_invocation")) == 3
    assert _of(events, "run_completed")[0].status == events_pb2.RUN_STATUS_SUCCEEDED


# -- tool loop ---------------------------------------------------------------------


async def test_ai_tool_loop_runs_actions_and_feeds_results_and_errors_back(
    harness_factory: Any, tmp_path: Path
) -> None:
    script = [
        tool_reply(
            ("call_a", "util__set", json.dumps({"value": {"answer": 42}})),
            ("call_b", "fs__read-file", json.dumps({"path": "../../etc/passwd"})),
            ("call_c", "fs__read-file", "{not json"),
        ),
        text_reply("The answer is 42."),
    ]
    async with FakeOpenAI(script) as fake:
        h = await _server(harness_factory, tmp_path, fake)
        flow = flow_pb2.Flow(
            name="tools",
            nodes=[ai_node("agent", "find the answer", tools=["util.set", "fs.read-file"])],
        )
        run = await h.start(flow)
        events = await h.events(run.run_id)
        sent = fake.requests
    calls = _of(events, "tool_call")
    assert [(c.tool_call_id, c.tool_name) for c in calls] == [
        ("call_a", "util.set"), ("call_b", "fs.read-file"), ("call_c", "fs.read-file"),
    ]  # fmt: skip
    assert json.loads(calls[0].arguments_json) == {"value": {"answer": 42}}
    # The sandbox refusal is an event, and the node still succeeds: the model got the error.
    assert _of(events, "sandbox_violation")
    assert [i.turn for i in _of(events, "ai_invocation")] == [1, 2]
    output = json.loads(_of(events, "node_succeeded")[0].output_json)
    assert (output["turns"], output["tool_calls"], output["text"]) == (2, 3, "The answer is 42.")
    # The first request offered the tools by their function names.
    offered = [t["function"]["name"] for t in sent[0]["tools"]]
    assert offered == ["util__set", "fs__read-file"]
    # The second request carries the assistant's calls and each tool's result.
    results = {m["tool_call_id"]: m["content"] for m in sent[1]["messages"] if m["role"] == "tool"}
    assert json.loads(results["call_a"]) == {"answer": 42}
    assert results["call_b"].startswith("Error: ")
    assert results["call_c"].startswith("Error: arguments are not JSON")
    assert [c["id"] for c in sent[1]["messages"][1]["tool_calls"]] == ["call_a", "call_b", "call_c"]


async def test_ai_more_turns_than_max_turns_fails_with_max_turns(
    harness_factory: Any, tmp_path: Path
) -> None:
    call = ("call_1", "util__set", json.dumps({"value": 1}))
    async with FakeOpenAI([tool_reply(call), tool_reply(call)]) as fake:
        h = await _server(harness_factory, tmp_path, fake)
        flow = flow_pb2.Flow(
            name="turns", nodes=[ai_node("agent", "loop", tools=["util.set"], max_turns=2)]
        )
        run = await h.start(flow)
        events = await h.events(run.run_id)
    assert _of(events, "node_failed")[0].error.reason == "MAX_TURNS"
    assert len(fake.requests) == 2
    assert not any(e.HasField("iteration_capped") for e in events)


# -- faults ------------------------------------------------------------------------

_FAULTS = [
    pytest.param(
        [Reply(status=401, body={"error": {"message": "bad key"}})], "AI_AUTH", 1, id="401"
    ),
    pytest.param(
        [Reply(status=500, body={"error": {"message": "boom"}})] * 3,
        "AI_PROVIDER_ERROR",
        3,
        id="5xx",
    ),
    pytest.param(
        [Reply(status=400, body={"error": {"message": "context length exceeded"}})],
        "AI_BAD_REQUEST",
        1,
        id="400-context-length",
    ),
    pytest.param(
        [Reply([chunk(content="half"), chunk(content=" an answer")], cut_after=1)],
        "AI_STREAM_BROKEN",
        1,
        id="connection-cut",
    ),
    pytest.param(
        [Reply([chunk(content="no end"), chunk(content="!")])],
        "AI_STREAM_BROKEN",
        1,
        id="done-before-finish-reason",
    ),
    pytest.param(
        [Reply([chunk(content="x"), chunk(finish_reason="stop")], malformed_after=1)],
        "AI_STREAM_BROKEN",
        1,
        id="malformed-chunk",
    ),
    pytest.param(
        [Reply([chunk(content="…"), chunk(finish_reason="content_filter")])],
        "AI_CONTENT_FILTER",
        1,
        id="content-filter",
    ),
]


@pytest.mark.parametrize(("script", "reason", "requests"), _FAULTS)
async def test_ai_provider_fault_fails_the_node_with_its_reason(
    harness_factory: Any, tmp_path: Path, script: list[Reply], reason: str, requests: int
) -> None:
    async with FakeOpenAI(script) as fake:
        h = await _server(harness_factory, tmp_path, fake)
        flow = flow_pb2.Flow(name="fault", nodes=[ai_node("ask", "hello")])
        run = await h.start(flow)
        events = await h.events(run.run_id)
    failed = _of(events, "node_failed")[0]
    assert failed.error.reason == reason, failed.error.message
    assert "fake" in failed.error.message or reason == "AI_CONTENT_FILTER"
    # The failed call is still audited, once per model call of the node.
    assert len(_of(events, "ai_invocation")) == 1
    assert len(fake.requests) == requests
    assert _of(events, "run_completed")[0].status == events_pb2.RUN_STATUS_FAILED


async def test_ai_rate_limit_is_retried_after_retry_after(
    harness_factory: Any, tmp_path: Path
) -> None:
    limited = Reply(status=429, headers={"retry-after": "0"}, body={"error": {"message": "slow"}})
    async with FakeOpenAI([limited, text_reply("ok")]) as fake:
        h = await _server(harness_factory, tmp_path, fake)
        run = await h.start(flow_pb2.Flow(name="rl", nodes=[ai_node("ask", "hello")]))
        events = await h.events(run.run_id)
    assert len(fake.requests) == 2
    assert json.loads(_of(events, "node_succeeded")[0].output_json)["text"] == "ok"


async def test_ai_rate_limit_that_persists_fails_with_ai_rate_limited(
    harness_factory: Any, tmp_path: Path
) -> None:
    limited = Reply(status=429, headers={"retry-after": "0"}, body={"error": {"message": "slow"}})
    async with FakeOpenAI([limited] * 3) as fake:
        h = await _server(harness_factory, tmp_path, fake)
        run = await h.start(flow_pb2.Flow(name="rl", nodes=[ai_node("ask", "hello")]))
        events = await h.events(run.run_id)
    assert _of(events, "node_failed")[0].error.reason == "AI_RATE_LIMITED"
    assert len(fake.requests) == 3


async def test_ai_cancel_mid_stream_closes_the_model_connection(
    harness_factory: Any, tmp_path: Path
) -> None:
    stalled = Reply([chunk(content="thinking"), chunk(finish_reason="stop")], stall_after=1)
    async with FakeOpenAI([stalled]) as fake:
        h = await _server(harness_factory, tmp_path, fake)
        run = await h.start(flow_pb2.Flow(name="cancel", nodes=[ai_node("ask", "hello")]))
        await asyncio.wait_for(fake.streaming.wait(), GUARD)
        await h.stub.CancelRun(run_service_pb2.CancelRunRequest(run_id=run.run_id))
        await asyncio.wait_for(fake.disconnected.wait(), GUARD)
        events = await h.events(run.run_id)
    assert _of(events, "node_failed")[0].error.reason == "CANCELLED"
    assert _of(events, "run_completed")[0].status == events_pb2.RUN_STATUS_CANCELLED


async def test_ai_tokens_are_durable_before_the_answer_ends(
    harness_factory: Any, tmp_path: Path
) -> None:
    """A watcher sees the first NodeToken while the model is still streaming."""
    stalled = Reply([chunk(content="early " * 100), chunk(finish_reason="stop")], stall_after=1)
    async with FakeOpenAI([stalled]) as fake:
        h = await _server(harness_factory, tmp_path, fake)
        run = await h.start(flow_pb2.Flow(name="durable", nodes=[ai_node("ask", "hello")]))
        token = await wait_for_event(h.stub, run.run_id, lambda e: e.HasField("node_token"))
        assert token.node_token.delta.startswith("early ")
        assert token.node_token.token_index == 0
        await h.stub.CancelRun(run_service_pb2.CancelRunRequest(run_id=run.run_id))
        await h.events(run.run_id)


# -- bad input -----------------------------------------------------------------------


async def test_ai_node_without_a_configured_provider_is_adapter_disabled(harness: Harness) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await harness.start(flow_pb2.Flow(name="x", nodes=[ai_node("ask", "hello")]))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(err.value) == "ADAPTER_DISABLED"


async def test_ai_bad_nodes_name_their_fields(harness_factory: Any, tmp_path: Path) -> None:
    async with FakeOpenAI() as fake:
        h = await _server(harness_factory, tmp_path, fake)
        flow = flow_pb2.Flow(
            name="bad",
            nodes=[
                ai_node("a", "hi", provider="nope"),
                ai_node("b", " "),
                ai_node("c", "hi", tools=["fs.nope", "util.set", "util.set", "bad tool"]),
                ai_node("d", "hi", max_turns=101),
                ai_node("e", "{{ nodes.f.output }}"),
                ai_node("f", "hi", labels=["x", "y"]),
            ],
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.start(flow)
        assert fake.requests == []
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = _violations(err.value)
    for expected in (
        "flow.nodes[0].ai.provider",
        "flow.nodes[1].ai.task",
        "flow.nodes[2].ai.tools[0]",
        "flow.nodes[2].ai.tools[2]",
        "flow.nodes[2].ai.tools[3]",
        "flow.nodes[3].ai.max_turns",
        "flow.nodes[5].ai.labels",
    ):
        assert expected in fields, (expected, fields)


async def test_ai_local_only_refuses_cloud_providers(
    harness_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_CLOUD_KEY", "sk-test")
    path = tmp_path / "cloud.yaml"
    path.write_text(
        json.dumps(
            {
                "providers": {
                    "cloud": {
                        "base_url": "https://api.example.com/v1",
                        "api_key_env": "FAKE_CLOUD_KEY",
                        "default_model": "m",
                    }
                }
            }
        )
    )
    h = await harness_factory(ai_config=path, ai_local_only=True)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.start(flow_pb2.Flow(name="x", nodes=[ai_node("ask", "hi", provider="cloud")]))
    assert error_reason(err.value) == "ADAPTER_DISABLED"
    assert "local-only" in (err.value.details() or "")


# -- configuration and the accumulator ------------------------------------------------------


def test_ai_config_flag_form_builds_a_local_provider() -> None:
    config = load_ai_config(None, ["local=http://127.0.0.1:8080/v1#qwen"])
    assert config is not None
    p = config.providers["local"]
    assert (p.base_url, p.default_model, p.cloud, config.default_provider) == (
        "http://127.0.0.1:8080/v1", "qwen", False, "local",
    )  # fmt: skip
    assert load_ai_config(None, []) is None


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"providers": {"c": {"base_url": "https://x.example/v1"}}}, "'c' is cloud but has no key"),
        (
            {
                "providers": {
                    "c": {"base_url": "https://x.example/v1", "api_key_env": "RW_NOPE_KEY"}
                }
            },
            "'RW_NOPE_KEY', which is not set",
        ),
        ({"providers": {"c": {"base_url": "ftp://x"}}}, "provider 'c': base_url"),
        ({"providers": {"c": {"base_url": "http://127.0.0.1:1", "locality": "mars"}}}, "locality"),
        ({"providers": {"c": {"base_url": "http://127.0.0.1:1", "colour": 1}}}, "'colour'"),
        ({"providers": {}}, "at least one provider"),
        (
            {"providers": {"c": {"base_url": "http://127.0.0.1:1"}}, "default_provider": "d"},
            "default_provider 'd'",
        ),
        (
            {
                "providers": {"c": {"base_url": "http://127.0.0.1:1"}},
                "prices": {"c/m": {"input": "x"}},
            },
            "prices['c/m']",
        ),
        (
            {"providers": {"c": {"base_url": "http://127.0.0.1:1"}}, "sanitize": ["("]},
            "sanitize[0] is not a regular expression",
        ),
    ],
)
def test_ai_config_problem_names_provider_and_field(
    tmp_path: Path, config: dict[str, Any], needle: str
) -> None:
    path = tmp_path / "ai.yaml"
    path.write_text(json.dumps(config))
    with pytest.raises(AiConfigError) as err:
        load_ai_config(path)
    assert needle in str(err.value)


def test_ai_bad_config_stops_serve_at_start(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "ai.yaml"
    path.write_text("providers: {c: {base_url: 'https://x.example/v1'}}")
    proc = subprocess.run(
        [sys.executable, "-m", "runwire.cli", "serve", "--ai-config", str(path), "--data-dir",
         str(tmp_path / "d"), "--database-url", "postgresql://127.0.0.1:1/none"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "provider 'c' is cloud but has no key" in proc.stderr


def test_ai_accumulator_tolerates_real_server_deviations() -> None:
    acc = StreamAccumulator()
    frags = [
        # llama.cpp repeats the name in every fragment; index 0 reused by a new id.
        {"index": 0, "id": "a", "function": {"name": "fs__read-file", "arguments": '{"pa'}},
        {"index": 0, "function": {"name": "fs__read-file", "arguments": 'th":"x"}'}},
        {"index": 0, "id": "b", "function": {"name": "util__set", "arguments": "{}"}},
        {"index": 1, "function": {"name": "util__fail", "arguments": "{}"}},
    ]
    for frag in frags:
        acc.add({"choices": [{"index": 0, "delta": {"tool_calls": [frag]}}]})
    assert not acc.finished
    acc.add({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    calls = acc.tool_calls()
    assert [(c.call_id, c.name, c.arguments) for c in calls] == [
        ("a", "fs__read-file", '{"path":"x"}'),
        ("b", "util__set", "{}"),
        ("call_2", "util__fail", "{}"),
    ]
    assert acc.finished
    assert (acc.input_tokens, acc.output_tokens) == (0, 0)


# -- contracts, routes, the review gate ----------------------------------------------------

CONTRACT = {
    "type": "object",
    "required": ["label", "confidence"],
    "properties": {
        "label": {"type": "string", "enum": ["bug", "feature"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "escalate": {"type": "boolean"},
    },
}


def _classifier_flow(**policy: Any) -> flow_pb2.Flow:
    node = ai_node("triage", "Classify: the app crashes")
    node.ai.contract.update(CONTRACT)
    if policy:
        node.ai.review_policy.CopyFrom(
            flow_pb2.AiReviewPolicy(
                confidence_pointer="/confidence", escalate_pointer="/escalate", **policy
            )
        )
    return flow_pb2.Flow(
        name="triage",
        nodes=[node, util_node_set("fallback")],
        edges=[edge("triage", "fallback", flow_pb2.EDGE_CONDITION_FAILURE)],
    )


def util_node_set(node_id: str) -> flow_pb2.Node:
    node = flow_pb2.Node(id=node_id)
    node.action.adapter, node.action.action = "util", "set"
    node.action.params.update({"value": "fallback"})
    return node


def _routes(events: list[events_pb2.RunEvent]) -> list[str]:
    return [
        events_pb2.AiRoute.Name(r.route).removeprefix("AI_ROUTE_")
        for r in _of(events, "ai_routing_decision")
    ]


async def test_ai_contract_answer_with_high_confidence_is_auto_approved(
    harness_factory: Any, tmp_path: Path
) -> None:
    answer = json.dumps({"label": "bug", "confidence": 0.93})
    async with FakeOpenAI([text_reply(answer)]) as fake:
        h = await _server(harness_factory, tmp_path, fake)
        run = await h.start(_classifier_flow(approve_at=0.8, suppress_below=0.3))
        events = await h.events(run.run_id)
        sent = fake.requests[0]
    assert _routes(events) == ["MODEL", "AUTO_APPROVE"]
    decision = _of(events, "ai_routing_decision")[1]
    assert (decision.confidence, decision.threshold) == (pytest.approx(0.93), "approve_at=0.8")
    assert decision.contract_version.startswith("sha256:")
    assert _of(events, "ai_invocation")[0].contract_version == decision.contract_version
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"] == CONTRACT
    output = json.loads(_of(events, "node_succeeded")[0].output_json)
    assert output["json"] == {"label": "bug", "confidence": 0.93}
    assert [e.node_id for e in events if e.HasField("node_skipped")] == ["fallback"]


async def test_ai_low_confidence_is_suppressed_and_takes_the_failure_edge(
    harness_factory: Any, tmp_path: Path
) -> None:
    answer = json.dumps({"label": "feature", "confidence": 0.1})
    async with FakeOpenAI([text_reply(answer)]) as fake:
        h = await _server(harness_factory, tmp_path, fake)
        run = await h.start(_classifier_flow(approve_at=0.8, suppress_below=0.3))
        events = await h.events(run.run_id)
    assert _routes(events) == ["MODEL", "SUPPRESS"]
    failed = _of(events, "node_failed")[0]
    assert failed.error.reason == "AI_SUPPRESSED"
    assert not failed.will_retry
    assert "fallback" in _outputs(events)


def _outputs(events: list[events_pb2.RunEvent]) -> dict[str, Any]:
    return {
        e.node_id: json.loads(e.node_succeeded.output_json)
        for e in events
        if e.HasField("node_succeeded")
    }


async def test_ai_contract_violation_gets_one_repair_turn_then_review_with_an_edited_answer(
    harness_factory: Any, tmp_path: Path
) -> None:
    script = [text_reply("It is a bug, I think."), text_reply(json.dumps({"label": 3}))]
    async with FakeOpenAI(script) as fake:
        h = await _server(harness_factory, tmp_path, fake)
        run = await h.start(_classifier_flow())
        held = await wait_for_event(h.stub, run.run_id, lambda e: e.HasField("ai_review_required"))
        got = (await h.stub.GetRun(run_service_pb2.GetRunRequest(run_id=run.run_id))).run
        assert [(g.node_id, g.kind) for g in got.pending_gates] == [
            ("triage", run_service_pb2.GATE_KIND_REVIEW)
        ]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.stub.ResolveReview(
                run_service_pb2.ResolveReviewRequest(
                    run_id=run.run_id, node_id="triage", approve=True, output_json='{"label":"x"}'
                )
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert set(_violations(err.value)) == {"output_json"}
        edited = json.dumps({"label": "bug", "confidence": 1})
        await h.stub.ResolveReview(
            run_service_pb2.ResolveReviewRequest(
                run_id=run.run_id, node_id="triage", approve=True, output_json=edited
            )
        )
        events = await h.events(run.run_id)
        sent = fake.requests
    assert held.ai_review_required.output_json == '{"label":3}'
    assert held.ai_review_required.violations
    assert held.ai_review_required.reasoning.startswith("CONTRACT_VIOLATION")
    assert _routes(events) == ["MODEL", "CONTRACT_VIOLATION"]
    # The repair turn told the model what it broke.
    repair = sent[1]["messages"][-1]
    assert repair["role"] == "user"
    assert "not JSON" in repair["content"]
    assert [i.turn for i in _of(events, "ai_invocation")] == [1, 2]
    resolved = _of(events, "ai_review_resolved")[0]
    assert (resolved.decision, resolved.output_json) == (
        events_pb2.GATE_DECISION_APPROVED, '{"confidence":1,"label":"bug"}',
    )  # fmt: skip
    assert _outputs(events)["triage"]["json"] == {"label": "bug", "confidence": 1}


async def test_ai_review_rejected_fails_the_node_with_review_rejected(
    harness_factory: Any, tmp_path: Path
) -> None:
    answer = json.dumps({"label": "bug", "confidence": 0.5})
    async with FakeOpenAI([text_reply(answer)]) as fake:
        h = await _server(harness_factory, tmp_path, fake)
        run = await h.start(_classifier_flow(approve_at=0.8, suppress_below=0.3))
        await wait_for_event(h.stub, run.run_id, lambda e: e.HasField("ai_review_required"))
        await h.stub.ResolveReview(
            run_service_pb2.ResolveReviewRequest(run_id=run.run_id, node_id="triage", approve=False)
        )
        events = await h.events(run.run_id)
    assert _routes(events) == ["MODEL", "HUMAN_REVIEW"]
    assert _of(events, "ai_review_required")[0].confidence == pytest.approx(0.5)
    assert _of(events, "node_failed")[0].error.reason == "REVIEW_REJECTED"


async def test_ai_review_gate_survives_restart_without_a_new_model_call(
    harness_factory: Any, tmp_path: Path
) -> None:
    """A server holding an answer at review stops; the next one waits at the same
    gate (not announced twice) and calls no model, and the approval finishes the node."""
    answer = json.dumps({"label": "bug", "confidence": 0.6, "escalate": True})
    async with FakeOpenAI([text_reply(answer)]) as fake:
        first = await _server(harness_factory, tmp_path, fake, lease_seconds=0.5)
        run = await first.start(_classifier_flow(approve_at=0.5, suppress_below=0.3))
        await wait_for_event(first.stub, run.run_id, lambda e: e.HasField("ai_review_required"))
        await first.server.stop(grace=0.5)
        second = await _server(harness_factory, tmp_path, fake, lease_seconds=0.5)
        got = (await second.stub.GetRun(run_service_pb2.GetRunRequest(run_id=run.run_id))).run
        assert [g.node_id for g in got.pending_gates] == ["triage"]
        await second.stub.ResolveReview(
            run_service_pb2.ResolveReviewRequest(run_id=run.run_id, node_id="triage", approve=True)
        )
        events = await second.events(run.run_id)
        assert len(fake.requests) == 1
    assert cases(events).count("ai_review_required") == 1
    assert _routes(events) == ["MODEL", "HUMAN_REVIEW"]
    assert _of(events, "ai_routing_decision")[1].threshold == "escalate=/escalate"
    assert _outputs(events)["triage"]["json"]["label"] == "bug"
    assert events[-1].run_completed.status == events_pb2.RUN_STATUS_SUCCEEDED


async def test_ai_contract_bad_input_names_fields(harness_factory: Any, tmp_path: Path) -> None:
    async with FakeOpenAI() as fake:
        h = await _server(harness_factory, tmp_path, fake)
        no_edge = ai_node("a", "hi")
        no_edge.ai.contract.update({"type": "object"})
        bad_schema = ai_node("b", "hi")
        bad_schema.ai.contract.update({"type": "frog"})
        bad_policy = ai_node("c", "hi")
        bad_policy.ai.review_policy.CopyFrom(
            flow_pb2.AiReviewPolicy(
                confidence_pointer="confidence", approve_at=0.2, suppress_below=1.5
            )
        )
        flow = flow_pb2.Flow(
            name="bad",
            nodes=[no_edge, bad_schema, bad_policy, util_node_set("z")],
            edges=[
                edge("b", "z", flow_pb2.EDGE_CONDITION_FAILURE),
                edge("c", "z", flow_pb2.EDGE_CONDITION_ALWAYS),
            ],
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.start(flow)
    fields = _violations(err.value)
    for expected in (
        "flow.nodes[0].ai",
        "flow.nodes[1].ai.contract.type",
        "flow.nodes[2].ai.review_policy.confidence_pointer",
        "flow.nodes[2].ai.review_policy.suppress_below",
    ):
        assert expected in fields, (expected, fields)
    assert "flow.nodes[1].ai" not in fields
    assert "flow.nodes[2].ai" not in fields


async def test_ai_spans_chat_and_execute_tool_under_the_node(
    harness_factory: Any, tmp_path: Path
) -> None:
    script = [tool_reply(("call_a", "util__set", json.dumps({"value": 1}))), text_reply("ok")]
    async with FakeOpenAI(script) as fake:
        h = await _server(harness_factory, tmp_path, fake)
        flow = flow_pb2.Flow(name="spans", nodes=[ai_node("agent", "go", tools=["util.set"])])
        run = await h.start(flow)
        await h.events(run.run_id)
    spans = h.spans.get_finished_spans()
    node = next(s for s in spans if s.name == "ExecuteNode:agent")
    assert node.context is not None
    children = [s for s in spans if s.parent and s.parent.span_id == node.context.span_id]
    assert [s.name for s in sorted(children, key=lambda s: s.start_time or 0)] == [
        "chat fake-model", "execute_tool util.set", "chat fake-model",
    ]  # fmt: skip
    chat = children[0] if children[0].name.startswith("chat") else children[1]
    attrs = dict(chat.attributes or {})
    assert chat.kind == trace.SpanKind.CLIENT
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "fake"
    assert attrs["gen_ai.request.model"] == "fake-model"
    assert attrs["gen_ai.usage.input_tokens"] in (20, 11)
    tool = next(s for s in children if s.name.startswith("execute_tool"))
    assert dict(tool.attributes or {})["gen_ai.tool.call.id"] == "call_a"
    # Prompts and answers are not span attributes (without --ai-capture-content).
    assert "gen_ai.input.messages" not in attrs
    assert not any(v == "go" for s in children for v in (s.attributes or {}).values())


async def test_ai_takeover_by_a_server_without_the_provider_skips_the_node_saying_why(
    harness_factory: Any, tmp_path: Path
) -> None:
    async with FakeOpenAI() as fake:
        first = await _server(harness_factory, tmp_path, fake, lease_seconds=0.5)
        flow = flow_pb2.Flow(
            name="moved",
            nodes=[
                flow_pb2.Node(id="gate", approval=flow_pb2.ApprovalNode(message="go?")),
                ai_node("ask", "hello"),
            ],
            edges=[edge("gate", "ask")],
        )
        run = await first.start(flow)
        await wait_for_event(first.stub, run.run_id, lambda e: e.HasField("approval_requested"))
        await first.server.stop(grace=0.5)
        second: Harness = await harness_factory(lease_seconds=0.5)  # no AI configured
        await second.stub.ResolveApproval(
            run_service_pb2.ResolveApprovalRequest(run_id=run.run_id, node_id="gate", approve=True)
        )
        events = await second.events(run.run_id)
        assert fake.requests == []
    skipped = next(e for e in events if e.HasField("node_skipped"))
    assert skipped.node_id == "ask"
    assert "no AI provider is configured on this server" in skipped.node_skipped.reason


# -- privacy ------------------------------------------------------------------------------

SECRET_KEY = "sk-live0123456789abcdefXYZ"


async def test_ai_cloud_provider_sees_placeholders_and_the_tool_gets_the_real_value(
    harness_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_CLOUD_KEY", "cloud-api-key")
    script = [
        tool_reply(
            ("call_w", "fs__write-file", json.dumps({"path": "key.txt", "content": "⟦SECRET_1⟧"}))
        ),
        text_reply("Saved ⟦SECRET_1⟧ for ⟦SECRET_2⟧."),
    ]
    async with FakeOpenAI(script) as fake:
        config = tmp_path / "cloud.yaml"
        config.write_text(
            json.dumps(
                {
                    "providers": {
                        "cloud": {
                            "base_url": fake.base_url,
                            "locality": "cloud",
                            "api_key_env": "FAKE_CLOUD_KEY",
                            "default_model": "fake-model",
                        }
                    },
                    "sanitize": ["ACME-[0-9]{6}"],
                }
            )
        )
        h: Harness = await harness_factory(ai_config=config)
        task = f"Store the key {SECRET_KEY} for bob@example.com in key.txt (ticket ACME-123456)"
        flow = flow_pb2.Flow(
            name="private",
            nodes=[ai_node("agent", task, provider="cloud", tools=["fs.write-file"])],
        )
        run = await h.start(flow)
        events = await h.events(run.run_id)
        sent = json.dumps(fake.requests)
        headers = fake.headers
    # Nothing that left the server holds the secrets; the key header is the provider's own.
    assert SECRET_KEY not in sent
    assert "bob@example.com" not in sent
    assert "ACME-123456" not in sent  # an operator pattern
    assert fake.requests[0]["messages"][0]["content"] == (
        "Store the key ⟦SECRET_1⟧ for ⟦SECRET_2⟧ in key.txt (ticket ⟦SECRET_3⟧)"
    )
    assert headers[0]["authorization"] == "Bearer cloud-api-key"
    # The events keep what crossed the boundary...
    stored = json.dumps([str(e) for e in events])
    assert SECRET_KEY not in "".join(t.delta for t in _of(events, "node_token"))
    assert "⟦SECRET_1⟧" in _of(events, "tool_call")[0].arguments_json
    assert "cloud-api-key" not in stored
    # ...while the tool wrote the real value and the answer is rehydrated.
    written = h.data_dir / "workspaces" / run.run_id / "key.txt"
    assert written.read_text() == SECRET_KEY
    output = json.loads(_of(events, "node_succeeded")[0].output_json)
    assert output["text"] == f"Saved {SECRET_KEY} for bob@example.com."


def test_ai_sanitizer_hides_each_kind_of_secret_stably() -> None:
    from runwire.engine._sanitize import Sanitizer

    s = Sanitizer()
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJlLXNpZw"
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJB\n-----END RSA PRIVATE KEY-----"
    text = (
        f"{pem} token {jwt} header Authorization: Bearer abcdef123456 "
        "url https://user:hunter2@db.example.com/x card 4111 1111 1111 1111 "
        "not a card 4111 1111 1111 1112 mail a.b@c.io again a.b@c.io AKIAABCDEFGHIJKLMNOP"
    )
    hidden = s.hide(text)
    for secret in (pem, jwt, "abcdef123456", "user:hunter2", "4111 1111 1111 1111", "a.b@c.io",
                   "AKIAABCDEFGHIJKLMNOP"):  # fmt: skip
        assert secret not in hidden, secret
    assert "4111 1111 1111 1112" in hidden  # fails the Luhn check
    assert "Bearer ⟦SECRET_" in hidden
    assert "https://⟦SECRET_" in hidden
    assert hidden.count(s.hide("a.b@c.io")) == 2  # stable within the attempt
    assert s.reveal(hidden) == text


# -- classify and embed -----------------------------------------------------------------


async def test_ai_classify_picks_a_label_with_confidence(
    harness_factory: Any, tmp_path: Path
) -> None:
    answer = json.dumps({"label": "bug", "confidence": 0.875})
    async with FakeOpenAI([text_reply(answer)]) as fake:
        h = await _server(harness_factory, tmp_path, fake)
        node = ai_node("kind", "The app crashes on start", operation=flow_pb2.AI_OPERATION_CLASSIFY)
        node.ai.labels.extend(["bug", "feature", "question"])
        flow = flow_pb2.Flow(
            name="classify",
            nodes=[node, util_node_set("fallback")],
            edges=[edge("kind", "fallback", flow_pb2.EDGE_CONDITION_FAILURE)],
        )
        run = await h.start(flow)
        events = await h.events(run.run_id)
        sent = fake.requests[0]
    output = _outputs(events)["kind"]
    assert (output["label"], output["confidence"]) == ("bug", 0.875)
    assert _routes(events) == ["MODEL", "AUTO_APPROVE"]
    assert json.loads(_of(events, "node_started")[0].params_json)["labels"] == [
        "bug", "feature", "question",
    ]  # fmt: skip
    assert sent["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"] == [
        "bug", "feature", "question",
    ]  # fmt: skip
    assert '"bug", "feature", "question"' in sent["messages"][0]["content"]


async def test_ai_embed_returns_the_vector_and_audits_the_call(
    harness_factory: Any, tmp_path: Path
) -> None:
    async with FakeOpenAI() as fake:
        config = tmp_path / "embed.yaml"
        config.write_text(
            json.dumps(
                {
                    "providers": {
                        "fake": {"base_url": fake.base_url, "embedding_model": "fake-embed"}
                    },
                    "prices": {"fake/fake-embed": {"input": "100"}},
                }
            )
        )
        h: Harness = await harness_factory(ai_config=config)
        node = ai_node("vec", "four words of text", operation=flow_pb2.AI_OPERATION_EMBED)
        run = await h.start(flow_pb2.Flow(name="embed", nodes=[node]))
        events = await h.events(run.run_id)
        sent = fake.requests
    output = _outputs(events)["vec"]
    assert output["embedding"] == [0.25, -0.5, 1.0]
    assert (output["dimensions"], output["model"], output["input_tokens"]) == (3, "fake-embed", 4)
    assert (sent[0]["model"], sent[0]["input"]) == ("fake-embed", "four words of text")
    inv = _of(events, "ai_invocation")[0]
    assert (inv.input_token_count, inv.cost_micros, inv.finish_reason) == (4, 400, "embedding")
    assert _of(events, "run_completed")[0].cost_micros == 400
    assert not _of(events, "node_token")


async def test_ai_capture_content_puts_messages_on_the_chat_span(
    harness_factory: Any, tmp_path: Path
) -> None:
    async with FakeOpenAI([text_reply("hi there")]) as fake:
        h = await _server(harness_factory, tmp_path, fake, ai_capture_content=True)
        run = await h.start(flow_pb2.Flow(name="cap", nodes=[ai_node("ask", "say hi")]))
        await h.events(run.run_id)
    chat = next(s for s in h.spans.get_finished_spans() if s.name == "chat fake-model")
    attrs = dict(chat.attributes or {})
    assert json.loads(str(attrs["gen_ai.input.messages"])) == [
        {"role": "user", "content": "say hi"}
    ]
    assert json.loads(str(attrs["gen_ai.output.messages"]))[0]["content"] == "hi there"


async def test_ai_stalled_stream_fails_after_the_read_timeout(
    harness_factory: Any, tmp_path: Path
) -> None:
    stalled = Reply([chunk(content="th"), chunk(finish_reason="stop")], stall_after=1)
    async with FakeOpenAI([stalled]) as fake:
        h = await _server(harness_factory, tmp_path, fake, ai_read_timeout=0.3)
        run = await h.start(flow_pb2.Flow(name="stall", nodes=[ai_node("ask", "hello")]))
        events = await h.events(run.run_id)
        await asyncio.wait_for(fake.disconnected.wait(), GUARD)
    failed = _of(events, "node_failed")[0]
    assert failed.error.reason == "AI_STREAM_BROKEN"
    assert "fake" in failed.error.message
    assert "".join(t.delta for t in _of(events, "node_token")) == "th"


async def test_ai_tool_result_is_cut_to_the_configured_limit(
    harness_factory: Any, tmp_path: Path
) -> None:
    big = "é" * 300  # 600 bytes of UTF-8
    script = [tool_reply(("call_big", "util__set", json.dumps({"value": big}))), text_reply("ok")]
    async with FakeOpenAI(script) as fake:
        config = _config(tmp_path, fake, limits={"tool_result_bytes": 64})
        h: Harness = await harness_factory(ai_config=config)
        flow = flow_pb2.Flow(name="cut", nodes=[ai_node("agent", "go", tools=["util.set"])])
        run = await h.start(flow)
        await h.events(run.run_id)
        result = next(m for m in fake.requests[1]["messages"] if m["role"] == "tool")["content"]
    head, marker = result.rsplit("\n", 1)
    assert len(head.encode()) <= 64
    assert head.startswith('"éé')
    assert marker.startswith("[truncated: ")
    assert marker.endswith(" more bytes]")
