"""examples/watch.py, run as a program against a real server."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import grpc

from runwire_client import event_to_json

from ._events import RUN_ID, stream
from .conftest import Abort, End, ScriptedRunService, Send, StartFront, StartServer

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "watch.py"

RUN = stream(
    "run_started",
    ("node_started", "a"),
    ("node_log", "a"),
    ("node_succeeded", "a"),
    "run_completed",
)


async def run_example(*args: str) -> tuple[int, list[str], str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stdout.decode("utf-8").splitlines(), stderr.decode("utf-8")


async def test_example_prints_one_json_line_per_event_and_exits_zero(
    start_server: StartServer,
) -> None:
    service = ScriptedRunService(
        [Send(RUN[:2]), Abort(grpc.StatusCode.UNAVAILABLE, "draining")],
        [Send(RUN[1:])],
    )
    port, _ = await start_server(service)

    code, lines, stderr = await run_example("--addr", f"127.0.0.1:{port}", "--run-id", RUN_ID)

    assert code == 0
    assert lines == [event_to_json(event) for event in RUN]
    # One reconnect, reported on stderr; stdout holds only events.
    assert stderr.startswith(
        "watch: watch run_test: UNAVAILABLE: draining; resuming after seq 2 in "
    )
    assert stderr.count("\n") == 1
    assert [json.loads(line)["seq"] for line in lines] == ["1", "2", "3", "4", "5"]


async def test_example_notes_each_reconnect_on_one_stderr_line(
    start_server: StartServer, start_front: StartFront
) -> None:
    """A reset connection, a draining server, a dying stream and an early OK end: four notes."""
    service = ScriptedRunService(
        [Send(RUN[:1]), Abort(grpc.StatusCode.UNAVAILABLE, "draining", reason="SERVER_DRAINING")],
        [Send(RUN[1:2]), Abort(grpc.StatusCode.INTERNAL, "stream reset")],
        [Send(RUN[2:3])],
        [Send(RUN[3:])],
    )
    backend, _ = await start_server(service)
    port, _ = await start_front(backend, "tcp_reset")

    code, lines, stderr = await run_example("--addr", f"127.0.0.1:{port}", "--run-id", RUN_ID)

    assert code == 0
    assert lines == [event_to_json(event) for event in RUN]
    notes = stderr.splitlines()
    assert len(notes) == 4, stderr
    assert re.fullmatch(
        r"watch: watch run_test: \w+Error: .+; resuming after seq 0 in \d+\.\d\ds", notes[0]
    )
    for note, cause in zip(
        notes[1:],
        [
            "UNAVAILABLE: draining; resuming after seq 1",
            "INTERNAL: stream reset; resuming after seq 2",
            "WatchRun ended after seq 3 without RunCompleted; resuming after seq 3",
        ],
        strict=True,
    ):
        assert note.startswith(f"watch: watch run_test: {cause} in "), note
    assert service.after_seqs == [0, 1, 2, 3]


async def test_example_does_not_retry_a_server_internal_error(start_server: StartServer) -> None:
    """INTERNAL with runwire's ErrorInfo is the server reporting a bug: no reconnect, exit 3."""
    service = ScriptedRunService(
        [Send(RUN[:2]), Abort(grpc.StatusCode.INTERNAL, "store broke", reason="INTERNAL")],
        [Send(RUN[2:])],
    )
    port, _ = await start_server(service)

    code, lines, stderr = await run_example("--addr", f"127.0.0.1:{port}", "--run-id", RUN_ID)

    assert (code, len(lines)) == (3, 2)
    assert stderr == "watch: INTERNAL INTERNAL: store broke\n"
    assert service.after_seqs == [0]


async def test_example_resumes_after_seq(start_server: StartServer) -> None:
    service = ScriptedRunService([Send(RUN[3:])])
    port, _ = await start_server(service)

    code, lines, _ = await run_example(
        "--addr", f"127.0.0.1:{port}", "--run-id", RUN_ID, "--after-seq", "3"
    )

    assert code == 0
    assert [json.loads(line)["seq"] for line in lines] == ["4", "5"]
    assert service.after_seqs == [3]


async def test_example_exits_nonzero_when_the_grammar_breaks(start_server: StartServer) -> None:
    broken = stream("run_started", ("node_log", "a"), "run_completed")
    port, _ = await start_server(ScriptedRunService([Send(broken)]))

    code, lines, stderr = await run_example("--addr", f"127.0.0.1:{port}", "--run-id", RUN_ID)

    assert code == 1
    assert len(lines) == 2
    assert "output-outside-attempt at seq 2: " in stderr


async def test_example_exits_nonzero_on_server_error(start_server: StartServer) -> None:
    service = ScriptedRunService(
        [Abort(grpc.StatusCode.NOT_FOUND, "no run", reason="RUN_NOT_FOUND")]
    )
    port, _ = await start_server(service)

    code, lines, stderr = await run_example("--addr", f"127.0.0.1:{port}", "--run-id", "run_x")

    assert (code, lines) == (3, [])
    assert "NOT_FOUND RUN_NOT_FOUND: no run" in stderr


async def test_example_at_the_end_of_a_finished_run_exits_zero(start_server: StartServer) -> None:
    """after_seq = last: the server's stream_end; no reconnect loop, exit 0, the status on stderr."""
    service = ScriptedRunService([End(5)])
    port, _ = await start_server(service)

    code, lines, stderr = await run_example(
        "--addr", f"127.0.0.1:{port}", "--run-id", RUN_ID, "--after-seq", "5"
    )

    assert (code, lines) == (0, [])
    assert stderr == "watch: run run_test finished RUN_STATUS_SUCCEEDED at seq 5\n"
    assert service.after_seqs == [5]


async def test_example_past_the_end_of_a_finished_run_exits_zero(start_server: StartServer) -> None:
    service = ScriptedRunService(
        [
            Abort(
                grpc.StatusCode.OUT_OF_RANGE,
                "beyond",
                reason="AFTER_SEQ_BEYOND_END",
                metadata={"last_seq": "5", "status": "RUN_STATUS_FAILED"},
            )
        ]
    )
    port, _ = await start_server(service)

    code, lines, stderr = await run_example(
        "--addr", f"127.0.0.1:{port}", "--run-id", RUN_ID, "--after-seq", "10"
    )

    assert (code, lines) == (0, [])
    assert stderr == "watch: run run_test finished RUN_STATUS_FAILED at seq 5\n"
    assert service.after_seqs == [10]


async def test_example_help_works() -> None:
    code, lines, _ = await run_example("--help")
    assert code == 0
    for flag in ("--addr", "--run-id", "--after-seq", "--token", "--tls-ca", "--tls-cert",
                 "--tls-key", "--give-up-after"):  # fmt: skip
        assert any(flag in line for line in lines), flag


async def test_example_filtered_watch_checks_the_filtered_grammar(
    start_server: StartServer,
) -> None:
    """--kinds node_log: seq 3 and RunCompleted, with gaps; the filtered rule holds, exit 0."""
    service = ScriptedRunService([Send([RUN[2], RUN[4]], resume_after_seq=5)])
    port, _ = await start_server(service)

    code, lines, stderr = await run_example(
        "--addr", f"127.0.0.1:{port}", "--run-id", RUN_ID, "--kinds", "node_log"
    )

    assert (code, stderr) == (0, "")
    assert lines == [event_to_json(RUN[2]), event_to_json(RUN[4])]
    assert list(service.watch_requests[0].filter.kinds) == ["node_log"]


async def test_example_events_prints_count_events_across_runs(start_server: StartServer) -> None:
    other = stream("run_started", "run_completed")
    for event in other:
        event.run_id = "run_other"
    service = ScriptedRunService(
        [Send([RUN[0], other[0]], cursor="c2"), Abort(grpc.StatusCode.UNAVAILABLE, "draining")],
        [Send([other[0], other[1]], cursor="c3")],
    )
    port, _ = await start_server(service)

    code, lines, _ = await run_example(
        "--addr", f"127.0.0.1:{port}", "--events", "--start", "earliest",
        "--flow-name", "deploy", "--count", "3",
    )  # fmt: skip

    assert code == 0
    assert lines == [event_to_json(e) for e in (RUN[0], other[0], other[1])]
    assert [r.cursor for r in service.events_requests] == ["", "c2"]
    assert service.events_requests[0].filter.flow_name == "deploy"


async def test_example_events_and_run_id_exclude_each_other() -> None:
    code, _, stderr = await run_example("--events", "--run-id", RUN_ID)
    assert code == 2
    assert "either --run-id or --events" in stderr
    code, _, _ = await run_example("--addr", "127.0.0.1:1")
    assert code == 2
