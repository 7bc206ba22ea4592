"""Template rendering keeps data intact: values inside strings render as JSON text."""

from __future__ import annotations

import json
from typing import Any

from conftest import Harness, edge, shell_node, util_node
from google.protobuf import struct_pb2

from runwire.v1 import flow_pb2


def _inputs(**values: Any) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


def _fs_node(node_id: str, action: str, **params: Any) -> flow_pb2.Node:
    node = flow_pb2.Node(id=node_id)
    node.action.adapter, node.action.action = "fs", action
    node.action.params.update(params)
    return node


async def test_templates_render_values_in_strings_as_json_text(harness: Harness) -> None:
    """Regression: inputs travel as Struct doubles, and `--count={{ inputs.n }}`
    with n=3 ran `--count=3.0`; `true` rendered `True` and `null` `None`."""
    flow = flow_pb2.Flow(
        name="json-text",
        nodes=[
            shell_node(
                "argv",
                "echo",
                "--count={{ inputs.n }}",
                "ratio={{ inputs.ratio }}",
                "on={{ inputs.on }} off={{ inputs.off }} none={{ inputs.none }}",
                "obj={{ inputs.obj }}",
                "s={{ inputs.s }}",
            ),
            util_node("whole", "set", value="{{ inputs.n }}"),
        ],
        edges=[edge("argv", "whole")],
    )
    run = await harness.start(
        flow,
        inputs=_inputs(
            n=3, ratio=1.5, on=True, off=False, none=None, obj={"a": 1, "b": [2, "x"]}, s="1.10"
        ),
    )
    events = await harness.events(run.run_id)
    logs = [e.node_log.line for e in events if e.HasField("node_log")]
    assert logs == [
        '--count=3 ratio=1.5 on=true off=false none=null obj={"a":1,"b":[2,"x"]} s=1.10'
    ]
    # A string that is exactly one expression keeps the value's type.
    whole = next(e for e in events if e.node_id == "whole" and e.HasField("node_succeeded"))
    assert json.loads(whole.node_succeeded.output_json) == 3


async def test_templates_keep_trailing_newline(harness: Harness) -> None:
    """Regression: `"fixed on visit {{ … }}\\n"` (examples/loop-until-green.yaml)
    was written without its newline."""
    flow = flow_pb2.Flow(
        name="newline",
        nodes=[
            util_node("visit", "set", value=2),
            _fs_node(
                "write",
                "write-file",
                path="out.txt",
                content="fixed on visit {{ nodes.visit.output }}\n",
            ),
            _fs_node("read", "read-file", path="out.txt"),
        ],
        edges=[edge("visit", "write"), edge("write", "read")],
    )
    events = await harness.events((await harness.start(flow)).run_id)
    read = next(e for e in events if e.node_id == "read" and e.HasField("node_succeeded"))
    assert json.loads(read.node_succeeded.output_json)["content"] == "fixed on visit 2\n"
