"""`runwire subscriptions create|list|get|delete|resume` against a live server."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from conftest import Harness

_ENV = {k: v for k, v in os.environ.items() if not k.startswith("RUNWIRE_")} | {
    "XDG_CONFIG_HOME": "/nonexistent",
}


async def _cli(harness: Harness, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runwire.cli", *args, "--addr", harness.addr,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_ENV,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    assert b"Traceback" not in err, err.decode()
    return proc.returncode, out.decode(), err.decode()


async def test_subscriptions_cli_create_list_get_resume_delete(harness_factory: Any) -> None:
    harness: Harness = await harness_factory(webhook_allow=("127.0.0.1",))
    code, out, err = await _cli(
        harness, "subscriptions", "create", "http://127.0.0.1:9/hook", "--flow", "deploy",
        "--label", "team=infra", "--kind", "node_failed", "--kind", "run_completed",
        "--status", "running", "--node", "build", "--start", "earliest", "--request-id", "k1",
    )  # fmt: skip
    assert code == 0, err
    name, secret_line = out.splitlines()[:2]
    assert name.startswith("subscriptions/sub_")
    assert secret_line.startswith("secret: whsec_")

    code, out, _ = await _cli(harness, "subscriptions", "list")
    assert code == 0
    header, row = out.splitlines()
    assert header.split() == ["NAME", "STATE", "DELIVERED", "FAILURES", "TARGET"]
    assert row.split() == [name, "ACTIVE", "0", "0", "http://127.0.0.1:9/hook"]

    code, out, _ = await _cli(harness, "subscriptions", "get", name.split("/")[1], "-o", "json")
    assert code == 0
    got = json.loads(out)["subscription"]
    assert got["filter"] == {
        "flowName": "deploy",
        "labels": {"team": "infra"},
        "runStatuses": ["RUN_STATUS_RUNNING"],
        "events": {"kinds": ["node_failed", "run_completed"], "nodeIds": ["build"]},
    }
    assert got["start"] == "STREAM_START_EARLIEST"
    assert "secret" not in got

    code, out, _ = await _cli(harness, "subscriptions", "get", name)
    assert code == 0
    assert "state: ACTIVE" in out
    assert "filter: flow=deploy; label team=infra; status=RUNNING" in out

    code, out, _ = await _cli(harness, "subscriptions", "resume", name)
    assert code == 0
    assert "state: ACTIVE" in out

    code, out, _ = await _cli(harness, "subscriptions", "delete", name)
    assert (code, out.strip()) == (0, f"deleted {name}")
    code, _, err = await _cli(harness, "subscriptions", "get", name)
    assert code == 1
    assert "NOT_FOUND" in err


async def test_subscriptions_cli_refusals_name_the_field(harness: Harness) -> None:
    code, _, err = await _cli(
        harness, "subscriptions", "create", "https://1.1.1.1/h", "--kind", "nope"
    )
    assert code == 1
    assert "subscription.filter.events.kinds[0]: 'nope' is not a RunEvent kind" in err
    code, _, err = await _cli(harness, "subscriptions", "create", "http://127.0.0.1:9/h")
    assert code == 1
    assert "subscription.target_url" in err
    code, _, err = await _cli(
        harness, "subscriptions", "create", "https://1.1.1.1/h", "--label", "x"
    )
    assert code == 2
    assert "--label takes KEY=VALUE" in err
