"""The shell adapter: run an allow-listed program from an argv list, never a shell string."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runwire.adapters._base import ActionFailed, ActionSpec, NodeContext, SandboxRefused
from runwire.v1 import events_pb2

__all__ = ["ShellAdapter"]

# Programs are looked up on this PATH, not the server's, so the environment a
# server was started from cannot change what `argv[0]` means.
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
_MAX_LINE = 16 * 1024
_TAIL = 4 * 1024
_KILL_GRACE = 2.0


def resolve_program(name: str) -> str | None:
    """The real path `name` runs, or None when it names no executable."""
    found = name if "/" in name else shutil.which(name, path=SAFE_PATH)
    if found is None or not os.access(found, os.X_OK):
        return None
    return os.path.realpath(found)


def _clean(raw: bytes) -> str:
    # Output must be valid UTF-8 on the wire: bad bytes become U+FFFD, NUL U+2400.
    return raw.decode("utf-8", errors="replace").replace("\x00", "\u2400")


class ShellAdapter:
    """`exec` runs `argv` as a subprocess in its own process group."""

    name = "shell"
    actions: Mapping[str, ActionSpec] = {
        "exec": ActionSpec(
            "exec",
            "Run a program",
            {
                "type": "object",
                "properties": {
                    "argv": {
                        "type": "array",
                        "items": {"type": "string", "maxLength": 65536},
                        "minItems": 1,
                        "maxItems": 4096,
                    },
                    "env": {
                        "type": "object",
                        "additionalProperties": {"type": "string", "maxLength": 65536},
                        "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                    },
                },
                "required": ["argv"],
                "additionalProperties": False,
            },
        )
    }

    def __init__(self, allow: tuple[str, ...], destructive: tuple[str, ...] = ()) -> None:
        self.allowed = frozenset(p for p in (resolve_program(a) for a in allow) if p)
        self.destructive = frozenset(p for p in (resolve_program(a) for a in destructive) if p)
        self.enabled = bool(allow)

    def check(self, action: str, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        """The program in argv[0] must be on the allow-list (unless it is a template)."""
        argv = params.get("argv") or []
        program = str(argv[0]) if argv else ""
        if not program or "{{" in program:
            return []
        resolved = resolve_program(program)
        if resolved is None:
            return [("argv[0]", f"program {program!r} not found on {SAFE_PATH}")]
        if resolved not in self.allowed:
            return [("argv[0]", f"program {program!r} is not on this server's --shell-allow list")]
        return []

    def describe_destructive(self, action: str, params: Mapping[str, Any]) -> str | None:
        """Destructive when argv[0] is on the configured destructive list."""
        argv = [str(a) for a in params.get("argv") or []]
        program = resolve_program(argv[0]) if argv else None
        if program is not None and program in self.destructive:
            return "Run: " + " ".join(argv)[:200]
        return None

    async def execute(self, ctx: NodeContext, action: str, params: Mapping[str, Any]) -> Any:
        """Run the program, streaming its output as NodeLog lines."""
        argv = [str(a) for a in params["argv"]]
        program = resolve_program(argv[0])
        if program is None or program not in self.allowed:
            raise SandboxRefused(
                events_pb2.SANDBOX_VIOLATION_KIND_PROGRAM,
                argv[0],
                f"program {argv[0]!r} is not on the --shell-allow list",
            )
        ctx.workspace.mkdir(parents=True, exist_ok=True)
        env = {"PATH": SAFE_PATH, "HOME": str(ctx.workspace), "LANG": "C.UTF-8"}
        env.update({str(k): str(v) for k, v in (params.get("env") or {}).items()})
        proc = await asyncio.create_subprocess_exec(
            program,
            *argv[1:],
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ctx.workspace,
            env=env,
            start_new_session=True,
        )
        tails = {
            events_pb2.LOG_STREAM_STDOUT: bytearray(),
            events_pb2.LOG_STREAM_STDERR: bytearray(),
        }
        try:
            assert proc.stdout is not None
            assert proc.stderr is not None
            await asyncio.gather(
                self._pump(ctx, proc.stdout, events_pb2.LOG_STREAM_STDOUT, tails),
                self._pump(ctx, proc.stderr, events_pb2.LOG_STREAM_STDERR, tails),
            )
            code = await proc.wait()
        except BaseException:
            # Timeout or cancel: the whole process group goes, not just the leader.
            await _terminate_group(proc)
            raise
        _kill_group(proc.pid, signal.SIGKILL)  # stragglers the program left behind
        output = {
            "exit_code": code,
            "stdout_tail": _clean(bytes(tails[events_pb2.LOG_STREAM_STDOUT])),
            "stderr_tail": _clean(bytes(tails[events_pb2.LOG_STREAM_STDERR])),
        }
        if code != 0:
            raise ActionFailed(
                "EXIT_STATUS",
                f"{Path(argv[0]).name} exited with status {code}",
                exit_code=code,
                output=output,
            )
        return output

    async def _pump(
        self,
        ctx: NodeContext,
        reader: asyncio.StreamReader,
        stream: events_pb2.LogStream,
        tails: dict[events_pb2.LogStream, bytearray],
    ) -> None:
        pending = b""
        tail = tails[stream]
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            ctx.count_output(len(chunk))
            tail.extend(chunk)
            del tail[:-_TAIL]
            pending += chunk
            *complete, pending = pending.split(b"\n")
            if len(pending) > _MAX_LINE:
                complete.append(pending)
                pending = b""
            if complete:
                await ctx.log(stream, [_clean(line[:_MAX_LINE]) for line in complete])
            # A fast producer always has data ready, so reads never suspend;
            # yield so other runs and the event writer get their turn.
            await asyncio.sleep(0)
        if pending:
            await ctx.log(stream, [_clean(pending[:_MAX_LINE])])


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _terminate_group(proc: asyncio.subprocess.Process) -> None:
    _kill_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError, asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(proc.wait()), _KILL_GRACE)
    _kill_group(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.shield(proc.wait()), _KILL_GRACE)
