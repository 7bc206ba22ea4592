"""Property tests: random graphs and mutations of valid flows.

Validation never raises anything but a clean RunwireError, gives the same
answer twice, and every flow it accepts runs to exactly one RunCompleted.
"""

from __future__ import annotations

from typing import Any

from conftest import Harness
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from runwire.adapters import Registry
from runwire.engine import validate_flow
from runwire.errors import FieldViolation, RunwireError
from runwire.v1 import events_pb2, flow_pb2, run_service_pb2

REGISTRY = Registry.default(shell_allow=())
CONDITIONS = [
    flow_pb2.EDGE_CONDITION_UNSPECIFIED,
    flow_pb2.EDGE_CONDITION_SUCCESS,
    flow_pb2.EDGE_CONDITION_FAILURE,
    flow_pb2.EDGE_CONDITION_ALWAYS,
]
IDS = st.sampled_from(["a", "b", "c", "d", "e", "f", "bad id", "", "x\u202e", "nul\x00", "1st"])


@st.composite
def nodes(draw: st.DrawFn, node_id: str) -> flow_pb2.Node:
    node = flow_pb2.Node(id=node_id, max_visits=draw(st.sampled_from([0, 0, 1, 2, 3, -1])))
    kind = draw(
        st.sampled_from(
            ["set", "set", "fail", "sleep", "bad-action", "bad-adapter", "approval", "none"]
        )
    )
    if kind == "approval":
        node.approval.message = "ok?"
        node.approval.timeout.FromMilliseconds(draw(st.sampled_from([1, 50, -5])))
    elif kind != "none":
        node.action.adapter = "nope" if kind == "bad-adapter" else "util"
        node.action.action = {"set": "set", "fail": "fail", "sleep": "sleep"}.get(kind, "explode")
        params: dict[str, Any] = {
            "set": {
                "value": draw(
                    st.sampled_from([1, "x", "{{ inputs.k }}", "{{ nodes.a.output }}", "{{ oops"])
                )
            },
            "fail": {"message": "boom"},
            "sleep": {"seconds": draw(st.sampled_from([0, 0.01, -1, "soon"]))},
        }.get(kind, {})
        node.action.params.update(params)
    if draw(st.booleans()):
        node.timeout.FromMilliseconds(draw(st.sampled_from([500, 0, -1])))
    if draw(st.booleans()):
        node.retry_policy.max_attempts = draw(st.sampled_from([0, 2, 11]))
        node.retry_policy.initial_backoff.FromMilliseconds(1)
    return node


@st.composite
def flows(draw: st.DrawFn) -> flow_pb2.Flow:
    ids = draw(st.lists(IDS, min_size=1, max_size=6))
    flow = flow_pb2.Flow(name=draw(st.sampled_from(["prop", "", "p\u202e"])))
    flow.nodes.extend(draw(nodes(i)) for i in ids)
    for _ in range(draw(st.integers(0, 8))):
        flow.edges.add(
            source=draw(st.sampled_from([*ids, "ghost"])),
            target=draw(st.sampled_from([*ids, "ghost"])),
            condition=draw(st.sampled_from(CONDITIONS)),
        )
    flow.settings.max_parallel = draw(st.sampled_from([0, 2, 65]))
    return flow


@st.composite
def plausible_flows(draw: st.DrawFn) -> flow_pb2.Flow:
    """Mostly valid graphs: a random DAG of util and approval nodes plus bounded back edges."""
    n = draw(st.integers(1, 6))
    ids = ["a", "b", "c", "d", "e", "f"][:n]
    flow = flow_pb2.Flow(name="plausible")
    for node_id in ids:
        node = flow.nodes.add(id=node_id)
        kind = draw(st.sampled_from(["set", "set", "fail", "sleep", "approval"]))
        if kind == "approval":
            node.approval.message = "ok?"
            node.approval.timeout.FromMilliseconds(1)
        else:
            node.action.adapter, node.action.action = "util", kind
            node.action.params.update(
                {
                    "set": {"value": "{{ inputs.k }}"},
                    "fail": {"message": "no"},
                    "sleep": {"seconds": 0},
                }[kind]
            )
    for j in range(1, n):
        for i in range(j):
            if draw(st.integers(0, 2)) == 0:
                flow.edges.add(
                    source=ids[i], target=ids[j], condition=draw(st.sampled_from(CONDITIONS))
                )
    if n > 1 and draw(st.booleans()):
        i = draw(st.integers(0, n - 2))
        j = draw(st.integers(i + 1, n - 1))
        flow.edges.add(source=ids[j], target=ids[i], condition=draw(st.sampled_from(CONDITIONS)))
        flow.nodes[i].max_visits = draw(st.integers(1, 3))
    return flow


def _valid_chain() -> flow_pb2.Flow:
    flow = flow_pb2.Flow(name="chain")
    for i, node_id in enumerate(["a", "b", "c", "d"]):
        node = flow.nodes.add(id=node_id)
        node.action.adapter, node.action.action = "util", "fail" if i == 1 else "set"
        node.action.params.update({"message": "no"} if i == 1 else {"value": i})
    flow.edges.add(source="a", target="b")
    flow.edges.add(source="b", target="c", condition=flow_pb2.EDGE_CONDITION_FAILURE)
    flow.edges.add(source="c", target="d", condition=flow_pb2.EDGE_CONDITION_ALWAYS)
    return flow


@st.composite
def mutated(draw: st.DrawFn) -> flow_pb2.Flow:
    flow = _valid_chain()
    for _ in range(draw(st.integers(1, 3))):
        op = draw(
            st.sampled_from(
                [
                    "dup-id",
                    "drop-node",
                    "edge-ghost",
                    "self-loop",
                    "back-edge",
                    "max-visits",
                    "rename",
                ]
            )
        )
        if op == "dup-id":
            flow.nodes[1].id = flow.nodes[0].id
        elif op == "drop-node" and len(flow.nodes) > 1:
            del flow.nodes[draw(st.integers(0, len(flow.nodes) - 1))]
        elif op == "edge-ghost":
            flow.edges.add(source="a", target="ghost")
        elif op == "self-loop":
            flow.edges.add(source="c", target="c")
        elif op == "back-edge":
            flow.edges.add(source="d", target="a", condition=draw(st.sampled_from(CONDITIONS)))
        elif op == "max-visits":
            flow.nodes[0].max_visits = draw(st.integers(0, 3))
        else:
            flow.nodes[-1].id = draw(IDS)
    return flow


def _outcome(flow: flow_pb2.Flow) -> tuple[str, list[FieldViolation]] | str:
    try:
        graph = validate_flow(flow, REGISTRY, inputs={"k": 1})
    except RunwireError as exc:
        return type(exc).__name__, list(getattr(exc, "violations", []))
    return ",".join(graph.roots)


@settings(max_examples=400, deadline=None)
@given(st.one_of(flows(), mutated(), plausible_flows()))
def test_validate_flow_raises_only_clean_errors_deterministically(flow: flow_pb2.Flow) -> None:
    first = _outcome(flow)  # anything but a RunwireError escapes and fails the test
    assert first == _outcome(flow)
    if isinstance(first, tuple):
        _, violations = first
        for v in violations:
            assert v.field.startswith("flow"), v
            assert v.description


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.one_of(plausible_flows(), mutated()))
async def test_accepted_flows_run_to_exactly_one_run_completed(
    harness: Harness, flow: flow_pb2.Flow
) -> None:
    if isinstance(_outcome(flow), tuple):
        event("rejected")
        return  # rejected: the other property covers it
    event("accepted and run")
    for node in flow.nodes:
        if node.WhichOneof("kind") == "approval":
            node.approval.timeout.FromMilliseconds(1)  # nobody will answer
    run = (
        await harness.stub.StartRun(run_service_pb2.StartRunRequest(flow=flow, inputs={"k": 1}))
    ).run
    events = await harness.events(run.run_id)  # runs the grammar checker too
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds.count("run_completed") == 1
    assert kinds[-1] == "run_completed"
    assert events[-1].run_completed.status in {
        events_pb2.RUN_STATUS_SUCCEEDED,
        events_pb2.RUN_STATUS_FAILED,
        events_pb2.RUN_STATUS_PARTIAL,
    }
