"""`runwire watch --kind/--node`: the CLI's filtered watch, against a real server
(and a loopback TCP proxy that resets its connection mid-stream)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

from _live_proxy import TcpProxy
from conftest import Harness, wait_for_event

from runwire._view import event_line
from runwire.v1 import events_pb2, run_service_pb2

# The CLI reads RUNWIRE_* and ~/.config/runwire: start each from none of the caller's.
_ENV = {k: v for k, v in os.environ.items() if not k.startswith("RUNWIRE_")} | {
    "XDG_CONFIG_HOME": "/nonexistent",
}
# b holds until the test creates `go` in the run's workspace.
_FLOW = {
    "name": "two",
    "nodes": [
        {"id": "a", "action": {"adapter": "shell", "action": "exec",
                               "params": {"argv": ["sh", "-c", "echo one; echo two"]}}},
        {"id": "b", "action": {"adapter": "shell", "action": "exec",
                               "params": {"argv": ["sh", "-c",
                                                   "echo b; while [ ! -e go ]; do sleep 0.02; done"]}}},
    ],
    "edges": [{"source": "a", "target": "b"}],
}  # fmt: skip


async def _spawn(addr: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runwire.cli", *args, "--addr", addr,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_ENV,
    )  # fmt: skip


async def _cli(addr: str, *args: str) -> tuple[int, str, str]:
    proc = await _spawn(addr, *args)
    out, err = await proc.communicate()
    assert proc.returncode is not None
    assert b"Traceback" not in err, err.decode()
    return proc.returncode, out.decode(), err.decode()


async def _start(harness: Harness, tmp_path: Path) -> str:
    flow = tmp_path / "two.json"
    flow.write_text(json.dumps(_FLOW))
    code, out, err = await _cli(harness.addr, "run", str(flow))
    assert code == 0, err
    return out.strip()


def _release(harness: Harness, run_id: str) -> None:
    (harness.data_dir / "workspaces" / run_id / "go").touch()


async def _finished(harness: Harness, tmp_path: Path) -> str:
    run_id = await _start(harness, tmp_path)
    await wait_for_event(
        harness.stub, run_id, lambda e: e.HasField("node_log") and e.node_id == "b"
    )
    _release(harness, run_id)
    await wait_for_event(harness.stub, run_id, lambda e: e.HasField("run_completed"))
    return run_id


async def test_cli_watch_filter_prints_only_the_selected_events(
    harness: Harness, tmp_path: Path
) -> None:
    run_id = await _finished(harness, tmp_path)
    events = await harness.events(run_id)

    code, out, err = await _cli(
        harness.addr, "watch", run_id, "--plain", "--kind", "node_log", "--node", "b"
    )
    assert code == 0, err
    *lines, summary = out.splitlines()
    selected = [
        e
        for e in events
        if e.HasField("run_completed") or (e.HasField("node_log") and e.node_id == "b")
    ]
    assert [e.node_log.line for e in selected[:-1]] == ["b"]
    assert lines == [event_line(e) for e in selected]  # seqs skip: no gap error
    assert summary.startswith(f"run {run_id} SUCCEEDED")

    # Kinds and nodes are each repeatable; run-level events pass a node filter.
    code, out, err = await _cli(
        harness.addr, "watch", run_id, "--plain",
        "--kind", "node_log", "--kind", "run_started", "--node", "a", "--node", "b",
    )  # fmt: skip
    assert code == 0, err
    kinds = {"node_log", "run_started", "run_completed"}
    assert out.splitlines()[:-1] == [
        event_line(e) for e in events if e.WhichOneof("event") in kinds
    ]


async def test_cli_watch_filter_resumes_after_what_the_server_looked_through(
    harness: Harness, tmp_path: Path
) -> None:
    """Watching `--node a` while b holds: the server's first response carries a's
    events and `resume_after_seq` past b's NodeStarted (looked at, skipped).
    After the connection is reset, the CLI resumes from there, not from the
    last seq it printed, and still prints each selected event exactly once."""
    run_id = await _start(harness, tmp_path)
    b_started = await wait_for_event(
        harness.stub, run_id, lambda e: e.HasField("node_started") and e.node_id == "b"
    )
    proxy = TcpProxy(harness.server.port)
    try:
        addr = await proxy.start()
        proc = await _spawn(addr, "watch", run_id, "--plain", "--node", "a", "--give-up-after", "0")
        assert proc.stdout is not None
        assert proc.stderr is not None
        printed: list[str] = []
        while not re.search(r" node_succeeded a ", printed[-1] if printed else ""):
            line = await proc.stdout.readline()
            assert line, "the watch ended before a's NodeSucceeded"
            printed.append(line.decode().rstrip("\n"))
        a_done = int(printed[-1].split()[0])
        assert await proxy.cut() >= 1
        retry = ""
        while "retrying after seq" not in retry:
            retry = (await proc.stderr.readline()).decode()
            assert retry, "the CLI never said it retries"
        resumed_after = int(re.search(r"retrying after seq (\d+)", retry)[1])  # type: ignore[index]
        assert resumed_after >= b_started.seq > a_done
        _release(harness, run_id)
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
    finally:
        await proxy.close()
    assert proxy.accepted >= 2  # it came back through the proxy
    events = await harness.events(run_id)
    expected = [event_line(e) for e in events if e.node_id in ("", "a")]
    lines = printed + out.decode().splitlines()[:-1]
    assert lines == expected
    assert events[-1].run_completed.status == events_pb2.RUN_STATUS_SUCCEEDED


async def test_cli_watch_bad_filter_exits_1_naming_the_field(
    harness: Harness, tmp_path: Path
) -> None:
    run_id = await _finished(harness, tmp_path)
    code, out, err = await _cli(
        harness.addr, "watch", run_id, "--plain", "--kind", "node_log", "--kind", "nope",
        "--node", "x" * 65,
    )  # fmt: skip
    assert (code, out) == (1, "")
    assert err.startswith("runwire: INVALID_ARGUMENT: "), err
    assert "  filter.kinds[1]: 'nope' is not a RunEvent kind" in err
    assert "  filter.node_ids[0]: must be 1 to 64 characters" in err
    assert "retrying" not in err


async def test_cli_run_watch_filter_prints_only_the_selected_events(
    harness: Harness, tmp_path: Path
) -> None:
    flow = tmp_path / "two.json"
    flow.write_text(json.dumps({**_FLOW, "nodes": [_FLOW["nodes"][0], {
        "id": "b", "action": {"adapter": "shell", "action": "exec",
                              "params": {"argv": ["sh", "-c", "echo b"]}}}]}))  # fmt: skip
    code, out, err = await _cli(
        harness.addr, "run", str(flow), "--watch", "--plain", "--kind", "node_log", "--node", "a"
    )
    assert code == 0, err
    started, *lines, summary = out.splitlines()
    run_id = started.removeprefix("started ")
    events = await harness.events(run_id)
    selected = [
        e
        for e in events
        if e.HasField("run_completed") or (e.HasField("node_log") and e.node_id == "a")
    ]
    assert [e.node_log.line for e in selected[:-1]] == ["one", "two"]
    assert lines == [event_line(e) for e in selected]
    assert summary.startswith(f"run {run_id} SUCCEEDED")


async def test_cli_run_refuses_a_filter_it_cannot_apply_before_starting_the_run(
    harness: Harness, tmp_path: Path
) -> None:
    flow = tmp_path / "two.json"
    flow.write_text(json.dumps(_FLOW))
    for args, says in (
        (("--kind", "node_log"), "--kind and --node choose what --watch shows; add --watch"),
        (("--watch", "--kind", "nope"), "--kind 'nope' is not a RunEvent kind; one of: "),
        (("--watch", "--node", "c"), "--node 'c' is not a node of this flow; its nodes: a, b"),
    ):
        code, out, err = await _cli(harness.addr, "run", str(flow), *args)
        assert (code, out) == (2, ""), err
        assert err.startswith(f"runwire: {says}"), err
    assert list((await harness.stub.ListRuns(run_service_pb2.ListRunsRequest())).runs) == []
