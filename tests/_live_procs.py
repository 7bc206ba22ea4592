"""Subprocesses of the live cross-language test: `runwire serve` and the watch examples."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["ROOT", "ServerProcess", "WatchProcess", "canonical"]

ROOT = Path(__file__).resolve().parents[1]
LISTENING = "runwire listening on "
# Long enough for a cold Python start on a busy 2-core machine; only a hung
# process ever waits this long.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def canonical(value: Any) -> str:
    """The corpus README's canonical JSON: sorted keys, compact, non-ASCII as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


async def _spawn(argv: Sequence[str], env: dict[str, str] | None, stderr: Any) -> Any:
    return await asyncio.create_subprocess_exec(
        *argv,
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
        start_new_session=True,  # its own process group, killed as one
    )


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


class ServerProcess:
    """`python -m runwire.cli serve` on a given database, restartable on its port."""

    def __init__(self, database_url: str, data_dir: Path, args: Sequence[str]) -> None:
        self.database_url = database_url
        self.data_dir = data_dir
        self.args = list(args)
        self.port = 0
        self.lives = 0
        self.proc: asyncio.subprocess.Process | None = None
        self.log_path = data_dir / "server.log"

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> str:
        """Start a server (on the previous port, if it had one); returns its address."""
        assert self.proc is None or self.proc.returncode is not None, "already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.lives += 1
        env = {**os.environ, "DATABASE_URL": self.database_url}
        argv = [sys.executable, "-m", "runwire.cli", "serve", "--listen", self.addr]
        argv += ["--data-dir", str(self.data_dir), *self.args]
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(f"--- life {self.lives}: {' '.join(argv)}\n")
            log.flush()
            self.proc = await _spawn(argv, env, stderr=log)
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(START_TIMEOUT):
                line = (await self.proc.stdout.readline()).decode()
        except TimeoutError:
            line = ""
        if not line.startswith(LISTENING):
            await self.kill()
            raise AssertionError(f"server did not start (got {line!r}):\n{self.log_tail()}")
        self.port = int(line.rsplit(":", 1)[1])
        return self.addr

    async def terminate(self) -> int:
        """SIGTERM (the server drains) and wait for the process to exit; its exit status."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                return await self.proc.wait()
        except TimeoutError:
            await self.kill()
            raise AssertionError(f"server ignored SIGTERM:\n{self.log_tail()}") from None

    async def kill(self) -> None:
        """Stop whatever is left: drain if it still listens, else SIGKILL its group."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await self.proc.wait()
        except TimeoutError:
            _kill_group(self.proc)
            await self.proc.wait()

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


class WatchProcess:
    """One client's watch example; collects its stdout lines as they arrive."""

    def __init__(self, name: str, argv: Sequence[str]) -> None:
        self.name = name
        self.argv = list(argv)
        self.events: list[dict[str, Any]] = []  # parsed stdout lines
        self.lines: list[str] = []  # the same, canonical; raw text if not JSON
        self.raw: list[str] = []  # the lines exactly as printed
        self.stderr = ""
        self.proc: asyncio.subprocess.Process | None = None
        self._changed = asyncio.Condition()
        self._eof = False
        self._readers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.proc = await _spawn(self.argv, None, stderr=asyncio.subprocess.PIPE)
        self._readers = [
            asyncio.create_task(self._read_stdout()),
            asyncio.create_task(self._read_stderr()),
        ]

    async def _read_stdout(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            text = raw.decode("utf-8", errors="replace").rstrip("\n")
            try:
                event = json.loads(text)
            except ValueError:
                event, line = {}, text  # not JSON: kept raw so the comparison shows it
            else:
                line = canonical(event)
            async with self._changed:
                self.events.append(event)
                self.lines.append(line)
                self.raw.append(text)
                self._changed.notify_all()
        async with self._changed:
            self._eof = True
            self._changed.notify_all()

    async def _read_stderr(self) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.stderr += raw.decode("utf-8", errors="replace")

    async def until(self, predicate: Callable[[dict[str, Any]], bool], what: str) -> int:
        """Wait until a printed event matches; returns its index. Fails if output ends first."""
        async with self._changed:
            await self._changed.wait_for(
                lambda: self._eof or any(predicate(e) for e in self.events)
            )
            for i, event in enumerate(self.events):
                if predicate(event):
                    return i
        raise AssertionError(f"{self.name} ended without printing {what}:\n{self.describe()}")

    async def wait(self) -> int:
        """Wait for the process to exit and its output to be read; its exit status."""
        assert self.proc is not None
        code = await self.proc.wait()
        await asyncio.gather(*self._readers)
        return code

    async def kill(self) -> None:
        """SIGKILL the example's process group unless it has exited."""
        if self.proc is None:
            return
        _kill_group(self.proc)
        await self.proc.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)

    def describe(self) -> str:
        code = self.proc.returncode if self.proc else None
        return (
            f"$ {' '.join(self.argv)}\nexit status {code}, {len(self.lines)} lines on stdout; "
            f"stderr:\n{self.stderr.strip() or '(empty)'}"
        )
