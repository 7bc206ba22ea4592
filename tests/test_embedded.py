"""No stray processes: `runwire serve` without DATABASE_URL stops the embedded
Postgres it started on every exit path it controls, and after a kill -9 the
next server reuses the cluster left running (never two for one directory)
and stops it in turn."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Under the checkout, not pytest's 0700 temporary root: Postgres runs as its
# own user when the tests run as root and must be able to reach the directory.
_DIRS = ROOT / ".runwire" / "test-pg"
START_TIMEOUT = 120.0


@pytest.fixture
def data_dir() -> AsyncIterator[Path]:
    _DIRS.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=f"embedded-{os.getpid()}-", dir=_DIRS))
    root.chmod(0o755)
    yield root
    for pid in postmasters(root):  # whatever a failing test left behind
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGQUIT)
    import shutil

    shutil.rmtree(root, ignore_errors=True)


def postmasters(data_dir: Path) -> list[int]:
    """Live postmasters whose data directory is under `data_dir` (a backend the
    postmaster just forked still shows its argv for a moment: it is left out
    by its parent)."""
    marker = str(data_dir.resolve()).encode()
    found: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, ppid = fields[0], int(fields[1])
        if state != "Z" and argv[0].endswith(b"/postgres") and any(marker in a for a in argv):
            found[int(entry.name)] = ppid
    return sorted(pid for pid, ppid in found.items() if ppid not in found)


async def serve(data_dir: Path, listen: str = "127.0.0.1:0") -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    log = (data_dir / "server.log").open("ab")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "runwire.cli",
        "serve",
        "--listen",
        listen,
        "--data-dir",
        str(data_dir / "server"),
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
        start_new_session=True,
    )
    log.close()
    return proc


async def until_listening(proc: asyncio.subprocess.Process, data_dir: Path) -> None:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)
    assert line.startswith(b"runwire listening on "), (data_dir / "server.log").read_text()


async def until_gone(pids: list[int], deadline: float = 60.0) -> bool:
    """Poll (a condition, not a timer) until none of `pids` is alive."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if not any(_running(p) for p in pids):
            return True
        await asyncio.sleep(0.05)
    return False


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def test_serve_stops_its_embedded_postgres_on_sigterm(data_dir: Path) -> None:
    proc = await serve(data_dir)
    await until_listening(proc, data_dir)
    started = postmasters(data_dir)
    assert len(started) == 1
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 60) == 0
    assert await until_gone(started), "the embedded Postgres outlived its server"


async def test_next_serve_reuses_postgres_a_killed_one_left_and_stops_it(data_dir: Path) -> None:
    first = await serve(data_dir)
    await until_listening(first, data_dir)
    left = postmasters(data_dir)
    assert len(left) == 1
    os.kill(first.pid, signal.SIGKILL)  # the server only: nothing of it can run now
    await first.wait()
    assert postmasters(data_dir) == left  # beyond its control: still running
    second = await serve(data_dir)
    await until_listening(second, data_dir)
    assert postmasters(data_dir) == left, "never two clusters for one data directory"
    second.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(second.wait(), 60) == 0
    assert await until_gone(left), "the reused Postgres outlived the server that reused it"


async def test_failed_start_stops_the_embedded_postgres(data_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = await serve(data_dir, listen=f"127.0.0.1:{port}")
        code = await asyncio.wait_for(proc.wait(), START_TIMEOUT)
    assert code != 0
    assert postmasters(data_dir) == [] or await until_gone(postmasters(data_dir))
