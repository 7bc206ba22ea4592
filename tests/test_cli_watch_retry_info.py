"""`runwire watch` waits at least as long as an overloaded server asks (its
RetryInfo) before it tries again, against a real server at its watcher bound."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from typing import Any

from conftest import Harness

from runwire.v1 import flow_pb2, run_service_pb2

_ENV = {k: v for k, v in os.environ.items() if not k.startswith("RUNWIRE_")} | {
    "XDG_CONFIG_HOME": "/nonexistent",
}


async def test_cli_watch_waits_out_the_servers_retry_delay(harness_factory: Any) -> None:
    h: Harness = await harness_factory(max_watchers=1)
    gate = flow_pb2.Node(id="ok")
    gate.approval.message = "go?"
    run = await h.start(flow_pb2.Flow(name="held", nodes=[gate]))
    holder = h.stub.WatchRun(run_service_pb2.WatchRunRequest(run_id=run.run_id))
    assert (await holder.read()).events[0].HasField("run_started")

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runwire.cli", "watch", run.run_id, "--addr", h.addr,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_ENV,
    )  # fmt: skip
    assert proc.stderr is not None
    line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
    match = re.search(
        r"interrupted \(RESOURCE_EXHAUSTED\); retrying after seq 0 in ([\d.]+)s", line
    )
    assert match, line
    # The server's RetryInfo asks for 1 s; the CLI's own first backoff is 0.1 s.
    assert float(match.group(1)) >= 1.0
    holder.cancel()
    await h.stub.ResolveApproval(
        run_service_pb2.ResolveApprovalRequest(run_id=run.run_id, node_id="ok", approve=True)
    )
    _out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err
