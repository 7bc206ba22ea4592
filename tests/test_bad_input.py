"""Bad input, table-driven: each case gets its exact status and field path,
nothing is persisted, and the server keeps serving."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from conftest import Harness, edge, shell_node, util_node
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
