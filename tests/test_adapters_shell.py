"""The shell adapter's hardening, end to end: clean environment, resource limits,
capped output and safe text, over real gRPC, Postgres and subprocesses."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from conftest import SHELL_ALLOW, Harness, shell_node
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from runwire.adapters import ShellLimits
from runwire.v1 import events_pb2, flow_pb2, run_service_pb2


def _flow(*nodes: flow_pb2.Node) -> flow_pb2.Flow:
    return flow_pb2.Flow(name="shell", nodes=list(nodes))


def _logs(events: list[events_pb2.RunEvent]) -> list[events_pb2.NodeLog]:
    return [e.node_log for e in events if e.HasField("node_log")]


def _one(events: list[events_pb2.RunEvent], case: str) -> Any:
    found = [getattr(e, case) for e in events if e.HasField(case)]
    assert len(found) == 1, f"expected one {case}, got {len(found)}"
    return found[0]


async def test_shell_child_does_not_inherit_the_server_environment(
    harness_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A secret in the server's environment must not reach a child; only PATH,
    HOME, LANG and the node's own env do."""
    monkeypatch.setenv("RUNWIRE_TEST_SECRET", "do-not-leak")
    h: Harness = await harness_factory(shell_allow=(*SHELL_ALLOW, "env"))
    node = shell_node("env", "env")
    node.action.params.update({"env": {"GREETING": "hi"}})
    run = await h.start(_flow(node))
    events = await h.events(run.run_id)
    assert events[-1].run_completed.status == events_pb2.RUN_STATUS_SUCCEEDED
    variables = dict(line.line.split("=", 1) for line in _logs(events))
    assert set(variables) == {"PATH", "HOME", "LANG", "GREETING"}
    assert variables["GREETING"] == "hi"
    assert variables["HOME"] == str(h.data_dir.resolve() / "workspaces" / run.run_id)
    assert "do-not-leak" not in json.dumps(variables)


async def test_shell_output_over_the_cap_ends_with_one_truncation_marker(
    harness_factory: Any,
) -> None:
    h: Harness = await harness_factory(shell_limits=ShellLimits(output_bytes=1000))
    run = await h.start(_flow(shell_node("count", "seq", "1", "100000")))
    events = await h.events(run.run_id)
    logs = _logs(events)
    stdout = [log for log in logs if log.stream == events_pb2.LOG_STREAM_STDOUT]
    markers = [log for log in logs if log.stream == events_pb2.LOG_STREAM_SYSTEM]
    assert [s.line for s in stdout] == [str(i) for i in range(1, len(stdout) + 1)]
    assert sum(len(s.line) + 1 for s in stdout) <= 1000
    assert not any(s.truncated for s in stdout)
    assert len(markers) == 1
    assert markers[0].truncated
    assert "1000-byte output cap" in markers[0].line
    # The marker is the last line logged; the child still ran to the end.
    assert logs[-1] == markers[0]
    output = json.loads(_one(events, "node_succeeded").output_json)
    assert output["truncated"] is True
    assert output["stdout_tail"].endswith("99999\n100000\n")


async def test_shell_long_line_is_cut_and_flagged(harness: Harness) -> None:
    run = await harness.start(_flow(shell_node("wide", "sh", "-c", "printf '%0100000d\\nok\\n' 7")))
    events = await harness.events(run.run_id)
    logs = _logs(events)
    assert [len(log.line) for log in logs] == [16384, 2]
    assert [log.truncated for log in logs] == [True, False]


async def test_shell_invalid_utf8_and_nul_are_logged_and_stored_safely(harness: Harness) -> None:
    run = await harness.start(
        _flow(shell_node("bytes", "sh", "-c", "printf 'a\\377b\\000c\\n' && printf 'x\\000' >&2"))
    )
    events = await harness.events(run.run_id)
    by_stream = {log.stream: log.line for log in _logs(events)}
    assert by_stream[events_pb2.LOG_STREAM_STDOUT] == "a\ufffdb\u2400c"
    assert by_stream[events_pb2.LOG_STREAM_STDERR] == "x\u2400"
    output = json.loads(_one(events, "node_succeeded").output_json)
    assert output["stdout_tail"] == "a\ufffdb\u2400c\n"
    # What was streamed is what was stored: the bytes survived Postgres.
    assert events == await harness.stored(run.run_id)


async def test_shell_limits_are_set_in_the_child(harness_factory: Any) -> None:
    limits = ShellLimits(
        cpu_seconds=30, memory_bytes=2 << 30, file_bytes=1 << 20, open_files=64, processes=500
    )
    h: Harness = await harness_factory(shell_limits=limits)
    script = "ulimit -t; ulimit -v; ulimit -f; ulimit -n; ulimit -p; ulimit -c"
    run = await h.start(_flow(shell_node("limits", "sh", "-c", script)))
    events = await h.events(run.run_id)
    # dash reports -v in KiB and -f in 512-byte blocks.
    assert [log.line for log in _logs(events)] == [
        "30",
        str((2 << 30) // 1024),
        str((1 << 20) // 512),
        "64",
        "500",
        "0",
    ]


async def test_shell_file_size_limit_kills_a_big_write(harness_factory: Any) -> None:
    """A child writing past RLIMIT_FSIZE is killed by SIGXFSZ: the node fails with
    a LIMIT SandboxViolation and the file stops at the limit."""
    h: Harness = await harness_factory(
        shell_allow=(*SHELL_ALLOW, "dd"), shell_limits=ShellLimits(file_bytes=64 * 1024)
    )
    run = await h.start(
        _flow(shell_node("big", "dd", "if=/dev/zero", "of=big.bin", "bs=1024", "count=1024"))
    )
    events = await h.events(run.run_id)
    violation = _one(events, "sandbox_violation")
    assert violation.kind == events_pb2.SANDBOX_VIOLATION_KIND_LIMIT
    assert violation.adapter == "shell"
    assert violation.target == "dd"
    assert "file size limit (65536 bytes)" in violation.detail
    failed = _one(events, "node_failed")
    assert failed.error.reason == "SANDBOX"
    assert failed.error.exit_code == -25  # SIGXFSZ
    assert events[-1].run_completed.status == events_pb2.RUN_STATUS_FAILED
    written = h.data_dir / "workspaces" / run.run_id / "big.bin"
    assert written.stat().st_size == 64 * 1024


async def test_shell_cpu_limit_stops_a_busy_loop(harness_factory: Any) -> None:
    h: Harness = await harness_factory(shell_limits=ShellLimits(cpu_seconds=1))
    run = await h.start(_flow(shell_node("spin", "sh", "-c", "while :; do :; done")))
    events = await h.events(run.run_id)
    violation = _one(events, "sandbox_violation")
    assert violation.kind == events_pb2.SANDBOX_VIOLATION_KIND_LIMIT
    assert "CPU time limit (1s)" in violation.detail
    assert _one(events, "node_failed").error.reason == "SANDBOX"


async def test_shell_destructive_program_waits_for_confirmation(harness_factory: Any) -> None:
    h: Harness = await harness_factory(shell_destructive=("true",))
    run = await h.start(_flow(shell_node("wipe", "true", "--all")))
    events: list[events_pb2.RunEvent] = []
    async for response in h.stub.WatchRun(run_service_pb2.WatchRunRequest(run_id=run.run_id)):
        events.extend(response.events)
        if any(e.HasField("awaiting_confirmation") for e in events):
            break
    assert _one(events, "awaiting_confirmation").action_summary == "Run: true --all"
    await h.stub.ConfirmAction(
        run_service_pb2.ConfirmActionRequest(run_id=run.run_id, node_id="wipe", approve=True)
    )
    events = await h.events(run.run_id)
    assert events[-1].run_completed.status == events_pb2.RUN_STATUS_SUCCEEDED


@pytest.mark.parametrize(
    ("argv", "env", "field"),
    [
        (["echo", "a\x00b"], None, "flow.nodes[0].action.params.argv[1]"),
        (["echo"], {"K": "v\x00"}, "flow.nodes[0].action.params.env.K"),
        (["echo"], {"LD_PRELOAD": "./evil.so"}, "flow.nodes[0].action.params.env.LD_PRELOAD"),
        (["rm", "-rf", "x"], None, "flow.nodes[0].action.params.argv[0]"),
    ],
    ids=["nul-in-argv", "nul-in-env", "loader-variable", "not-allowed"],
)
async def test_shell_bad_params_are_refused_at_start_run(
    harness: Harness, argv: list[str], env: dict[str, str] | None, field: str
) -> None:
    node = shell_node("a", *argv)
    if env is not None:
        node.action.params.update({"env": env})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.start(_flow(node))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    next(d for d in status.details if d.Is(bad.DESCRIPTOR)).Unpack(bad)
    assert [v.field for v in bad.field_violations] == [field]
    # Still serving.
    run = await harness.start(_flow(shell_node("ok", "true")))
    assert (await harness.events(run.run_id))[-1].run_completed.status == (
        events_pb2.RUN_STATUS_SUCCEEDED
    )
