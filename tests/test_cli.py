"""The `runwire` command against a live server: the README's examples, as a person runs them."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from conftest import Harness, wait_for_event

from runwire.v1 import events_pb2, run_service_pb2

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


async def _cli(harness: Harness, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runwire.cli", *args, "--addr", harness.addr,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "RUNWIRE_PRINCIPAL": "tester"},
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _start_watch(harness: Harness, example: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runwire.cli", "run", str(EXAMPLES / example), "--watch", "--plain",
        "--addr", harness.addr, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    first = (await proc.stdout.readline()).decode()
    assert first.startswith("started run_"), first
    return proc, first.split()[1]


async def test_cli_run_watch_hello_succeeds(harness: Harness) -> None:
    code, out, err = await _cli(harness, "run", str(EXAMPLES / "hello.yaml"), "--watch", "--plain")
    assert code == 0, err
    assert "node_log greet (visit 1, attempt 1) " in out
    assert "SUCCEEDED: 4 succeeded, 0 failed, 0 skipped" in out


async def test_cli_watch_exits_non_zero_when_run_fails(harness: Harness) -> None:
    code, out, _ = await _cli(harness, "run", str(EXAMPLES / "failure-handling.yaml"))
    assert code == 0
    run_id = out.strip()
    await wait_for_event(harness.stub, run_id, lambda e: e.HasField("run_completed"))
    code, out, _ = await _cli(harness, "watch", run_id, "--plain")
    # The failure is handled by a FAILURE edge, so the run itself succeeds.
    assert code == 0
    assert "1 succeeded, 1 failed, 1 skipped" in out
    code, out, err = await _cli(
        harness, "run", str(EXAMPLES / "loop-until-green.yaml"), "--watch", "--plain"
    )
    assert code == 0, err
    assert "node_started check (visit 2, attempt 1)" in out


async def test_cli_bad_flow_prints_field_violations(harness: Harness, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nnodes:\n  - id: a\n    action: {adapter: nope, action: x}\n")
    code, _, err = await _cli(harness, "run", str(bad))
    assert code == 1
    assert "INVALID_ARGUMENT" in err
    assert "flow.nodes[0].action.adapter: unknown adapter 'nope'" in err


async def test_cli_approve_resolves_pending_approval(harness: Harness) -> None:
    # The example takes an input; without it validation names the template.
    code, _, err = await _cli(harness, "run", str(EXAMPLES / "approval.yaml"))
    assert code == 1
    assert "flow.nodes[0].action.params.value.version: run input 'version' is not given" in err
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runwire.cli", "run", str(EXAMPLES / "approval.yaml"), "--input", "version=1.4.2",
        "--watch", "--plain", "--addr", harness.addr, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    run_id = (await proc.stdout.readline()).decode().split()[1]
    event = await wait_for_event(harness.stub, run_id, lambda e: e.HasField("approval_requested"))
    assert event.approval_requested.message == "Ship 1.4.2 to production?"
    code, _, err = await _cli(harness, "approve", run_id, "ship", "--comment", "LGTM")
    assert code == 0, err
    rest = (await proc.stdout.read()).decode()
    assert await proc.wait() == 0
    assert f"runwire approve|reject {run_id} ship" in rest
    resolved = next(line for line in rest.splitlines() if " approval_resolved " in line)
    assert 'decision: GATE_DECISION_APPROVED principal: "user:tester"' in resolved
    got = await harness.stub.GetRun(run_service_pb2.GetRunRequest(run_id=run_id))
    assert got.run.status == events_pb2.RUN_STATUS_SUCCEEDED


async def test_cli_reject_skips_destructive_action(harness: Harness) -> None:
    proc, run_id = await _start_watch(harness, "delete-with-confirmation.yaml")
    event = await wait_for_event(
        harness.stub, run_id, lambda e: e.HasField("awaiting_confirmation")
    )
    assert event.awaiting_confirmation.action_summary == "Delete file: build/out.bin"
    code, _, err = await _cli(harness, "reject", run_id, "cleanup", "--comment", "keep it")
    assert code == 0, err
    await proc.communicate()
    assert proc.returncode == 0
    events = await harness.events(run_id)
    skipped = next(e for e in events if e.HasField("node_skipped"))
    assert skipped.node_id == "cleanup"
    assert skipped.node_skipped.reason == "confirmation rejected by user:tester"
    assert (harness.data_dir / "workspaces" / run_id / "build" / "out.bin").exists()


async def test_cli_confirm_runs_destructive_action(harness: Harness) -> None:
    proc, run_id = await _start_watch(harness, "delete-with-confirmation.yaml")
    await wait_for_event(harness.stub, run_id, lambda e: e.HasField("awaiting_confirmation"))
    code, _, err = await _cli(harness, "confirm", run_id, "cleanup")
    assert code == 0, err
    await proc.communicate()
    assert proc.returncode == 0
    events = await harness.events(run_id)
    assert any(e.node_id == "cleanup" and e.HasField("node_succeeded") for e in events)
    assert not (harness.data_dir / "workspaces" / run_id / "build" / "out.bin").exists()
    code, out, _ = await _cli(harness, "runs", "list")
    assert run_id in out
