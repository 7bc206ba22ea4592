"""The `runwire` client commands as a script or a person meets them: inputs that
keep their data, clear errors with documented exit codes, machine-readable
output, paging and filters, control with --wait, logs, version."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Harness, wait_for_event

from runwire.v1 import events_pb2

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# A shell node that holds until the test creates `name` in the run's workspace.
_HOLD = "while [ ! -e {name} ]; do sleep 0.02; done; echo released {name}"


# The CLI reads RUNWIRE_* and ~/.config/runwire: start each from none of the caller's.
_ENV = {k: v for k, v in os.environ.items() if not k.startswith("RUNWIRE_")} | {
    "RUNWIRE_PRINCIPAL": "tester",
    "XDG_CONFIG_HOME": "/nonexistent",
}


# A terminal delivers Ctrl-C to a CLI whose SIGINT is at its default. A runner
# that starts the tests in the background (CI does) leaves SIGINT ignored, and an
# ignored signal stays ignored across exec: the CLI would then rightly never see
# it. This prefix puts SIGINT back to its default before the CLI starts.
_AS_FROM_A_TERMINAL = (
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.executable, [sys.executable, '-m', 'runwire.cli', *sys.argv[1:]])",
)


async def _spawn(*args: str, addr: str | None = None, **kwargs: Any) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, *_AS_FROM_A_TERMINAL, *args, *(["--addr", addr] if addr else []),
        stdout=kwargs.pop("stdout", asyncio.subprocess.PIPE), stderr=asyncio.subprocess.PIPE,
        env={**_ENV, **kwargs.pop("env", {})}, **kwargs,
    )  # fmt: skip


async def _cli(harness: Harness | None, *args: str, **kwargs: Any) -> tuple[int, str, str]:
    proc = await _spawn(*args, addr=harness.addr if harness else None, **kwargs)
    out, err = await proc.communicate()
    assert proc.returncode is not None
    assert b"Traceback" not in err, err.decode()
    return proc.returncode, out.decode(), err.decode()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _hold_flow(tmp_path: Path, *names: str) -> Path:
    nodes = [
        {"id": n, "action": {"adapter": "shell", "action": "exec",
                             "params": {"argv": ["sh", "-c", _HOLD.format(name=n)]}}}
        for n in names
    ]  # fmt: skip
    edges = [{"source": a, "target": b} for a, b in itertools.pairwise(names)]
    return _write(
        tmp_path / "hold.json", json.dumps({"name": "hold", "nodes": nodes, "edges": edges})
    )


def _release(harness: Harness, run_id: str, name: str) -> None:
    (harness.data_dir / "workspaces" / run_id / name).touch()


async def test_cli_inputs_keep_strings_and_type_json(harness: Harness, tmp_path: Path) -> None:
    """Regression: `--input version=1.10` became 1.1 (every value was parsed as
    JSON first); now `key=value` is a string and `key:=json` typed, as in HTTPie."""
    flow = _write(tmp_path / "echo.yaml", """
name: echo-inputs
nodes:
  - id: say
    action:
      adapter: shell
      action: exec
      params: {argv: [echo, "v={{ inputs.version }} --count={{ inputs.n }} on={{ inputs.on }} tags={{ inputs.tags }} f={{ inputs.from_file }}"]}
""")  # fmt: skip
    inputs = _write(tmp_path / "inputs.yaml", "from_file: 0.5\nversion: overridden\n")
    code, out, err = await _cli(
        harness, "run", str(flow), "--inputs-file", str(inputs), "--input", "version=1.10",
        "--input", "n:=3", "-i", "on:=true", "--input", 'tags:=["a", 2]', "--watch", "--plain",
    )  # fmt: skip
    assert code == 0, err
    run_id = out.split()[1]
    code, logs, err = await _cli(harness, "logs", run_id, "say")
    assert code == 0, err
    assert logs == 'v=1.10 --count=3 on=true tags=["a",2] f=0.5\n'
    code, out, err = await _cli(harness, "get", run_id, "-o", "json")
    assert code == 0, err
    got = json.loads(out)
    assert got["inputs"] == {
        "version": "1.10",
        "n": 3,
        "on": True,
        "tags": ["a", 2],
        "from_file": 0.5,
    }
    assert got["status"] == "RUN_STATUS_SUCCEEDED"


@pytest.mark.parametrize(
    ("files", "args", "message"),
    [
        ({}, ["run", "missing.yaml"], "flow file missing.yaml does not exist"),
        ({"f.yaml": "name: x\nnodes:\n  - id: a\n   action: {}\n"}, ["run", "f.yaml"],
         "f.yaml:4:4: YAML syntax error: expected <block end>"),
        ({"f.json": '{"name": "x",\n "nodes": [}'}, ["validate", "f.json"], "f.json:2:12: JSON syntax error"),
        ({"f.yaml": "name: x\nnodes:\n  - id: a\n    acton: {}\n"}, ["run", "f.yaml"],
         "flow.nodes[0]: unknown field 'acton'; did you mean 'action'? (valid fields: id, description,"),
        ({"f.yaml": "name: x\nedges:\n  - {source: a, target: b, condition: FAILURE}\n"}, ["run", "f.yaml"],
         "flow.edges[0].condition: invalid value 'FAILURE'; did you mean 'EDGE_CONDITION_FAILURE'?"),
        ({"f.yaml": "- a\n"}, ["run", "f.yaml"], "f.yaml: expected a mapping at the top, got list"),
        ({"f.yaml": "name: x\nnodes: [{id: a}, {id: b, maxVisits: many}]\n"}, ["run", "f.yaml"],
         "f.yaml: flow.nodes[1].maxVisits: invalid literal for int()"),
        ({"f.yaml": "name: x\nnodes: [{id: a, timeout: 5}]\n"}, ["run", "f.yaml"],
         "f.yaml: flow.nodes[0].timeout: Duration JSON value not a string: 5"),
        ({"f.yaml": "{1: 2}\n"}, ["run", "f.yaml"], "f.yaml: flow: a key is not a string"),
        ({"f.yaml": "name: x\n"}, ["run", "f.yaml", "--input", "n:=abc"],
         "--input n:= needs a JSON value, got 'abc'"),
        ({"f.yaml": "name: x\n"}, ["run", "f.yaml", "--input", "novalue"], "--input takes KEY=STRING or KEY:=JSON"),
        ({"f.yaml": "name: x\n", "i.yaml": "[1]\n"}, ["run", "f.yaml", "--inputs-file", "i.yaml"],
         "i.yaml: expected a mapping at the top, got list"),
        ({}, ["get", "r", "--client-cert", "c.pem"], "--client-cert and --client-key go together"),
        ({}, ["runs", "list", "--since", "yesterday"], "expected an ISO 8601 time or an age"),
        ({}, ["runs", "list", "--limit", "0"], "expected a positive whole number"),
        ({}, ["get", "r", "-o", "xml"], "invalid choice: 'xml'"),
    ],
)  # fmt: skip
async def test_cli_user_mistakes_exit_2_with_a_clear_message(
    tmp_path: Path, files: dict[str, str], args: list[str], message: str
) -> None:
    for name, text in files.items():
        _write(tmp_path / name, text)
    code, _, err = await _cli(None, *args, "--addr", "127.0.0.1:1", cwd=tmp_path)
    assert code == 2, err
    assert message in err


async def test_cli_unreachable_server_exits_3(tmp_path: Path) -> None:
    code, _, err = await _cli(None, "runs", "list", "--addr", "127.0.0.1:1")
    assert code == 3
    assert err.startswith("runwire: UNAVAILABLE: ")


async def test_cli_watch_says_it_retries_then_gives_up_with_exit_3() -> None:
    """Regression: `watch` with the server down retried silently forever."""
    code, _, err = await _cli(
        None, "watch", "run_x", "--addr", "127.0.0.1:1", "--plain", "--give-up-after", "1"
    )
    assert code == 3
    assert "interrupted (UNAVAILABLE); retrying after seq 0 in" in err
    assert "gave up watching run run_x after" in err


async def test_cli_refused_request_exits_1(harness: Harness) -> None:
    code, _, err = await _cli(harness, "get", "run_nope")
    assert code == 1
    assert err.startswith("runwire: NOT_FOUND: ")


async def test_cli_version() -> None:
    code, out, _ = await _cli(None, "--version")
    assert code == 0
    assert out.strip() == "runwire 0.1.0"


async def test_cli_closed_pipe_exits_quietly(harness: Harness) -> None:
    """Regression: `runwire runs list | head -1` ended in a BrokenPipeError traceback."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line is written
    try:
        proc = await _spawn("runs", "list", addr=harness.addr, stdout=write)
    finally:
        os.close(write)
    _, err = await proc.communicate()
    assert proc.returncode == 141
    assert err.decode() == ""


async def test_cli_ctrl_c_exits_130_without_traceback(harness: Harness, tmp_path: Path) -> None:
    code, run_id, err = await _cli(harness, "run", str(_hold_flow(tmp_path, "a")))
    assert code == 0, err
    run_id = run_id.strip()
    await wait_for_event(harness.stub, run_id, lambda e: e.HasField("node_started"))
    proc = await _spawn("watch", run_id, "--plain", addr=harness.addr)
    assert proc.stdout is not None
    assert " run_started " in (await proc.stdout.readline()).decode()
    proc.send_signal(signal.SIGINT)
    _, err_bytes = await proc.communicate()
    assert proc.returncode == 130, err_bytes.decode()
    assert "Traceback" not in err_bytes.decode()
    _release(harness, run_id, "a")


async def test_cli_runs_list_pages_filters_and_formats(harness: Harness, tmp_path: Path) -> None:
    hello, ids = str(EXAMPLES / "hello.yaml"), []
    other = _write(
        tmp_path / "other.yaml",
        "name: other\nnodes:\n  - {id: a, action: {adapter: util, action: set, params: {value: 1}}}\n",
    )
    for flow, team in ((hello, "infra"), (str(other), "web"), (hello, "web")):
        code, out, err = await _cli(harness, "run", flow, "--label", f"team={team}", "-o", "json")
        assert code == 0, err
        ids.append(json.loads(out)["runId"])
    for run_id in ids:
        await wait_for_event(harness.stub, run_id, lambda e: e.HasField("run_completed"))
    newest_first = ids[::-1]

    code, out, err = await _cli(harness, "runs", "list", "--limit", "2", "-o", "json")
    assert code == 0, err
    page = json.loads(out)
    assert [r["runId"] for r in page["runs"]] == newest_first[:2]
    code, out, err = await _cli(
        harness, "runs", "list", "--limit", "2", "--page-token", page["nextPageToken"], "-o", "yaml"
    )
    assert code == 0, err
    rest = yaml.safe_load(out)
    assert [r["runId"] for r in rest["runs"]] == newest_first[2:]
    assert "nextPageToken" not in rest

    async def listed(*args: str) -> list[str]:
        code, out, err = await _cli(harness, "runs", "list", *args, "-o", "json")
        assert code == 0, err
        return [r["runId"] for r in json.loads(out).get("runs", [])]

    assert await listed("--flow", "hello") == [ids[2], ids[0]]
    assert await listed("--flow", "hello", "--limit", "1") == [ids[2]]
    assert await listed("--label", "team=web") == [ids[2], ids[1]]
    assert await listed("--label", "team=web", "--flow", "other") == [ids[1]]
    assert await listed("--status", "succeeded", "--since", "1h") == newest_first
    assert await listed("--since", "2999-01-01") == []
    assert await listed("--until", "2000-01-01T00:00:00Z") == []

    code, out, err = await _cli(harness, "runs", "list", "--limit", "1")
    assert code == 0, err
    assert out.splitlines()[0].split() == ["RUN", "STATUS", "CREATED", "FLOW"]
    assert out.splitlines()[1].split()[:2] == [ids[2], "SUCCEEDED"]
    assert "more: --page-token " in err
    code, out, err = await _cli(harness, "runs", "list", "-o", "wide", "--flow", "other")
    assert code == 0, err
    assert out.splitlines()[0].split() == [
        "RUN",
        "STATUS",
        "CREATED",
        "FLOW",
        "NODES",
        "DURATION",
        "LABELS",
    ]
    assert out.splitlines()[1].split()[3:6] == ["other", "1/1", "ok"]
    assert out.splitlines()[1].endswith("team=web")


async def test_cli_control_says_what_was_requested_and_waits(
    harness: Harness, tmp_path: Path
) -> None:
    """Regression: pause/resume/cancel printed the state from before the request
    took effect, so they looked like no-ops."""
    code, out, err = await _cli(harness, "run", str(_hold_flow(tmp_path, "a", "b")))
    assert code == 0, err
    run_id = out.strip()
    await wait_for_event(harness.stub, run_id, lambda e: e.HasField("node_started"))
    code, out, err = await _cli(harness, "pause", run_id, "--reason", "lunch")
    assert code == 0, err
    assert (
        out
        == f"pause requested for {run_id} (now RUNNING); it takes effect at the next node boundary\n"
    )
    waiting = await _spawn("pause", run_id, "--wait", addr=harness.addr)
    await wait_for_event(harness.stub, run_id, lambda e: e.HasField("node_heartbeat"))
    _release(harness, run_id, "a")  # node a ends: the boundary where the pause takes effect
    out_b, err_b = await waiting.communicate()
    assert waiting.returncode == 0, err_b
    assert out_b.decode() == f"{run_id} paused; now PAUSED\n"
    code, out, err = await _cli(harness, "resume", run_id, "--wait")
    assert code == 0, err
    assert out.startswith(f"{run_id} resumed; now ")
    await wait_for_event(
        harness.stub, run_id, lambda e: e.node_id == "b" and e.HasField("node_started")
    )
    code, out, err = await _cli(harness, "cancel", run_id, "--wait", "-o", "json")
    assert code == 0, err
    assert json.loads(out)["status"] == "RUN_STATUS_CANCELLED"
    events = await harness.events(run_id)
    assert [
        e.WhichOneof("event")
        for e in events
        if e.HasField("run_paused") or e.HasField("run_resumed")
    ] == ["run_paused", "run_resumed"]
    assert events[-1].run_completed.status == events_pb2.RUN_STATUS_CANCELLED
    code, out, err = await _cli(harness, "cancel", run_id)  # idempotent, and says so
    assert (code, out) == (0, f"{run_id} already finished: CANCELLED\n"), err


async def test_cli_logs_prints_lines_and_follows(harness: Harness, tmp_path: Path) -> None:
    code, out, err = await _cli(harness, "run", str(EXAMPLES / "hello.yaml"), "--watch", "--plain")
    assert code == 0, err
    run_id = out.split()[1]
    events = await harness.events(run_id)
    lines = [(e.node_id, e.node_log.line) for e in events if e.HasField("node_log")]
    assert lines
    code, out, err = await _cli(harness, "logs", run_id)
    assert code == 0, err
    assert out.splitlines() == [f"{n}: {line}" for n, line in lines]
    code, out, err = await _cli(harness, "logs", run_id, "-o", "json")
    assert code == 0, err
    as_json = [json.loads(line) for line in out.splitlines()]
    assert [(e["nodeId"], e["nodeLog"]["line"]) for e in as_json] == lines
    assert all(e["attempt"] == 1 and e["iteration"] == 1 for e in as_json)

    code, out, err = await _cli(harness, "run", str(_hold_flow(tmp_path, "a")))
    run_id = out.strip()
    follow = await _spawn("logs", run_id, "a", "-f", addr=harness.addr)
    await wait_for_event(harness.stub, run_id, lambda e: e.HasField("node_started"))
    code, out, err = await _cli(harness, "logs", run_id)
    assert (code, out) == (0, "")  # nothing logged yet, and without -f it does not wait
    _release(harness, run_id, "a")
    out_b, err_b = await follow.communicate()
    assert follow.returncode == 0, err_b
    assert out_b.decode() == "released a\n"


async def test_cli_completion_bash_completes_commands_options_and_values(tmp_path: Path) -> None:
    code, script, err = await _cli(None, "completion", "bash")
    assert code == 0, err
    (tmp_path / "flow.yaml").touch()
    probe = tmp_path / "probe.sh"
    probe.write_text(script + """
t() { COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); COMPREPLY=(); _runwire; echo "${COMPREPLY[*]}"; }
t runwire ru
t runwire runs list --pa
t runwire get run_x -o ""
t runwire run flo
t runwire run flow.yaml --inp
t runwire completion ""
""")  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        "bash", str(probe), cwd=tmp_path, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert out.decode().splitlines() == [
        "run runs",
        "--page-token",
        "table wide json yaml",
        "flow.yaml",
        "--input --inputs-file",
        "--help bash zsh fish",
    ]


@pytest.mark.parametrize("shell", ["zsh", "fish"])
async def test_cli_completion_scripts_name_every_command(shell: str) -> None:
    code, script, err = await _cli(None, "completion", shell)
    assert code == 0, err
    for command in ("run", "watch", "logs", "get", "runs", "pause", "completion"):
        assert re.search(rf"\b{command}\b", script)
    assert "--inputs-file" in script or "inputs-file" in script


async def test_cli_profile_supplies_address_and_token(harness_factory: Any, tmp_path: Path) -> None:
    """Flag, then RUNWIRE_*, then the runwire.toml profile, then the default."""
    h: Harness = await harness_factory(auth_tokens=("s3cret",))
    (tmp_path / "prod.token").write_text("s3cret\n")
    (tmp_path / "runwire.toml").write_text(
        f'default_profile = "prod"\n[profiles.prod]\naddr = "{h.addr}"\ntoken_file = "prod.token"\n'
        '[profiles.nowhere]\naddr = "127.0.0.1:1"\n'
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config = {"RUNWIRE_CONFIG": str(tmp_path / "runwire.toml")}

    async def runs(*args: str, cwd: Path = tmp_path, **env: str) -> tuple[int, str]:
        code, _, err = await _cli(None, "runs", "list", *args, cwd=cwd, env=env)
        return code, err

    assert (await runs())[0] == 0  # ./runwire.toml, its default profile, the token file
    assert (await runs(cwd=elsewhere, **config))[0] == 0  # RUNWIRE_CONFIG from anywhere
    assert (await runs("--profile", "nowhere"))[0] == 3
    assert (await runs(RUNWIRE_PROFILE="nowhere"))[0] == 3
    assert (await runs(RUNWIRE_ADDR="127.0.0.1:1"))[0] == 3  # the variable beats the profile
    assert (await runs("--addr", "127.0.0.1:1", RUNWIRE_ADDR=h.addr))[0] == 3  # the flag beats both
    assert (await runs("--token", "wrong"))[0] == 1
    code, err = await runs("--profile", "staging")
    assert code == 2
    assert "no profile 'staging' (profiles: nowhere, prod)" in err
    (tmp_path / "runwire.toml").write_text('[profiles.x]\nadress = "a"\n')
    code, err = await runs("--profile", "x")
    assert code == 2
    assert "profiles.x: unknown key 'adress'" in err


async def test_cli_loop_example_writes_its_trailing_newline(harness: Harness) -> None:
    """Regression: examples/loop-until-green.yaml asks for "fixed on visit …\\n"
    and the file had no newline."""
    code, out, err = await _cli(
        harness, "run", str(EXAMPLES / "loop-until-green.yaml"), "--watch", "--plain"
    )
    assert code == 0, err
    run_id = out.split()[1]
    written = harness.data_dir / "workspaces" / run_id / "build" / "ready.txt"
    assert written.read_text() == "fixed on visit 1\n"
