"""The fs adapter end to end: files in the run workspace and configured roots,
symlink escapes refused at run time, bad paths refused at StartRun, size caps."""

from __future__ import annotations

import base64
import itertools
import json
import os
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import Harness, edge, shell_node
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from runwire.adapters import FsAdapter
from runwire.v1 import events_pb2, flow_pb2, run_service_pb2


def fs_node(node_id: str, action: str, **params: Any) -> flow_pb2.Node:
    """An fs node."""
    node = flow_pb2.Node(id=node_id)
    node.action.adapter, node.action.action = "fs", action
    node.action.params.update(params)
    return node


def _flow(*nodes: flow_pb2.Node, edges: list[flow_pb2.Edge] | None = None) -> flow_pb2.Flow:
    flow = flow_pb2.Flow(name="fs", nodes=list(nodes), edges=edges or [])
    # These tests are about the adapter; the confirmation gate has its own test.
    flow.settings.confirm_destructive = False
    return flow


def _chain(*nodes: flow_pb2.Node) -> flow_pb2.Flow:
    return _flow(*nodes, edges=[edge(a.id, b.id) for a, b in itertools.pairwise(nodes)])


def _outputs(events: list[events_pb2.RunEvent]) -> dict[str, Any]:
    return {
        e.node_id: json.loads(e.node_succeeded.output_json)
        for e in events
        if e.HasField("node_succeeded")
    }


def _by_node(events: list[events_pb2.RunEvent], case: str) -> dict[str, Any]:
    return {e.node_id: getattr(e, case) for e in events if e.HasField(case)}


def _workspace(h: Harness, run_id: str) -> Path:
    return h.data_dir / "workspaces" / run_id


async def test_fs_write_read_list_delete_pass_data_along(harness: Harness) -> None:
    """Each action's output is JSON the next node reads through templates."""
    flow = _chain(
        fs_node("write", "write-file", path="build/out.txt", content="hello\n"),
        fs_node("read", "read-file", path="{{ nodes.write.output.path }}"),
        fs_node("list", "list-dir", path="build"),
        fs_node("delete", "delete-file", path="{{ nodes.read.output.path }}"),
        fs_node("again", "delete-file", path="build/out.txt", missing_ok=True),
        fs_node("root", "list-dir"),
    )
    run = await harness.start(flow)
    events = await harness.events(run.run_id)
    assert events[-1].run_completed.status == events_pb2.RUN_STATUS_SUCCEEDED
    out = _outputs(events)
    assert out["write"] == {"path": "build/out.txt", "size": 6}
    assert out["read"] == {"path": "build/out.txt", "content": "hello\n", "size": 6}
    assert out["list"] == {
        "path": "build",
        "entries": [{"name": "out.txt", "type": "file", "size": 6}],
        "truncated": False,
    }
    assert out["delete"] == {"path": "build/out.txt", "deleted": True}
    assert out["again"] == {"path": "build/out.txt", "deleted": False}
    assert out["root"]["entries"] == [{"name": "build", "type": "dir", "size": None}]
    assert not (_workspace(harness, run.run_id) / "build" / "out.txt").exists()


async def test_fs_binary_content_travels_as_base64(harness: Harness) -> None:
    data = bytes(range(256))
    flow = _chain(
        fs_node(
            "write",
            "write-file",
            path="blob.bin",
            content=base64.b64encode(data).decode(),
            encoding="base64",
        ),
        fs_node("text", "read-file", path="blob.bin"),
    )
    flow.nodes.append(fs_node("raw", "read-file", path="blob.bin", encoding="base64"))
    flow.edges.append(edge("write", "raw"))
    run = await harness.start(flow)
    events = await harness.events(run.run_id)
    assert (_workspace(harness, run.run_id) / "blob.bin").read_bytes() == data
    failed = _by_node(events, "node_failed")
    assert failed["text"].error.reason == "NOT_TEXT"
    assert base64.b64decode(_outputs(events)["raw"]["content"]) == data


async def test_fs_write_without_overwrite_keeps_the_existing_file(harness: Harness) -> None:
    flow = _chain(
        fs_node("first", "write-file", path="keep.txt", content="one"),
        fs_node("second", "write-file", path="keep.txt", content="two", overwrite=False),
    )
    run = await harness.start(flow)
    events = await harness.events(run.run_id)
    assert _by_node(events, "node_failed")["second"].error.reason == "EXISTS"
    assert (_workspace(harness, run.run_id) / "keep.txt").read_text() == "one"


async def test_fs_symlink_escapes_are_refused_at_run_time(harness: Harness, tmp_path: Path) -> None:
    """Links made inside the workspace (here by a shell node) that point outside it
    are refused on read, write and list, each with a PATH SandboxViolation; a link
    that stays inside works; deleting a link removes the link, not its target."""
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_text("top secret")
    script = (
        f"ln -s {outside} escape && ln -s {secret} secret-link && "
        "echo inside > real.txt && ln -s real.txt alias.txt"
    )
    setup = shell_node("setup", "sh", "-c", script)
    probes = [
        fs_node("read_dir_link", "read-file", path="escape/secret.txt"),
        fs_node("read_file_link", "read-file", path="secret-link"),
        fs_node("write_through", "write-file", path="escape/new.txt", content="x"),
        fs_node("overwrite_target", "write-file", path="secret-link", content="pwned"),
        fs_node("list_outside", "list-dir", path="escape"),
        fs_node("delete_inside_link", "delete-file", path="escape/secret.txt"),
        fs_node("read_alias", "read-file", path="alias.txt"),
    ]
    flow = _flow(setup, *probes, edges=[edge("setup", p.id) for p in probes])
    flow.nodes.append(fs_node("unlink", "delete-file", path="secret-link"))
    flow.edges.extend([edge(p.id, "unlink", flow_pb2.EDGE_CONDITION_ALWAYS) for p in probes])
    run = await harness.start(flow)
    events = await harness.events(run.run_id)

    refused = [
        "read_dir_link",
        "read_file_link",
        "write_through",
        "overwrite_target",
        "list_outside",
        "delete_inside_link",
    ]
    violations = _by_node(events, "sandbox_violation")
    assert sorted(violations) == sorted(refused)
    failed = _by_node(events, "node_failed")
    for node_id in refused:
        assert violations[node_id].kind == events_pb2.SANDBOX_VIOLATION_KIND_PATH
        assert violations[node_id].adapter == "fs"
        assert "resolves outside the run workspace" in violations[node_id].detail
        assert failed[node_id].error.reason == "SANDBOX"
    assert violations["read_dir_link"].target == "escape/secret.txt"
    assert violations["overwrite_target"].target == "secret-link"
    out = _outputs(events)
    assert out["read_alias"]["content"] == "inside\n"
    assert out["unlink"] == {"path": "secret-link", "deleted": True}
    assert secret.read_text() == "top secret"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


async def test_fs_extra_root_is_reachable_by_name(harness_factory: Any, tmp_path: Path) -> None:
    data = tmp_path / "shared"
    data.mkdir()
    (data / "in.csv").write_text("a,b\n")
    h: Harness = await harness_factory(fs_roots=(f"data={data}",))
    flow = _chain(
        fs_node("read", "read-file", root="data", path="in.csv"),
        fs_node("copy", "write-file", path="copy.csv", content="{{ nodes.read.output.content }}"),
        fs_node("out", "write-file", root="data", path="out/copy.csv", content="x"),
    )
    run = await h.start(flow)
    events = await h.events(run.run_id)
    out = _outputs(events)
    assert out["read"] == {"path": "data:in.csv", "content": "a,b\n", "size": 4}
    assert out["out"] == {"path": "data:out/copy.csv", "size": 1}
    assert (_workspace(h, run.run_id) / "copy.csv").read_text() == "a,b\n"
    assert (data / "out" / "copy.csv").read_text() == "x"


async def test_fs_size_caps_refuse_big_reads_and_writes(harness_factory: Any) -> None:
    h: Harness = await harness_factory(fs_max_bytes=1024)
    inputs = struct_pb2.Struct()
    inputs.update({"blob": "y" * 2000})
    flow = _flow(
        shell_node("make", "sh", "-c", "head -c 2000 /dev/zero > big.bin"),
        fs_node("read", "read-file", path="big.bin", encoding="base64"),
        fs_node("write", "write-file", path="w.txt", content="{{ inputs.blob }}"),
        edges=[edge("make", "read"), edge("read", "write", flow_pb2.EDGE_CONDITION_ALWAYS)],
    )
    run = await h.start(flow, inputs=inputs)
    events = await h.events(run.run_id)
    violations = _by_node(events, "sandbox_violation")
    assert {n: v.kind for n, v in violations.items()} == {
        "read": events_pb2.SANDBOX_VIOLATION_KIND_LIMIT,
        "write": events_pb2.SANDBOX_VIOLATION_KIND_LIMIT,
    }
    assert violations["read"].detail == (
        "'big.bin' is 2000 bytes, over this server's 1024-byte read limit"
    )
    assert violations["write"].target == "w.txt"
    assert not (_workspace(h, run.run_id) / "w.txt").exists()


async def test_fs_delete_waits_for_confirmation_with_a_readable_summary(
    harness: Harness,
) -> None:
    flow = flow_pb2.Flow(
        name="fs",
        nodes=[
            fs_node("make", "write-file", path="build/out.bin", content="x"),
            fs_node("clean", "delete-file", path="./build//{{ nodes.make.output.path[6:] }}"),
        ],
        edges=[edge("make", "clean")],
    )
    run = await harness.start(flow)
    events: list[events_pb2.RunEvent] = []
    async for response in harness.stub.WatchRun(run_service_pb2.WatchRunRequest(run_id=run.run_id)):
        events.extend(response.events)
        if any(e.HasField("awaiting_confirmation") for e in events):
            break
    waiting = _by_node(events, "awaiting_confirmation")["clean"]
    assert waiting.action_summary == "Delete file: build/out.bin"
    assert (_workspace(harness, run.run_id) / "build" / "out.bin").exists()
    await harness.stub.ConfirmAction(
        run_service_pb2.ConfirmActionRequest(run_id=run.run_id, node_id="clean", approve=True)
    )
    events = await harness.events(run.run_id)
    assert _outputs(events)["clean"] == {"path": "build/out.bin", "deleted": True}
    assert not (_workspace(harness, run.run_id) / "build" / "out.bin").exists()


P = "flow.nodes[0].action.params"


@pytest.mark.parametrize(
    ("action", "params", "field"),
    [
        ("read-file", {"path": "/etc/passwd"}, f"{P}.path"),
        ("read-file", {"path": "../outside.txt"}, f"{P}.path"),
        ("read-file", {"path": "a/../../outside.txt"}, f"{P}.path"),
        ("write-file", {"path": "a/..", "content": "x"}, f"{P}.path"),
        ("read-file", {"path": "a\x00b"}, f"{P}.path"),
        ("read-file", {"path": "a\nb"}, f"{P}.path"),
        ("delete-file", {"path": "evil\u202etxt.exe"}, f"{P}.path"),
        ("delete-file", {"path": "./"}, f"{P}.path"),
        ("list-dir", {"path": "/{{ inputs.dir }}"}, f"{P}.path"),
        ("read-file", {"path": ""}, f"{P}.path"),
        ("read-file", {"path": "x", "root": "elsewhere"}, f"{P}.root"),
        ("write-file", {"path": "x", "content": "%%%", "encoding": "base64"}, f"{P}.content"),
        ("write-file", {"path": "x", "content": "y" * (1024 * 1024 + 1)}, f"{P}.content"),
        ("read-file", {"path": "x", "mode": "r"}, P),
    ],
    ids=[
        "absolute",
        "dotdot",
        "dotdot-deep",
        "dotdot-last",
        "nul",
        "newline",
        "bidi",
        "root-is-not-a-file",
        "templated-absolute",
        "empty",
        "unknown-root",
        "bad-base64",
        "over-write-cap",
        "unknown-param",
    ],
)
async def test_fs_bad_params_are_refused_at_start_run(
    harness: Harness, action: str, params: dict[str, Any], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.start(_flow(fs_node("a", action, **params)))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    next(d for d in status.details if d.Is(bad.DESCRIPTOR)).Unpack(bad)
    assert [v.field for v in bad.field_violations] == [field]
    assert list((await harness.stub.ListRuns(run_service_pb2.ListRunsRequest())).runs) == []
    # Still serving.
    run = await harness.start(_flow(fs_node("ok", "list-dir")))
    events = await harness.events(run.run_id)
    assert events[-1].run_completed.status == events_pb2.RUN_STATUS_SUCCEEDED


async def test_fs_opened_descriptor_is_checked_even_if_resolution_was_raced(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A link swapped in between resolving a path and opening it would slip past
    the resolved-path check. Simulate losing that race (resolution returns the
    path unresolved) and show the check on the opened descriptor still refuses."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("top secret")

    def raced(self: FsAdapter, where: Any, path: Path) -> Path:
        return Path(os.path.abspath(path))

    monkeypatch.setattr(FsAdapter, "_contain", raced)
    flow = _chain(
        shell_node("setup", "sh", "-c", f"ln -s {outside} escape"),
        fs_node("read", "read-file", path="escape/secret.txt"),
    )
    run = await harness.start(flow)
    events = await harness.events(run.run_id)
    violation = _by_node(events, "sandbox_violation")["read"]
    assert violation.kind == events_pb2.SANDBOX_VIOLATION_KIND_PATH
    assert "resolves outside the run workspace" in violation.detail
    assert "top secret" not in json.dumps([e.node_failed.output_json for e in events])
