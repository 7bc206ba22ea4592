"""Flows whose runs tests/engine records, replays and takes over after every prefix."""

from __future__ import annotations

from typing import Any

from _engine_kit import APPROVED, REJECTED

FAST_RETRY = {"maxAttempts": 3, "initialBackoff": "0.001s", "maxBackoff": "0.002s"}


def _set(node_id: str, value: Any, **extra: Any) -> dict[str, Any]:
    return {
        "id": node_id,
        "action": {"adapter": "util", "action": "set", "params": {"value": value}},
        **extra,
    }


def _fail(node_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": node_id,
        "action": {"adapter": "util", "action": "fail", "params": {"message": f"{node_id} fails"}},
        **extra,
    }


def _edge(source: str, target: str, condition: str = "") -> dict[str, Any]:
    edge = {"source": source, "target": target}
    if condition:
        edge["condition"] = f"EDGE_CONDITION_{condition}"
    return edge


# name -> (flow as proto3 JSON, gate decisions by node id)
FLOWS: dict[str, tuple[dict[str, Any], dict[str, int]]] = {
    "chain with templates": (
        {
            "name": "chain",
            "nodes": [
                _set("a", 1),
                _set("b", "{{ nodes.a.output }}"),
                _set("c", {"from_b": "{{ nodes.b.output }}", "n": "{{ nodes.b.iteration }}"}),
                _set("d", "done"),
            ],
            "edges": [_edge("a", "b"), _edge("b", "c"), _edge("c", "d")],
        },
        {},
    ),
    "failure edges and skips": (
        {
            "name": "branches",
            "nodes": [
                _set("start", 1),
                _fail("flaky"),
                _set("recover", "recovered"),
                _set("after_success", "never"),
                _set("side", 2),
                _set("join", "joined"),
            ],
            "edges": [
                _edge("start", "flaky"),
                _edge("start", "side"),
                _edge("flaky", "recover", "FAILURE"),
                _edge("flaky", "after_success"),
                _edge("recover", "join"),
                _edge("side", "join"),
                _edge("after_success", "join", "ALWAYS"),
            ],
        },
        {},
    ),
    "capped loop": (
        {
            "name": "loop",
            "nodes": [
                _set("head", "{{ nodes.head.iteration }}", maxVisits=3),
                _set("body", "{{ nodes.head.output }}"),
                _fail("check"),
                _set("after", "out"),
            ],
            "edges": [
                _edge("head", "body"),
                _edge("body", "check"),
                _edge("check", "head", "FAILURE"),
                _edge("check", "after", "ALWAYS"),
            ],
        },
        {},
    ),
    "retries then an always edge": (
        {
            "name": "retries",
            "nodes": [
                _fail("r", retryPolicy=FAST_RETRY),
                _set("s", "after retries"),
                {
                    "id": "z",
                    "action": {
                        "adapter": "test",
                        "action": "zap",
                        "params": {"target": "t1", "fail": True},
                    },
                    "retryPolicy": FAST_RETRY,
                },
                _set("end", "end"),
            ],
            "edges": [_edge("r", "s", "ALWAYS"), _edge("s", "z"), _edge("z", "end", "ALWAYS")],
            "settings": {"confirmDestructive": False},
        },
        {},
    ),
    "every gate kind": (
        {
            "name": "gates",
            "nodes": [
                {"id": "approve", "approval": {"message": "go? {{ inputs.who }}"}},
                {
                    "id": "zap_ok",
                    "action": {"adapter": "test", "action": "zap", "params": {"target": "ok"}},
                },
                {
                    "id": "zap_no",
                    "action": {"adapter": "test", "action": "zap", "params": {"target": "no"}},
                },
                {"id": "deny", "approval": {"message": "really?"}},
                _set("denied", "handled"),
                _set("end", "end"),
            ],
            "edges": [
                _edge("approve", "zap_ok"),
                _edge("approve", "zap_no"),
                _edge("zap_ok", "deny"),
                _edge("deny", "denied", "FAILURE"),
                _edge("denied", "end"),
                _edge("zap_no", "end", "ALWAYS"),
            ],
        },
        {"approve": APPROVED, "zap_ok": APPROVED, "zap_no": REJECTED, "deny": REJECTED},
    ),
    "loop that succeeds into a second visit": (
        {
            "name": "two-visits",
            "nodes": [
                _set("head", "{{ nodes.head.iteration }}", maxVisits=2),
                _set("tail", "{{ nodes.head.output }}"),
                _set("next", "after loop"),
            ],
            "edges": [_edge("head", "tail"), _edge("tail", "head"), _edge("tail", "next")],
        },
        {},
    ),
    "fan-out over an upstream list": (
        {
            "name": "fan-out",
            "nodes": [
                _set("list", [1, 2, 3]),
                _set(
                    "fan",
                    {"n": "{{ item }}", "i": "{{ item_index }}"},
                    forEach={"items": "{{ nodes.list.output }}", "maxParallel": 2},
                ),
                _set("end", "{{ nodes.fan.output }}"),
            ],
            "edges": [_edge("list", "fan"), _edge("fan", "end")],
        },
        {},
    ),
    "fan-out with a failing item, retries and keys": (
        {
            "name": "fan-out-failing",
            "nodes": [
                {
                    "id": "fan",
                    "action": {
                        "adapter": "test",
                        "action": "zap",
                        "params": {"target": "{{ item.t }}", "fail": "{{ item.fail }}"},
                    },
                    "retryPolicy": FAST_RETRY,
                    "forEach": {
                        "items": "{{ inputs.targets }}",
                        "failurePolicy": "ITEM_FAILURE_POLICY_FAIL_AT_END",
                        "keyField": "t",
                    },
                },
                _set("after", "{{ nodes.fan.status }}"),
            ],
            "edges": [_edge("fan", "after", "ALWAYS")],
            "settings": {"confirmDestructive": False},
        },
        {},
    ),
    "fan-out inside a loop": (
        {
            "name": "fan-out-loop",
            "nodes": [
                _set("head", "{{ nodes.head.iteration }}", maxVisits=2),
                _set(
                    "fan",
                    "{{ item }}-{{ nodes.head.output }}",
                    forEach={"items": '{{ ["x", "y"] }}'},
                ),
                _set("tail", "{{ nodes.fan.output }}"),
            ],
            "edges": [_edge("head", "fan"), _edge("fan", "tail"), _edge("tail", "head")],
        },
        {},
    ),
    "destructive fan-out, each item confirmed": (
        {
            "name": "fan-out-gates",
            "nodes": [
                {
                    "id": "fan",
                    "action": {
                        "adapter": "test",
                        "action": "zap",
                        "params": {"target": "{{ item }}"},
                    },
                    "forEach": {"items": '{{ ["p", "q"] }}'},
                },
                _set("end", "{{ nodes.fan.output }}"),
            ],
            "edges": [_edge("fan", "end")],
        },
        {"fan": APPROVED},
    ),
    "empty fan-out": (
        {
            "name": "fan-out-empty",
            "nodes": [
                _set("fan", "{{ item }}", forEach={"items": "{{ [] }}"}),
                _set("end", "{{ nodes.fan.output }}"),
            ],
            "edges": [_edge("fan", "end")],
        },
        {},
    ),
}

# Run inputs of the flows that read them (the others ignore these).
INPUTS: dict[str, Any] = {
    "who": "tester",
    "targets": [{"t": "a", "fail": False}, {"t": "b", "fail": True}, {"t": "c", "fail": False}],
}
