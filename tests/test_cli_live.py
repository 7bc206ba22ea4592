"""The live view in a real terminal (a pseudo-terminal): every node from the
start, progress and elapsed time, a row per loop visit, attempts, latest output."""

from __future__ import annotations

import asyncio
import codecs
import json
import os
import pty
import re
import sys
from pathlib import Path

from conftest import Harness, wait_for_event
from rich.console import Console

from runwire._view import RunView, event_line
from runwire.v1 import events_pb2

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


class _Terminal:
    """A CLI process on a pseudo-terminal; `until` waits for text on its screen."""

    def __init__(self) -> None:
        self.text = ""
        self._raw = ""
        # A read may end inside a multi-byte character or an escape sequence:
        # decode across reads, and strip escapes from the whole screen so far.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._changed = asyncio.Event()
        self._eof = False

    async def start(self, *args: str) -> asyncio.subprocess.Process:
        master, slave = pty.openpty()
        env = {**os.environ, "COLUMNS": "140", "LINES": "50", "TERM": "xterm-256color"}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "runwire.cli", *args, stdin=slave, stdout=slave, stderr=slave, env=env
        )  # fmt: skip
        os.close(slave)
        self._master = master
        asyncio.get_running_loop().add_reader(master, self._read)
        return self.proc

    def _read(self) -> None:
        try:
            chunk = os.read(self._master, 65536)
        except OSError:  # EIO: the process closed the terminal
            chunk = b""
        if not chunk:
            self._eof = True
            asyncio.get_running_loop().remove_reader(self._master)
        self._raw += self._decoder.decode(chunk, final=not chunk)
        self.text = _ANSI.sub("", self._raw)
        self._changed.set()

    async def until(self, pattern: str) -> re.Match[str]:
        while (m := re.search(pattern, self.text)) is None:
            assert not self._eof, f"never shown: {pattern}\n{self.text[-3000:]}"
            self._changed.clear()
            await self._changed.wait()  # the next output, or end of output
        return m

    async def finish(self) -> str:
        """Wait for the process to exit and its terminal to reach end of output."""
        await self.proc.wait()
        while not self._eof:
            self._changed.clear()
            await self._changed.wait()
        os.close(self._master)
        return self.text


def _last_frame(text: str) -> str:
    return text[text.rindex("┏") :]


async def test_cli_live_view_shows_pending_nodes_progress_and_output(
    harness: Harness, tmp_path: Path
) -> None:
    hold = "while [ ! -e go ]; do sleep 0.02; done; echo first line; echo last line"
    flow = tmp_path / "two.json"
    flow.write_text(json.dumps({"name": "two", "nodes": [
        {"id": "a", "action": {"adapter": "shell", "action": "exec", "params": {"argv": ["sh", "-c", hold]}}},
        {"id": "b", "action": {"adapter": "util", "action": "set", "params": {"value": {"n": 1}}}},
    ], "edges": [{"source": "a", "target": "b"}]}))  # fmt: skip
    term = _Terminal()
    await term.start("run", str(flow), "--watch", "--addr", harness.addr)
    run_id = (await term.until(r"started (run_\w+)"))[1]
    # b shows, pending, before it has any event; a is running with its own time.
    await term.until(r"two · run_\w+ · RUNNING · 0/2 nodes · \d+\.\ds")
    await term.until(r"│ a\s+│ running\s+│\s+\d+\.\ds… │ shell\.exec")
    await term.until(r"│ b\s+│ pending\s+│")
    await wait_for_event(harness.stub, run_id, lambda e: e.HasField("node_started"))
    (harness.data_dir / "workspaces" / run_id / "go").touch()
    text = await term.finish()
    assert term.proc.returncode == 0, text[-3000:]
    frame = _last_frame(text)
    assert re.search(r"two · run_\w+ · SUCCEEDED · 2/2 nodes · \d+\.\ds", text)
    assert re.search(r"│ a\s+│ succeeded\s+│\s+\d+\.\ds │ last line", frame), frame
    assert re.search(r'│ b\s+│ succeeded\s+│\s+\d+\.\ds │ → \{"n": 1\}', frame), frame


async def test_cli_live_view_shows_each_loop_visit(harness: Harness) -> None:
    """Regression: `fix skipped` showed although fix ran on visit 1; each visit
    of a loop is its own row now."""
    term = _Terminal()
    await term.start(
        "run", str(EXAMPLES / "loop-until-green.yaml"), "--watch", "--addr", harness.addr
    )
    text = await term.finish()
    assert term.proc.returncode == 0, text[-3000:]
    frame = _last_frame(text)
    rows = [
        re.sub(r"\s+", " ", line.strip("│ ")).split(" │ ")[:2]
        for line in frame.splitlines()
        if line.startswith("│")
    ]
    assert rows == [
        ["check ·1", "failed"], ["fix ·1", "succeeded"], ["report ·1", "skipped"],
        ["check ·2", "succeeded"], ["fix ·2", "skipped"], ["report ·2", "succeeded"],
    ], frame  # fmt: skip
    assert "SUCCEEDED · 3/3 nodes" in text


def _event(
    seq: int,
    node_id: str = "",
    iteration: int = 0,
    attempt: int = 0,
    at: float = 0.0,
    **variant: object,
) -> events_pb2.RunEvent:
    e = events_pb2.RunEvent(
        seq=seq, node_id=node_id, iteration=iteration, attempt=attempt, **variant
    )
    e.event_time.FromNanoseconds(int(at * 1e9))
    return e


def _text(view: RunView, now: float) -> str:
    console = Console(record=True, width=120, color_system=None)
    console.print(view.render(now=now))
    return console.export_text()


def test_live_view_running_time_ticks_and_attempts_are_named() -> None:
    view = RunView("run_x", ["a", "b"])
    view.apply(_event(1, at=100.0, run_started=events_pb2.RunStarted(flow_name="f", node_count=2)))
    view.apply(
        _event(
            2,
            "a",
            1,
            1,
            at=100.0,
            node_started=events_pb2.NodeStarted(adapter="shell", action="exec"),
        )
    )
    assert re.search(r"│ a\s+│ running\s+│\s+1\.5s… │", _text(view, 101.5))
    assert re.search(r"│ a\s+│ running\s+│\s+2m05s… │", _text(view, 225.0))
    assert "f · run_x · PENDING · 0/2 nodes · 2m05s" in _text(view, 225.0)
    failed = events_pb2.NodeFailed(will_retry=True, error=events_pb2.ErrorSummary(message="boom"))
    view.apply(_event(3, "a", 1, 1, at=101.0, node_failed=failed))
    retry = events_pb2.NodeRetrying(
        next_attempt=2, max_attempts=3, error=events_pb2.ErrorSummary(message="boom")
    )
    view.apply(_event(4, "a", 1, 1, at=101.0, node_retrying=retry))
    assert "! attempt 1 failed: boom; attempt 2/3 in 0.0s" in _text(view, 101.0)
    view.apply(
        _event(
            5,
            "a",
            1,
            2,
            at=102.0,
            node_started=events_pb2.NodeStarted(adapter="shell", action="exec"),
        )
    )
    view.apply(_event(6, "a", 1, 2, at=102.0, node_log=events_pb2.NodeLog(line="hello")))
    assert re.search(r"│ a\s+│ running #2\s+│\s+0\.5s… │ hello", _text(view, 102.5))
    assert re.search(r"│ b\s+│ pending\s+│", _text(view, 102.5))  # fmt: skip


def test_live_view_without_the_flow_counts_nodes_not_started() -> None:
    """`runwire watch RUN` has no flow file: RunStarted.node_count stands in for it."""
    view = RunView("run_x")
    view.apply(_event(1, at=10.0, run_started=events_pb2.RunStarted(flow_name="f", node_count=3)))
    view.apply(
        _event(
            2, "a", 1, 1, at=10.0, node_started=events_pb2.NodeStarted(adapter="util", action="set")
        )
    )
    text = _text(view, 11.0)
    assert "f · run_x · PENDING · 0/3 nodes · 1.0s" in text
    assert re.search(r"│ \+2 not started\s+│ pending", text)  # fmt: skip


def _item(e: events_pb2.RunEvent, index: int, key: str = "") -> events_pb2.RunEvent:
    e.item_index, e.item_key = index, key
    return e


def test_live_view_shows_a_fan_out_node_as_one_row_with_counts_and_its_failures() -> None:
    view = RunView("run_x", ["fan"])
    view.apply(_event(1, at=1.0, run_started=events_pb2.RunStarted(flow_name="f", node_count=1)))
    started = events_pb2.NodeStarted(
        adapter="fs", action="read-file", params_json='{"for_each":[1,2,3,4]}'
    )
    view.apply(_event(2, "fan", 1, 1, at=1.0, node_started=started))
    item_started = events_pb2.NodeStarted(adapter="fs", action="read-file")
    for seq, i in ((3, 0), (4, 1), (5, 2)):
        view.apply(_item(_event(seq, "fan", 1, 1, at=1.0, node_started=item_started), i, f"k{i}"))
    view.apply(_item(_event(6, "fan", 1, 1, at=1.5, node_succeeded=events_pb2.NodeSucceeded()), 0))
    failed = events_pb2.NodeFailed(error=events_pb2.ErrorSummary(message="no such file"))
    view.apply(_item(_event(7, "fan", 1, 1, at=1.5, node_failed=failed), 1, "k1"))
    text = _text(view, 2.0)
    assert re.search(r"│ fan\s+│ running\s+│\s+1\.0s… │ 1/4 done · 1 failed · 1 running", text)
    assert re.search(r"│\s+└ item\s+│ failed\s+│\s+│ fan\[1\] k1: no such file", text)
    assert text.count("│ fan ") == 1  # one row for the node, not one per item


def test_plain_line_names_the_item() -> None:
    e = _item(_event(9, "fan", 2, 1, at=1.0, node_log=events_pb2.NodeLog(line="x")), 3, "svc-a")
    assert " node_log fan (visit 2, item 3 'svc-a', attempt 1) " in event_line(e)
