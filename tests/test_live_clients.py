"""Each client's watch example, live against `runwire serve`, prints exactly the stored stream."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import grpc
import pytest
from _fake_openai import FakeOpenAI, Reply, text_reply, tool_reply
from _live_procs import ROOT, ServerProcess, WatchProcess, canonical
from _live_proxy import TcpProxy
from conftest import assert_grammar, collect, edge, shell_node
from google.protobuf import json_format

from runwire.v1 import events_pb2, flow_pb2, run_service_pb2, run_service_pb2_grpc

log = logging.getLogger(__name__)

# Each client's example, as its README runs it from the repository root.
BUILDS = {
    "go": ["make", "-s", "-C", "clients/go", "build"],
    "rust": ["make", "-s", "-C", "clients/rust", "example"],
    "ts": ["make", "-s", "-C", "clients/ts", "build"],
}
WATCH = {
    "go": ["clients/go/.bin/runwire-watch"],
    "rust": ["clients/rust/target/debug/examples/runwire-watch"],
    "ts": ["node", "clients/ts/build/examples/watch.js"],
    "python": [sys.executable, "clients/python/examples/watch.py"],
}

TALK_LINES = 100
# The cut and the restart happen once every watcher has printed this line:
# a fifth of the way into `talk`, so the run is certainly still going.
CUT_AT_LINE = "line 20"
SERVE_ARGS = [
    "--shell-allow", "sh", "--shell-allow", "echo",
    # Heartbeats while `talk` runs, so NodeHeartbeat is in the stream too.
    "--heartbeat-interval", "0.5",
    # SIGTERM waits this long for runs to finish before handing them over;
    # the default 5 s would let the run end on the old process.
    "--drain-grace", "0.5",
]  # fmt: skip
# Any single wait longer than this is a hang, reported with every watcher's stderr.
WAIT_TIMEOUT = 60.0

FAILURE = flow_pb2.EDGE_CONDITION_FAILURE


def live_flow() -> flow_pb2.Flow:
    """gate (approval) -> talk (logs) -> flaky (fails twice) -> FAILURE handler / SUCCESS deploy;
    handler -> fan (a fan-out over three items, each echoing a line).

    The gate holds the run until every watcher is attached, so what follows
    reaches them live, not as a replay. `talk` prints a line every few
    milliseconds for a couple of seconds: the cuts and the restart land in it.
    """
    gate = flow_pb2.Node(
        id="gate", approval=flow_pb2.ApprovalNode(message="Are all the watchers attached?")
    )
    talk = shell_node(
        "talk",
        "sh",
        "-c",
        f'for i in $(seq 1 {TALK_LINES}); do echo "line $i";'
        ' [ $((i % 25)) -ne 0 ] || echo "quarter $i" >&2; sleep 0.02; done',
    )
    # An AI node beside `talk`: streamed tokens, a tool call and the audit trail
    # reach every client live (the model is tests/_fake_openai.py on loopback).
    ask = flow_pb2.Node(id="ask")
    ask.ai.provider, ask.ai.task = "local", "What is the answer?"
    ask.ai.tools.append("util.set")
    flaky = shell_node("flaky", "sh", "-c", "echo 'no luck' >&2; exit 3")
    flaky.retry_policy.max_attempts = 2
    flaky.retry_policy.initial_backoff.FromMilliseconds(50)
    # A fan-out: each item's events carry item_index (0 included) and item_key.
    fan = shell_node("fan", "echo", "item {{ item.name }}")
    fan.for_each.items = '{{ [{"name": "a"}, {"name": "b"}, {"name": "c"}] }}'
    fan.for_each.key_field = "name"
    fan.for_each.max_parallel = 2
    return flow_pb2.Flow(
        name="live-clients",
        nodes=[
            gate,
            talk,
            ask,
            flaky,
            shell_node("deploy", "echo", "deployed"),
            shell_node("handler", "echo", "handled"),
            fan,
        ],
        edges=[
            edge("gate", "talk"),
            edge("gate", "ask"),
            edge("talk", "flaky"),
            edge("flaky", "deploy"),
            edge("flaky", "handler", FAILURE),
            edge("handler", "fan"),
        ],
    )


# --- fixtures --------------------------------------------------------------


class _WallTimes:
    """Seconds per part of this file, shown in pytest's terminal summary."""

    def __init__(self) -> None:
        self.parts: dict[str, float] = {}

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.parts:
            terminalreporter.write_sep("-", "live cross-language test: wall time per part")
            for part, seconds in self.parts.items():
                terminalreporter.write_line(f"{part:<44} {seconds:6.2f} s")


@pytest.fixture(scope="session")
def wall_times(request: pytest.FixtureRequest) -> dict[str, float]:
    """Where the parts record their wall time (a plugin prints it at the end)."""
    report = _WallTimes()
    request.config.pluginmanager.register(report, "runwire-live-wall-times")
    return report.parts


def _record(times: dict[str, float], part: str, started: float) -> None:
    times[part] = time.perf_counter() - started
    log.info("%s took %.2f s", part, times[part])


@pytest.fixture(scope="session")
def watch_commands(wall_times: dict[str, float]) -> dict[str, list[str]]:
    """Build the Go, Rust and TypeScript examples (cheap when up to date); a
    missing toolchain fails the test rather than skipping it."""
    for lang, argv in BUILDS.items():
        started = time.perf_counter()
        try:
            done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
        except FileNotFoundError as exc:
            pytest.fail(f"cannot build the {lang} example: {exc}")
        if done.returncode != 0:
            pytest.fail(
                f"building the {lang} example failed: {' '.join(argv)} exited "
                f"{done.returncode}\n{done.stdout}\n{done.stderr}"
            )
        _record(wall_times, f"build {lang} ({' '.join(argv[1:])})", started)
    for lang, argv in WATCH.items():
        program = ROOT / argv[-1]
        assert program.is_file(), f"the {lang} example is missing: {program}"
    return WATCH


def _answer(request: dict[str, Any]) -> Reply:
    """The live flow's model: a tool call first, then an answer in a few deltas."""
    if request["messages"][-1]["role"] == "tool":
        return text_reply("The answer ", "is ", "forty-two.")
    return tool_reply(("call_live", "util__set", json.dumps({"value": 42})))


@pytest.fixture(scope="session")
async def fake_model() -> AsyncIterator[FakeOpenAI]:
    """The OpenAI-protocol SSE server the live flow's AI node calls (any life of any run)."""
    async with FakeOpenAI(respond=_answer) as fake:
        yield fake


@pytest.fixture
async def server(
    database_url: str,
    tmp_path: Path,
    wall_times: dict[str, float],
    request: pytest.FixtureRequest,
    fake_model: FakeOpenAI,
) -> AsyncIterator[ServerProcess]:
    """A `runwire serve` subprocess on a fresh database of the session's Postgres."""
    args = [*SERVE_ARGS, "--ai-provider", f"local={fake_model.base_url}#fake-model"]
    process = ServerProcess(database_url, tmp_path / "server", args)
    try:
        started = time.perf_counter()
        await process.start()
        _record(wall_times, f"server start ({request.node.name})", started)
        yield process
    finally:
        await process.kill()


Spawn = Callable[..., Awaitable[dict[str, WatchProcess]]]


@pytest.fixture
async def spawn_watchers(watch_commands: dict[str, list[str]]) -> AsyncIterator[Spawn]:
    """Start every client's example on one run, each through its own address;
    whatever is still running at the end is killed."""
    started: list[WatchProcess] = []

    async def spawn(addrs: Mapping[str, str], run_id: str, *extra: str) -> dict[str, WatchProcess]:
        watchers = {}
        for lang, argv in watch_commands.items():
            watcher = WatchProcess(lang, [*argv, "--addr", addrs[lang], "--run-id", run_id, *extra])
            started.append(watcher)
            await watcher.start()
            watchers[lang] = watcher
        return watchers

    try:
        yield spawn
    finally:
        for watcher in started:
            await watcher.kill()


# --- steps -----------------------------------------------------------------


async def _within(aw: Awaitable[Any], what: str, watchers: Mapping[str, WatchProcess]) -> Any:
    try:
        async with asyncio.timeout(WAIT_TIMEOUT):
            return await aw
    except TimeoutError:
        detail = "\n\n".join(f"[{n}] {w.describe()}" for n, w in watchers.items())
        raise AssertionError(f"no {what} within {WAIT_TIMEOUT} s\n\n{detail}") from None


async def _start_run(addr: str) -> str:
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = run_service_pb2_grpc.RunServiceStub(channel)
        response = await stub.StartRun(run_service_pb2.StartRunRequest(flow=live_flow()))
    return response.run.run_id


async def _every(
    watchers: Mapping[str, WatchProcess], predicate: Callable[[dict[str, Any]], bool], what: str
) -> int:
    """Wait until every watcher has printed a matching event; the highest seq any has printed."""
    await _within(
        asyncio.gather(*(w.until(predicate, what) for w in watchers.values())),
        f"{what} from every watcher",
        watchers,
    )
    return max(int(w.events[-1].get("seq", 0)) for w in watchers.values())


def _is_approval_requested(event: dict[str, Any]) -> bool:
    return "approvalRequested" in event


def _is_cut_line(event: dict[str, Any]) -> bool:
    return event.get("nodeLog", {}).get("line") == CUT_AT_LINE


def _is_interrupted(event: dict[str, Any]) -> bool:
    return event.get("nodeFailed", {}).get("error", {}).get("reason") == "INTERRUPTED"


async def _open_gate(addr: str, run_id: str, watchers: Mapping[str, WatchProcess]) -> None:
    """Approve the gate once every watcher has printed ApprovalRequested."""
    await _every(watchers, _is_approval_requested, "ApprovalRequested")
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = run_service_pb2_grpc.RunServiceStub(channel)
        await stub.ResolveApproval(
            run_service_pb2.ResolveApprovalRequest(
                run_id=run_id, node_id="gate", approve=True, comment="all watchers attached"
            )
        )


async def _run_status(addr: str, run_id: str) -> int:
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = run_service_pb2_grpc.RunServiceStub(channel)
        response = await stub.GetRun(run_service_pb2.GetRunRequest(run_id=run_id))
    return response.run.status


async def _finish(watchers: Mapping[str, WatchProcess]) -> None:
    await _within(
        asyncio.gather(*(w.wait() for w in watchers.values())),
        "exit from every watcher",
        watchers,
    )


async def _stored(addr: str, run_id: str) -> tuple[list[events_pb2.RunEvent], list[str]]:
    """The run's stored events (a WatchRun replay) and their canonical proto3 JSON."""
    async with grpc.aio.insecure_channel(addr) as channel:
        events = await collect(run_service_pb2_grpc.RunServiceStub(channel), run_id)
    assert_grammar(events)
    return events, [canonical(json_format.MessageToDict(e)) for e in events]


def _mismatch(watcher: WatchProcess, stored: list[str]) -> str | None:
    """What is wrong with one watcher's output, or None when it is the stored list."""
    code = watcher.proc.returncode if watcher.proc else None
    if code == 0 and watcher.lines == stored:
        return None
    got = watcher.lines
    seqs = [e.get("seq") for e in watcher.events]
    repeated = sorted({s for s in seqs if seqs.count(s) > 1}, key=lambda s: int(s or 0))
    first = next(
        (i for i, (a, b) in enumerate(zip(got, stored, strict=False)) if a != b),
        min(len(got), len(stored)),
    )
    parts = [
        f"[{watcher.name}] exit status {code}; {len(got)} lines, {len(stored)} stored",
        f"repeated seqs: {repeated}" if repeated else "",
    ]
    if first < max(len(got), len(stored)):
        parts += [
            f"first difference at line {first + 1}:",
            f"  printed: {got[first] if first < len(got) else '(nothing)'}",
            f"  stored:  {stored[first] if first < len(stored) else '(nothing)'}",
        ]
    parts.append(watcher.describe())
    return "\n".join(p for p in parts if p)


def assert_every_watcher_printed(watchers: Mapping[str, WatchProcess], stored: list[str]) -> None:
    """Each watcher exited 0 and printed exactly the stored list, in order,
    and the four printed the very same bytes (not only the same JSON)."""
    problems = [m for w in watchers.values() if (m := _mismatch(w, stored)) is not None]
    assert not problems, "\n\n".join(problems)
    reference = watchers["python"]
    for name, watcher in watchers.items():
        first = next(
            (i for i, (a, b) in enumerate(zip(watcher.raw, reference.raw, strict=True)) if a != b),
            None,
        )
        assert first is None, (
            f"{name} and python print line {first + 1} differently:\n"
            f"  {name}: {watcher.raw[first]}\n  python: {reference.raw[first]}"
        )


# The variants the flow makes every run narrate (heartbeats: `talk` runs for
# seconds against a 0.5 s heartbeat interval).
VARIANTS = {
    "run_started", "run_status_changed", "approval_requested", "approval_resolved",
    "node_started", "node_log", "node_heartbeat", "node_succeeded", "node_failed",
    "node_retrying", "node_skipped", "run_completed",
    "node_token", "tool_call", "ai_invocation", "ai_routing_decision",
}  # fmt: skip


def assert_flow_shape(events: list[events_pb2.RunEvent]) -> None:
    """The run narrated what the test is about: logs, a retry, a failure edge, a skip."""
    cases = [e.WhichOneof("event") or "?" for e in events]
    assert not VARIANTS - set(cases), f"missing variants: {sorted(VARIANTS - set(cases))}"
    by_node: dict[str, list[str]] = {}
    for e, case in zip(events, cases, strict=True):
        if case != "node_heartbeat":  # how many depends on timing
            by_node.setdefault(e.node_id, []).append(case)
    assert by_node["talk"].count("node_log") >= TALK_LINES
    assert by_node["talk"][-1] == "node_succeeded"
    assert by_node["flaky"] == [
        "node_started", "node_log", "node_failed", "node_retrying",
        "node_started", "node_log", "node_failed",
    ]  # fmt: skip
    assert by_node["handler"][-1] == "node_succeeded"
    assert by_node["deploy"] == ["node_skipped"]
    fan = [e for e in events if e.node_id == "fan"]
    assert {(e.item_index, e.item_key) for e in fan if e.HasField("item_index")} == {
        (0, "a"), (1, "b"), (2, "c"),
    }  # fmt: skip
    assert sum(1 for e in fan if e.HasField("item_index") and e.HasField("node_log")) == 3
    assert fan[-1].HasField("node_succeeded")
    assert not fan[-1].HasField("item_index")
    # The AI node (a takeover may repeat its attempt): tokens, a tool call, success.
    assert by_node["ask"][-1] == "node_succeeded"
    assert {"node_token", "tool_call", "ai_invocation"} <= set(by_node["ask"])
    assert events[-1].run_completed.status == events_pb2.RUN_STATUS_SUCCEEDED


# --- the scenarios ---------------------------------------------------------


async def test_watch_examples_print_the_stored_stream_live(
    server: ServerProcess, spawn_watchers: Spawn, wall_times: dict[str, float]
) -> None:
    """The Go, Rust, TypeScript and Python (betterproto) examples attach to one
    run before it gets going and follow it live to RunCompleted. Each prints
    one proto3 JSON line per event, and its lines, canonicalized, equal the
    server's stored events (a WatchRun replay through `MessageToDict`) in
    order; each exits 0, so its own grammar checker held."""
    started = time.perf_counter()
    run_id = await _start_run(server.addr)
    watchers = await spawn_watchers(dict.fromkeys(WATCH, server.addr), run_id)
    await _open_gate(server.addr, run_id, watchers)
    await _finish(watchers)
    events, stored = await _stored(server.addr, run_id)
    _record(wall_times, "scenario live", started)

    assert_every_watcher_printed(watchers, stored)
    assert_flow_shape(events)

    # Resume at the end of the finished run, as a watcher does that saw
    # RunCompleted's seq but not the stream's end, and past it: every example
    # learns the run finished, notes its status and exits 0 at once.
    started = time.perf_counter()
    last = events[-1].seq
    for after in (last, last + 5):
        resumed = await spawn_watchers(
            dict.fromkeys(WATCH, server.addr), run_id, "--after-seq", str(after)
        )
        await _finish(resumed)
        for name, watcher in resumed.items():
            assert (watcher.proc.returncode if watcher.proc else None) == 0, watcher.describe()
            assert watcher.raw == [], watcher.describe()
            assert f"finished RUN_STATUS_SUCCEEDED at seq {last}" in watcher.stderr, (
                f"[{name}] after_seq {after}: {watcher.describe()}"
            )
    _record(wall_times, "scenario resume at the end", started)


@pytest.mark.parametrize("filtered", [False, True], ids=["every event", "filtered"])
async def test_watch_examples_resume_after_connections_are_reset(
    server: ServerProcess, spawn_watchers: Spawn, wall_times: dict[str, float], filtered: bool
) -> None:
    """Each watcher reaches the server through its own TCP proxy. Once all of
    them have printed line 20 of `talk`, while the run is still going, every
    proxied connection is reset. Each watcher must connect again, resume after
    the last seq it printed, and still print exactly the stored list: nothing
    lost while it was away, nothing twice. Filtered (`--kinds`/`--node-ids`),
    each resumes after the server's last `resume_after_seq` and prints
    exactly the stored events the filter selects."""
    started = time.perf_counter()
    proxies = {lang: TcpProxy(server.port) for lang in WATCH}
    extra = ["--kinds", ",".join(FILTER_KINDS), "--node-ids", ",".join(FILTER_NODES)]
    try:
        addrs = {lang: await proxy.start() for lang, proxy in proxies.items()}
        run_id = await _start_run(server.addr)
        watchers = await spawn_watchers(addrs, run_id, *(extra if filtered else []))
        if filtered:  # the filter leaves ApprovalRequested out
            await _approve_when_asked(server.addr, run_id)
        else:
            await _open_gate(server.addr, run_id, watchers)
        printed_at_cut = await _every(watchers, _is_cut_line, repr(CUT_AT_LINE))
        assert await _run_status(server.addr, run_id) == events_pb2.RUN_STATUS_RUNNING
        accepted_at_cut = {lang: proxy.accepted for lang, proxy in proxies.items()}
        cut = {lang: await proxy.cut() for lang, proxy in proxies.items()}
        await _finish(watchers)
        events, stored = await _stored(server.addr, run_id)
    finally:
        for proxy in proxies.values():
            await proxy.close()
    _record(wall_times, f"scenario cut connections{' (filtered)' if filtered else ''}", started)

    assert all(n >= 1 for n in cut.values()), f"connections reset per client: {cut}"
    reconnected = {lang: proxies[lang].accepted - accepted_at_cut[lang] for lang in WATCH}
    assert all(n >= 1 for n in reconnected.values()), f"connections after the cut: {reconnected}"
    assert events[-1].seq > printed_at_cut, "the run should have gone on after the cut"
    if filtered:
        stored = [line for e, line in zip(events, stored, strict=True) if _filtered(e)]
    assert_every_watcher_printed(watchers, stored)
    assert_flow_shape(events)


async def test_watch_examples_resume_across_a_server_restart(
    server: ServerProcess, spawn_watchers: Spawn, wall_times: dict[str, float]
) -> None:
    """Once every watcher has printed line 20 of `talk`, the server gets SIGTERM:
    it drains, its streams end UNAVAILABLE and it releases the run's lease. A
    new server process on the same port and database takes the run over (the
    interrupted attempt is closed as INTERRUPTED and `talk` runs again) and
    finishes it. Every watcher rides out the restart and prints exactly the
    stored list."""
    started = time.perf_counter()
    run_id = await _start_run(server.addr)
    watchers = await spawn_watchers(dict.fromkeys(WATCH, server.addr), run_id)
    await _open_gate(server.addr, run_id, watchers)
    printed_at_restart = await _every(watchers, _is_cut_line, repr(CUT_AT_LINE))
    down = time.perf_counter()
    # grpcio sets SO_REUSEPORT: the old process must be gone before the new binds.
    assert await server.terminate() == 0, server.log_tail()
    await server.start()
    _record(wall_times, "restart (SIGTERM to listening again)", down)
    listening = time.perf_counter()
    # The new process's first event closes the interrupted attempt of `talk`.
    # A graceful stop releases the run's lease, so the new process claims it
    # in its first lease pass; if the lease was kept, the takeover waits for
    # it to expire (15 s by default), which the summary's takeover time shows.
    resumed_at = await _every(watchers, _is_interrupted, "the INTERRUPTED NodeFailed")
    _record(wall_times, "takeover (listening to every watcher resumed)", listening)
    await _finish(watchers)
    events, stored = await _stored(server.addr, run_id)
    _record(wall_times, "scenario restart server", started)

    interrupted = [e for e in events if e.node_failed.error.reason == "INTERRUPTED"]
    assert [(e.node_id, e.attempt) for e in interrupted] == [("talk", 1)]
    assert printed_at_restart < interrupted[0].seq <= resumed_at
    assert_every_watcher_printed(watchers, stored)
    assert_flow_shape(events)


# --- filtered watches and one stream across runs ---------------------------

# What the filtered watchers ask for: `talk`'s and `fan`'s log lines and
# successes (RunCompleted always comes). Without NodeStarted in the kinds the
# examples' grammar checks drop the attempt rules (clients/GRAMMAR.md).
FILTER_KINDS = ("node_log", "node_succeeded")
FILTER_NODES = ("talk", "fan")
# What the cross-run watchers ask for: every run's first and last event.
ACROSS_KINDS = ("run_started", "run_completed")


def _filtered(event: events_pb2.RunEvent) -> bool:
    """Whether the filtered watchers' EventFilter selects the event."""
    case = event.WhichOneof("event")
    if case == "run_completed":
        return True
    return case in FILTER_KINDS and (event.node_id in FILTER_NODES or not event.node_id)


async def _finished_other_run(addr: str) -> list[events_pb2.RunEvent]:
    """A run of another flow, started and watched to its end: the earlier run of the log."""
    other = flow_pb2.Flow(name="live-other", nodes=[shell_node("hello", "echo", "hello")])
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = run_service_pb2_grpc.RunServiceStub(channel)
        started = await stub.StartRun(run_service_pb2.StartRunRequest(flow=other))
        return await collect(stub, started.run.run_id)


async def _approve_when_asked(addr: str, run_id: str) -> None:
    """Approve the gate once ApprovalRequested is stored (a WatchRun filtered to it)."""
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = run_service_pb2_grpc.RunServiceStub(channel)
        asked = run_service_pb2.WatchRunRequest(
            run_id=run_id, filter=run_service_pb2.EventFilter(kinds=["approval_requested"])
        )
        async with asyncio.timeout(WAIT_TIMEOUT):
            async for response in stub.WatchRun(asked):
                if response.events:
                    break
        await stub.ResolveApproval(
            run_service_pb2.ResolveApprovalRequest(run_id=run_id, node_id="gate", approve=True)
        )


async def test_watch_examples_filtered_and_across_runs(
    server: ServerProcess,
    spawn_watchers: Spawn,
    watch_commands: dict[str, list[str]],
    wall_times: dict[str, float],
) -> None:
    """Each client's example watches the live run with `--kinds`/`--node-ids`
    and prints exactly the stored events that filter selects (its filtered
    grammar check held: exit 0). Each also runs `--events` from the earliest
    cursor with kinds RunStarted/RunCompleted: the events of both runs, an
    earlier finished one of another flow and the live one, in commit order,
    the same bytes in every client."""
    started = time.perf_counter()
    other = await _finished_other_run(server.addr)
    run_id = await _start_run(server.addr)
    filtered = await spawn_watchers(
        dict.fromkeys(WATCH, server.addr),
        run_id,
        "--kinds", ",".join(FILTER_KINDS), "--node-ids", ",".join(FILTER_NODES),
    )  # fmt: skip
    across: dict[str, WatchProcess] = {}
    try:
        for lang, argv in watch_commands.items():
            across[lang] = WatchProcess(
                lang,
                [*argv, "--addr", server.addr, "--events", "--start", "earliest",
                 "--kinds", ",".join(ACROSS_KINDS), "--count", "4"],
            )  # fmt: skip
            await across[lang].start()
        await _approve_when_asked(server.addr, run_id)
        await _finish(filtered)
        await _finish(across)
        events, _ = await _stored(server.addr, run_id)
    finally:
        for watcher in across.values():
            await watcher.kill()
    _record(wall_times, "scenario filtered and across runs", started)

    def lines(selected: list[events_pb2.RunEvent]) -> list[str]:
        return [canonical(json_format.MessageToDict(e)) for e in selected]

    assert_flow_shape(events)
    want_filtered = lines([e for e in events if _filtered(e)])
    assert {json.loads(line).get("nodeId") for line in want_filtered} == {None, *FILTER_NODES}
    assert_every_watcher_printed(filtered, want_filtered)
    # Commit order across runs: the other run finished before this one began.
    ends = [e for e in [*other, *events] if e.WhichOneof("event") in ACROSS_KINDS]
    assert [e.run_id for e in ends] == [other[0].run_id] * 2 + [run_id] * 2
    assert_every_watcher_printed(across, lines(ends))


# --- connection options: token, TLS, mutual TLS ------------------------------

TOKEN = "t0k-live"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate for `alice`."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    # An extension makes it an X.509 v3 certificate: rustls refuses v1 ones.
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, cn, ext in (
        ("server", "localhost", ["-extfile", "san.ext"]),
        ("client", "alice", ["-extfile", "client.ext"]),
    ):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "1", "-out", f"{name}.pem", *ext, cwd=d)  # fmt: skip
    return d


def quick_flow() -> flow_pb2.Flow:
    return flow_pb2.Flow(
        name="quick",
        nodes=[shell_node("hello", "echo", "héllo \ufeff wörld"), shell_node("bye", "echo", "bye")],
        edges=[edge("hello", "bye")],
    )


async def _quick_run(stub: run_service_pb2_grpc.RunServiceStub, metadata: Any) -> str:
    run = await stub.StartRun(run_service_pb2.StartRunRequest(flow=quick_flow()), metadata=metadata)
    async for response in stub.WatchRun(
        run_service_pb2.WatchRunRequest(run_id=run.run.run_id), metadata=metadata
    ):
        if response.HasField("stream_end"):
            break
    return str(run.run.run_id)


def _same_output(watchers: Mapping[str, WatchProcess], expected: list[str]) -> None:
    for name, watcher in watchers.items():
        code = watcher.proc.returncode if watcher.proc else None
        assert code == 0, watcher.describe()
        assert watcher.lines == expected, f"[{name}] {watcher.describe()}"
    raws = {name: watcher.raw for name, watcher in watchers.items()}
    assert len({tuple(raw) for raw in raws.values()}) == 1, raws


async def test_watch_examples_send_a_bearer_token(
    database_url: str, tmp_path: Path, spawn_watchers: Spawn
) -> None:
    """A server that requires a token: every example passes --token on every
    call, and without it each exits 3 with UNAUTHENTICATED."""
    server = ServerProcess(database_url, tmp_path / "server", [*SERVE_ARGS, "--auth-token", TOKEN])
    await server.start()
    try:
        metadata = (("authorization", f"Bearer {TOKEN}"),)
        async with grpc.aio.insecure_channel(server.addr) as channel:
            run_id = await _quick_run(run_service_pb2_grpc.RunServiceStub(channel), metadata)
            events = await _collect_with(channel, run_id, metadata)
        stored = [canonical(json_format.MessageToDict(e)) for e in events]
        watchers = await spawn_watchers(dict.fromkeys(WATCH, server.addr), run_id, "--token", TOKEN)
        await _finish(watchers)
        _same_output(watchers, stored)
        refused = await spawn_watchers(dict.fromkeys(WATCH, server.addr), run_id)
        await _finish(refused)
        for watcher in refused.values():
            assert (watcher.proc.returncode if watcher.proc else None) == 3, watcher.describe()
            assert "UNAUTHENTICATED" in watcher.stderr.upper(), watcher.describe()
    finally:
        await server.kill()


async def test_watch_examples_reach_a_mutual_tls_server(
    database_url: str, tmp_path: Path, spawn_watchers: Spawn, pki: Path
) -> None:
    """A mutual-TLS listener that also wants a token: every example connects
    with --tls-ca, --tls-cert/--tls-key and --token and prints the same
    bytes."""
    tls = ["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
           "--tls-client-ca", str(pki / "ca.pem")]  # fmt: skip
    server = ServerProcess(
        database_url, tmp_path / "server", [*SERVE_ARGS, *tls, "--auth-token", TOKEN]
    )
    await server.start()
    try:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=(pki / "ca.pem").read_bytes(),
            private_key=(pki / "client.key").read_bytes(),
            certificate_chain=(pki / "client.pem").read_bytes(),
        )
        metadata = (("authorization", f"Bearer {TOKEN}"),)
        async with grpc.aio.secure_channel(server.addr, credentials) as channel:
            run_id = await _quick_run(run_service_pb2_grpc.RunServiceStub(channel), metadata)
            events = await _collect_with(channel, run_id, metadata)
        stored = [canonical(json_format.MessageToDict(e)) for e in events]
        flags = ["--token", TOKEN, "--tls-ca", str(pki / "ca.pem"),
                 "--tls-cert", str(pki / "client.pem"), "--tls-key", str(pki / "client.key")]  # fmt: skip
        watchers = await spawn_watchers(dict.fromkeys(WATCH, server.addr), run_id, *flags)
        await _finish(watchers)
        _same_output(watchers, stored)
        assert events[0].run_started.principal == "cert:alice"
    finally:
        await server.kill()


async def _collect_with(
    channel: grpc.aio.Channel, run_id: str, metadata: Any
) -> list[events_pb2.RunEvent]:
    out: list[events_pb2.RunEvent] = []
    stub = run_service_pb2_grpc.RunServiceStub(channel)
    async for response in stub.WatchRun(
        run_service_pb2.WatchRunRequest(run_id=run_id), metadata=metadata
    ):
        out.extend(response.events)
    return out


async def test_watch_examples_exit_alike_for_an_unknown_run(
    server: ServerProcess, spawn_watchers: Spawn
) -> None:
    """NOT_FOUND is the server's answer, not a transport failure: every
    example exits 3 at once (they used to exit 3, 1, 2 and 2)."""
    watchers = await spawn_watchers(dict.fromkeys(WATCH, server.addr), "run_does_not_exist")
    await _finish(watchers)
    for watcher in watchers.values():
        assert (watcher.proc.returncode if watcher.proc else None) == 3, watcher.describe()
        assert watcher.raw == [], watcher.describe()
        assert "RUN_NOT_FOUND" in watcher.stderr, watcher.describe()
