"""Bad input, table-driven: each case gets its exact status and field path,
nothing is persisted, and the server keeps serving."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import Harness, edge, shell_node, util_node
from google.protobuf import struct_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from runwire.v1 import flow_pb2, run_service_pb2

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _flow(*nodes: flow_pb2.Node, edges: tuple[flow_pb2.Edge, ...] = ()) -> flow_pb2.Flow:
    return flow_pb2.Flow(name="bad", nodes=list(nodes), edges=list(edges))


def _fs(node_id: str, action: str, **params: object) -> flow_pb2.Node:
    node = flow_pb2.Node(id=node_id)
    node.action.adapter, node.action.action = "fs", action
    node.action.params.update(params)
    return node


def _http(node_id: str, **params: object) -> flow_pb2.Node:
    node = flow_pb2.Node(id=node_id)
    node.action.adapter, node.action.action = "http", "request"
    node.action.params.update(params)
    return node


def _cycle() -> flow_pb2.Flow:
    return _flow(
        util_node("a", "set", value=1),
        util_node("b", "set", value=2),
        edges=(edge("a", "b"), edge("b", "a")),
    )


CASES: list[tuple[str, Callable[[], flow_pb2.Flow], str]] = [
    ("duplicate node id", lambda: _flow(util_node("a", "set", value=1), util_node("a", "set", value=2)), "flow.nodes[1].id"),
    ("edge to unknown node", lambda: _flow(util_node("a", "set", value=1), edges=(edge("a", "ghost"),)), "flow.edges[0].target"),
    ("edge from unknown node", lambda: _flow(util_node("a", "set", value=1), edges=(edge("ghost", "a"),)), "flow.edges[0].source"),
    ("self-loop", lambda: _flow(util_node("a", "set", value=1), edges=(edge("a", "a"),)), "flow.edges[0].target"),
    ("unbounded cycle", _cycle, "flow.edges[1]"),
    ("unknown adapter", lambda: _flow(flow_pb2.Node(id="a", action=flow_pb2.ActionNode(adapter="ftp", action="get"))), "flow.nodes[0].action.adapter"),
    ("unknown action", lambda: _flow(util_node("a", "explode")), "flow.nodes[0].action.action"),
    ("params fail the schema", lambda: _flow(util_node("a", "sleep", seconds=-1)), "flow.nodes[0].action.params.seconds"),
    ("params with an unknown field", lambda: _flow(util_node("a", "set", value=1, extra=True)), "flow.nodes[0].action.params"),
    ("path traversal", lambda: _flow(_fs("a", "read-file", path="../etc/passwd")), "flow.nodes[0].action.params.path"),
    ("path traversal inside", lambda: _flow(_fs("a", "read-file", path="build/../../secret")), "flow.nodes[0].action.params.path"),
    ("absolute path", lambda: _flow(_fs("a", "read-file", path="/etc/passwd")), "flow.nodes[0].action.params.path"),
    ("NUL in path", lambda: _flow(_fs("a", "read-file", path="a\x00b")), "flow.nodes[0].action.params.path"),
    ("file URL", lambda: _flow(_http("a", url="file:///etc/passwd")), "flow.nodes[0].action.params.url"),
    ("ftp URL", lambda: _flow(_http("a", url="ftp://example.com/x")), "flow.nodes[0].action.params.url"),
    ("CRLF in header value", lambda: _flow(_http("a", url="https://example.com", headers={"X-A": "1\r\nX-Evil: 2"})), "flow.nodes[0].action.params.headers.X-A"),
    ("NUL in node id", lambda: _flow(util_node("a\x00b", "set", value=1)), "flow.nodes[0].id"),
    ("bidi override in node id", lambda: _flow(util_node("ab\u202ec", "set", value=1)), "flow.nodes[0].id"),
    ("bidi override in flow name", lambda: flow_pb2.Flow(name="ok\u202eko", nodes=[util_node("a", "set", value=1)]), "flow.name"),
    ("zero timeout", lambda: _flow(flow_pb2.Node(id="a", timeout={"seconds": 0}, action=flow_pb2.ActionNode(adapter="util", action="set"))), "flow.nodes[0].timeout"),
    ("too many attempts", lambda: _flow(flow_pb2.Node(id="a", retry_policy=flow_pb2.RetryPolicy(max_attempts=50), action=flow_pb2.ActionNode(adapter="util", action="set"))), "flow.nodes[0].retry_policy.max_attempts"),
    ("node with no kind", lambda: _flow(flow_pb2.Node(id="a")), "flow.nodes[0].kind"),
    ("no nodes", lambda: flow_pb2.Flow(name="empty"), "flow.nodes"),
    ("NUL in a param", lambda: _flow(util_node("a", "set", value={"deep": ["ok", "a\x00b"]})), "flow.nodes[0].action.params.value.deep[1]"),
    ("NaN in a param", lambda: _flow(util_node("a", "sleep", seconds=float("nan"))), "flow.nodes[0].action.params.seconds"),
    ("NUL in a description", lambda: _flow(flow_pb2.Node(id="a", description="x\x00", action=flow_pb2.ActionNode(adapter="util", action="set"))), "flow.nodes[0].description"),
    ("NUL in an approval message", lambda: _flow(flow_pb2.Node(id="a", approval=flow_pb2.ApprovalNode(message="ok\x00?"))), "flow.nodes[0].approval.message"),
]  # fmt: skip


def _ai(node_id: str = "a", task: str = "hi", **fields: object) -> flow_pb2.Node:
    node = flow_pb2.Node(id=node_id)
    node.ai.provider = "local"
    node.ai.task = task
    for key, value in fields.items():
        if key == "tools":
            node.ai.tools.extend(value)
        elif key == "labels":
            node.ai.labels.extend(value)
        elif key == "contract":
            node.ai.contract.update(value)
        elif key == "review_policy":
            node.ai.review_policy.CopyFrom(value)
        else:
            setattr(node.ai, key, value)
    return node


def _guarded(node: flow_pb2.Node) -> flow_pb2.Flow:
    """The node with the FAILURE edge a contract-bound node needs."""
    return _flow(
        node,
        util_node("z", "set", value=1),
        edges=(edge(node.id, "z", flow_pb2.EDGE_CONDITION_FAILURE),),
    )


def _policy(**fields: object) -> flow_pb2.AiReviewPolicy:
    values: dict[str, object] = {"confidence_pointer": "/confidence", "approve_at": 0.8}
    values.update(fields)
    return flow_pb2.AiReviewPolicy(**values)


AI_CASES: list[tuple[str, Callable[[], flow_pb2.Flow], str]] = [
    ("unknown provider", lambda: _flow(_ai(provider="nope")), "flow.nodes[0].ai.provider"),
    ("model off the allow-list", lambda: _flow(_ai(model="big")), "flow.nodes[0].ai.model"),
    ("empty task", lambda: _flow(_ai(task="  ")), "flow.nodes[0].ai.task"),
    ("oversized task", lambda: _flow(_ai(task="x" * (1 << 20))), "flow.nodes[0].ai.task"),
    ("oversized prompt", lambda: _flow(_ai(prompt="x" * (1 << 20))), "flow.nodes[0].ai.prompt"),
    ("template error in prompt", lambda: _flow(_ai(prompt="{{ inputs.x ")), "flow.nodes[0].ai.prompt"),
    ("task reads a node not upstream", lambda: _flow(_ai(task="{{ nodes.b.output }}"), util_node("b", "set", value=1)), "flow.nodes[0].ai.task"),
    ("malformed tool", lambda: _flow(_ai(tools=["read file"])), "flow.nodes[0].ai.tools[0]"),
    ("unknown tool", lambda: _flow(_ai(tools=["fs.explode"])), "flow.nodes[0].ai.tools[0]"),
    ("duplicate tool", lambda: _flow(_ai(tools=["util.set", "util.set"])), "flow.nodes[0].ai.tools[1]"),
    ("too many tools", lambda: _flow(_ai(tools=[f"x.a{i}" for i in range(33)])), "flow.nodes[0].ai.tools"),
    ("max_turns out of range", lambda: _flow(_ai(max_turns=101)), "flow.nodes[0].ai.max_turns"),
    ("contract not a JSON Schema", lambda: _guarded(_ai(contract={"type": "frog"})), "flow.nodes[0].ai.contract.type"),
    ("contract too large", lambda: _guarded(_ai(contract={"description": "x" * 20000})), "flow.nodes[0].ai.contract"),
    ("contract without a FAILURE edge", lambda: _flow(_ai(contract={"type": "object"})), "flow.nodes[0].ai"),
    ("threshold outside [0,1]", lambda: _guarded(_ai(review_policy=_policy(approve_at=1.5))), "flow.nodes[0].ai.review_policy.approve_at"),
    ("inverted thresholds", lambda: _guarded(_ai(review_policy=_policy(suppress_below=0.9))), "flow.nodes[0].ai.review_policy.suppress_below"),
    ("bad JSON Pointer", lambda: _guarded(_ai(review_policy=_policy(confidence_pointer="confidence"))), "flow.nodes[0].ai.review_policy.confidence_pointer"),
    ("EMBED with tools", lambda: _flow(_ai(operation=flow_pb2.AI_OPERATION_EMBED, model="m", tools=["util.set"])), "flow.nodes[0].ai.tools"),
    ("EMBED with a contract", lambda: _flow(_ai(operation=flow_pb2.AI_OPERATION_EMBED, model="m", contract={"type": "object"})), "flow.nodes[0].ai.contract"),
    ("EMBED without an embedding model", lambda: _flow(_ai(operation=flow_pb2.AI_OPERATION_EMBED)), "flow.nodes[0].ai.model"),
    ("CLASSIFY with one label", lambda: _guarded(_ai(operation=flow_pb2.AI_OPERATION_CLASSIFY, labels=["a"])), "flow.nodes[0].ai.labels"),
    ("CLASSIFY with duplicate labels", lambda: _guarded(_ai(operation=flow_pb2.AI_OPERATION_CLASSIFY, labels=["a", "b", "a"])), "flow.nodes[0].ai.labels[2]"),
    ("CLASSIFY without a FAILURE edge", lambda: _flow(_ai(operation=flow_pb2.AI_OPERATION_CLASSIFY, labels=["a", "b"])), "flow.nodes[0].ai"),
    ("labels on a GENERATE node", lambda: _flow(_ai(labels=["a", "b"])), "flow.nodes[0].ai.labels"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "build", "field"), AI_CASES, ids=[c[0] for c in AI_CASES])
async def test_start_run_rejects_bad_ai_node_with_exact_field_path(
    harness_factory: Any,
    case: str,
    build: Callable[[], flow_pb2.Flow],
    field: str,
    tmp_path: Path,
) -> None:
    """With a provider configured (never called: nothing starts), each bad AI node names its field."""
    config = tmp_path / "ai.yaml"
    config.write_text(
        json.dumps({"providers": {"local": {"base_url": "http://127.0.0.1:9/v1",
                                             "default_model": "m", "models": ["m"]}}})
    )  # fmt: skip
    harness: Harness = await harness_factory(ai_config=config)
    flow = build()
    for call in (
        harness.stub.StartRun(run_service_pb2.StartRunRequest(flow=flow)),
        harness.stub.ValidateFlow(run_service_pb2.ValidateFlowRequest(flow=flow)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == INVALID, case
        assert _violations(caught.value)[0] == field, (case, _violations(caught.value))
    assert list((await harness.stub.ListRuns(run_service_pb2.ListRunsRequest())).runs) == []


def _violations(exc: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(exc)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    for detail in status.details:
        if detail.Is(bad.DESCRIPTOR):
            detail.Unpack(bad)
    return [v.field for v in bad.field_violations]


@pytest.mark.parametrize(("case", "build", "field"), CASES, ids=[c[0] for c in CASES])
async def test_start_run_rejects_bad_flow_with_exact_field_path(
    harness: Harness, case: str, build: Callable[[], flow_pb2.Flow], field: str
) -> None:
    flow = build()
    for call in (
        harness.stub.StartRun(run_service_pb2.StartRunRequest(flow=flow)),
        harness.stub.ValidateFlow(run_service_pb2.ValidateFlowRequest(flow=flow)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == INVALID, case
        assert _violations(caught.value)[0] == field, case
    assert list((await harness.stub.ListRuns(run_service_pb2.ListRunsRequest())).runs) == []
    # Still serving.
    ok = await harness.stub.ValidateFlow(
        run_service_pb2.ValidateFlowRequest(flow=_flow(util_node("a", "set", value=1)))
    )
    assert ok.node_count == 1


async def test_start_run_rejects_oversized_inputs_and_requests(harness: Harness) -> None:
    flow = _flow(util_node("a", "set", value=1))
    big = run_service_pb2.StartRunRequest(flow=flow)
    big.inputs.update({"blob": "x" * (1 << 20)})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.StartRun(big)
    assert caught.value.code() == INVALID
    assert _violations(caught.value) == ["inputs"]
    huge = run_service_pb2.StartRunRequest(flow=flow)
    huge.inputs.update({"blob": "x" * (5 << 20)})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.StartRun(huge)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert list((await harness.stub.ListRuns(run_service_pb2.ListRunsRequest())).runs) == []
    run = (await harness.stub.StartRun(run_service_pb2.StartRunRequest(flow=flow))).run
    assert (await harness.events(run.run_id))[-1].HasField("run_completed")


async def test_free_text_with_nul_or_infinity_is_invalid_not_internal(harness: Harness) -> None:
    """Regression: NUL and non-finite numbers reached Postgres (jsonb, text) and came back INTERNAL."""
    flow = _flow(util_node("a", "set", value=1))
    request = run_service_pb2.StartRunRequest(flow=flow, labels={"team": "a\x00"})
    request.inputs.update({"x": "a\x00", "n": float("inf")})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.StartRun(request)
    assert caught.value.code() == INVALID
    assert sorted(_violations(caught.value)) == ["inputs.n", "inputs.x", "labels['team']"]
    run = (await harness.stub.StartRun(run_service_pb2.StartRunRequest(flow=flow))).run
    await harness.events(run.run_id)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.CancelRun(
            run_service_pb2.CancelRunRequest(run_id=run.run_id, reason="\x00")
        )
    assert caught.value.code() == INVALID
    assert _violations(caught.value) == ["reason"]


async def test_start_run_rejects_bad_labels_and_request_id(harness: Harness) -> None:
    request = run_service_pb2.StartRunRequest(
        flow=_flow(shell_node("a", "echo", "hi")), request_id="r" * 200, labels={"Bad Key": "v"}
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.StartRun(request)
    assert caught.value.code() == INVALID
    assert _violations(caught.value) == ["request_id", "labels['Bad Key']"]


# -- bytes protobuf cannot parse, and values Postgres cannot hold ----------------------


def _ld(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field."""
    size, n = b"", len(payload)
    while True:
        byte = n & 0x7F
        n >>= 7
        size += bytes([byte | (0x80 if n else 0)])
        if not n:
            break
    return bytes([number << 3 | 2]) + size + payload


def _num(message: type, field: str) -> int:
    return int(message.DESCRIPTOR.fields_by_name[field].number)  # type: ignore[attr-defined]


def _nested_start_run(levels: int) -> bytes:
    """StartRun bytes whose only param nests `levels` Structs deep (built by hand: the
    protobuf library itself refuses to serialize that much nesting)."""
    value = struct_pb2.Value(number_value=1).SerializeToString()
    for _ in range(levels):
        value = _ld(_num(struct_pb2.Value, "struct_value"), _ld(1, _ld(1, b"a") + _ld(2, value)))
    params = _ld(1, _ld(1, b"value") + _ld(2, value))
    action = (
        _ld(_num(flow_pb2.ActionNode, "adapter"), b"util")
        + _ld(_num(flow_pb2.ActionNode, "action"), b"set")
        + _ld(_num(flow_pb2.ActionNode, "params"), params)
    )
    node = _ld(_num(flow_pb2.Node, "id"), b"a") + _ld(_num(flow_pb2.Node, "action"), action)
    flow = _ld(_num(flow_pb2.Flow, "name"), b"deep") + _ld(_num(flow_pb2.Flow, "nodes"), node)
    return _ld(_num(run_service_pb2.StartRunRequest, "flow"), flow)


def _swap(request: Message, marker: bytes, raw: bytes) -> bytes:
    data = request.SerializeToString()
    assert data.count(marker) == 1
    return data.replace(marker, raw)


def _flow_with_timeout(seconds: int, nanos: int) -> bytes:
    node = util_node("a", "set", value=1)
    node.timeout.seconds, node.timeout.nanos = seconds, nanos
    return run_service_pb2.StartRunRequest(flow=_flow(node)).SerializeToString()


def _label(value: str) -> run_service_pb2.StartRunRequest:
    return run_service_pb2.StartRunRequest(
        flow=_flow(util_node("a", "set", value=1)), labels={"team": value}
    )


def _param(value: str) -> run_service_pb2.StartRunRequest:
    return run_service_pb2.StartRunRequest(
        flow=_flow(util_node("a", "set", value={"k": ["ok", value]}))
    )


RAW_CASES: list[tuple[str, str, Callable[[], bytes], str]] = [
    ("params nested 60 levels", "StartRun", lambda: _nested_start_run(60), "flow.nodes[0].action.params.value.a.a"),
    ("params nested 5000 levels", "StartRun", lambda: _nested_start_run(5000), "flow.nodes[0].action.params.value.a.a"),
    ("invalid UTF-8 in a param", "StartRun", lambda: _swap(_param("@@"), b"@@", b"\xff\xfe"), "flow.nodes[0].action.params.value.k[1]"),
    ("invalid UTF-8 in a label", "StartRun", lambda: _swap(_label("@@"), b"@@", b"\xc3("), "labels['team']"),
    ("invalid UTF-8 in a run id", "GetRun", lambda: _swap(run_service_pb2.GetRunRequest(run_id="r@@"), b"@@", b"\xff\xfe"), "run_id"),
    ("duration nanos out of range", "StartRun", lambda: _flow_with_timeout(1, 1_000_000_000), "flow.nodes[0].timeout"),
    ("duration with signs that differ", "StartRun", lambda: _flow_with_timeout(5, -3), "flow.nodes[0].timeout"),
    ("NUL in GetRun's run id", "GetRun", lambda: run_service_pb2.GetRunRequest(run_id="run_\x00").SerializeToString(), "run_id"),
    ("NUL in WatchRun's run id", "WatchRun", lambda: run_service_pb2.WatchRunRequest(run_id="run_\x00").SerializeToString(), "run_id"),
    ("unknown kind in WatchRun's filter", "WatchRun", lambda: run_service_pb2.WatchRunRequest(run_id="run_x", filter=run_service_pb2.EventFilter(kinds=["nodelog"])).SerializeToString(), "filter.kinds[0]"),
    ("empty node id in WatchRun's filter", "WatchRun", lambda: run_service_pb2.WatchRunRequest(run_id="run_x", filter=run_service_pb2.EventFilter(kinds=["node_log"], node_ids=[""])).SerializeToString(), "filter.node_ids[0]"),
    ("unknown kind in WatchEvents' filter", "WatchEvents", lambda: run_service_pb2.WatchEventsRequest(filter=run_service_pb2.RunEventsFilter(events=run_service_pb2.EventFilter(kinds=["RunCompleted"]))).SerializeToString(), "filter.events.kinds[0]"),
    ("bad label key in WatchEvents' filter", "WatchEvents", lambda: run_service_pb2.WatchEventsRequest(filter=run_service_pb2.RunEventsFilter(labels={"Team": "a"})).SerializeToString(), "filter.labels['Team']"),
    ("unknown run status in WatchEvents' filter", "WatchEvents", lambda: run_service_pb2.WatchEventsRequest(filter=run_service_pb2.RunEventsFilter(run_statuses=[99])).SerializeToString(), "filter.run_statuses[0]"),
    ("a cursor the server never issued", "WatchEvents", lambda: run_service_pb2.WatchEventsRequest(cursor="abc").SerializeToString(), "cursor"),
    ("an unknown stream start", "WatchEvents", lambda: run_service_pb2.WatchEventsRequest(start=7).SerializeToString(), "start"),  # type: ignore[arg-type]
    ("NUL in a ListRuns label filter", "ListRuns", lambda: run_service_pb2.ListRunsRequest(filter='labels.team = "a\x00"').SerializeToString(), "filter"),
    ("NUL in ResolveApproval's node id", "ResolveApproval", lambda: run_service_pb2.ResolveApprovalRequest(run_id="run_x", node_id="a\x00", approve=True).SerializeToString(), "node_id"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "method", "build", "field"), RAW_CASES, ids=[c[0] for c in RAW_CASES]
)
async def test_request_bytes_that_do_not_parse_are_invalid_with_their_field(
    harness: Harness, case: str, method: str, build: Callable[[], bytes], field: str
) -> None:
    """Regression: these reached gRPC's deserializer or Postgres and came back INTERNAL/UNKNOWN."""
    path = f"/runwire.v1.RunService/{method}"

    async def call() -> None:
        if method in ("WatchRun", "WatchEvents"):
            async for _ in harness.channel.unary_stream(path, request_serializer=None)(build()):
                pass
        else:
            await harness.channel.unary_unary(path, request_serializer=None)(build())

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call()
    assert caught.value.code() == INVALID, case
    assert _violations(caught.value)[0].startswith(field), (case, _violations(caught.value))
    assert list((await harness.stub.ListRuns(run_service_pb2.ListRunsRequest())).runs) == []
    ok = await harness.stub.ValidateFlow(
        run_service_pb2.ValidateFlowRequest(flow=_flow(util_node("a", "set", value=1)))
    )
    assert ok.node_count == 1


async def test_confirm_action_rejects_a_bad_tool_call_id_with_its_field(harness: Harness) -> None:
    run = (
        await harness.stub.StartRun(
            run_service_pb2.StartRunRequest(flow=_flow(util_node("a", "set", value=1)))
        )
    ).run
    for bad in ("c" * 257, "call\x00"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await harness.stub.ConfirmAction(
                run_service_pb2.ConfirmActionRequest(
                    run_id=run.run_id, node_id="a", approve=True, tool_call_id=bad
                )
            )
        assert caught.value.code() == INVALID
        assert _violations(caught.value) == ["tool_call_id"]
    await harness.events(run.run_id)


# -- SubscriptionService ------------------------------------------------------------


def _sub_request(**fields: Any) -> bytes:
    from runwire.v1 import subscription_service_pb2 as spb

    request_id = fields.pop("request_id", "")
    sub = spb.Subscription(**{"target_url": "https://1.1.1.1/hook", **fields})
    return spb.CreateSubscriptionRequest(
        subscription=sub, request_id=request_id
    ).SerializeToString()


def _sub_filter(**fields: Any) -> bytes:
    return _sub_request(filter=run_service_pb2.RunEventsFilter(**fields))


def _named(method: str, name: str) -> Callable[[], bytes]:
    from runwire.v1 import subscription_service_pb2 as spb

    return lambda: getattr(spb, f"{method}Request")(name=name).SerializeToString()


SUBSCRIPTION_CASES: list[tuple[str, str, Callable[[], bytes], str]] = [
    ("no subscription", "CreateSubscription", lambda: b"", "subscription"),
    ("no target URL", "CreateSubscription", lambda: _sub_request(target_url=""), "subscription.target_url"),
    ("ftp target", "CreateSubscription", lambda: _sub_request(target_url="ftp://1.1.1.1/x"), "subscription.target_url"),
    ("plain http to a public host", "CreateSubscription", lambda: _sub_request(target_url="http://1.1.1.1/x"), "subscription.target_url"),
    ("loopback target", "CreateSubscription", lambda: _sub_request(target_url="https://127.0.0.1:8443/x"), "subscription.target_url"),
    ("private target", "CreateSubscription", lambda: _sub_request(target_url="https://10.1.2.3/x"), "subscription.target_url"),
    ("metadata target", "CreateSubscription", lambda: _sub_request(target_url="https://169.254.169.254/latest"), "subscription.target_url"),
    ("credentials in the target", "CreateSubscription", lambda: _sub_request(target_url="https://u:p@1.1.1.1/x"), "subscription.target_url"),
    ("NUL in the target", "CreateSubscription", lambda: _sub_request(target_url="https://1.1.1.1/\x00"), "subscription.target_url"),
    ("invalid UTF-8 in the target", "CreateSubscription", lambda: _sub_request(target_url="https://1.1.1.1/@@").replace(b"@@", b"\xff\xfe"), "subscription.target_url"),
    ("secret without whsec_", "CreateSubscription", lambda: _sub_request(secret="c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"), "subscription.secret"),
    ("secret too short", "CreateSubscription", lambda: _sub_request(secret="whsec_c2hvcnQ="), "subscription.secret"),
    ("secret not base64", "CreateSubscription", lambda: _sub_request(secret="whsec_!!!"), "subscription.secret"),
    ("server-set name", "CreateSubscription", lambda: _sub_request(name="subscriptions/mine"), "subscription.name"),
    ("server-set state", "CreateSubscription", lambda: _sub_request(state=2), "subscription.state"),
    ("server-set failures", "CreateSubscription", lambda: _sub_request(consecutive_failures=3), "subscription.consecutive_failures"),
    ("unknown start", "CreateSubscription", lambda: _sub_request(start=7), "subscription.start"),
    ("unknown event kind", "CreateSubscription", lambda: _sub_filter(events=run_service_pb2.EventFilter(kinds=["node_log", "node_lgo"])), "subscription.filter.events.kinds[1]"),
    ("empty node id", "CreateSubscription", lambda: _sub_filter(events=run_service_pb2.EventFilter(node_ids=[""])), "subscription.filter.events.node_ids[0]"),
    ("bad label key", "CreateSubscription", lambda: _sub_filter(labels={"Team": "a"}), "subscription.filter.labels['Team']"),
    ("unknown run status", "CreateSubscription", lambda: _sub_filter(run_statuses=[99]), "subscription.filter.run_statuses[0]"),
    ("request id too long", "CreateSubscription", lambda: _sub_request(request_id="r" * 129), "request_id"),
    ("empty name", "GetSubscription", _named("GetSubscription", ""), "name"),
    ("a run's name", "GetSubscription", _named("GetSubscription", "runs/run_1"), "name"),
    ("NUL in the name", "DeleteSubscription", _named("DeleteSubscription", "subscriptions/\x00"), "name"),
    ("resume a malformed name", "ResumeSubscription", _named("ResumeSubscription", "subscriptions/x"), "name"),
    ("negative page size", "ListSubscriptions", lambda: b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "page_size"),
    ("foreign page token", "ListSubscriptions", lambda: b"\x12\x03!!!", "page_token"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "method", "build", "field"), SUBSCRIPTION_CASES, ids=[c[0] for c in SUBSCRIPTION_CASES]
)
async def test_subscription_service_rejects_bad_input_with_exact_field_path(
    harness: Harness, case: str, method: str, build: Callable[[], bytes], field: str
) -> None:
    """Each bad request is INVALID_ARGUMENT naming its field (this server allows no
    loopback webhook target); nothing is created and the server keeps serving."""
    from runwire.v1 import subscription_service_pb2 as spb

    path = f"/runwire.v1.SubscriptionService/{method}"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.channel.unary_unary(path, request_serializer=None)(build())
    assert caught.value.code() == INVALID, case
    assert _violations(caught.value)[0] == field, (case, _violations(caught.value))
    listed = await harness.channel.unary_unary(
        "/runwire.v1.SubscriptionService/ListSubscriptions",
        request_serializer=None,
        response_deserializer=spb.ListSubscriptionsResponse.FromString,
    )(b"")
    assert list(listed.subscriptions) == []
