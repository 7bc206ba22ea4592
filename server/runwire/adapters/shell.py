"""The shell adapter: run an allow-listed program from an argv list, never a shell string."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rfc8785

from runwire.adapters._base import ActionFailed, ActionSpec, NodeContext, SandboxRefused
from runwire.v1 import events_pb2

__all__ = ["ShellAdapter", "ShellLimits"]

# Programs are looked up on this PATH, not the server's, so the environment a
# server was started from cannot change what `argv[0]` means.
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
_MAX_LINE = 16 * 1024
_TAIL = 4 * 1024
_KILL_GRACE = 2.0


# Limits are set by a tiny interpreter that then execs the program, so the
# server never runs Python in a forked copy of itself (a `preexec_fn` would, and
# that can deadlock in a process with threads, as this one has). It costs one
# short interpreter start per shell node. Python ignores SIGPIPE and SIGXFSZ at
# startup and exec keeps ignored signals ignored, so the launcher restores them:
# a program must die of a broken pipe or of its file size limit as it would
# from a shell.
_LAUNCHER = """
import os, resource, signal, sys
for name in ("SIGPIPE", "SIGXFSZ", "SIGXFZ"):
    if hasattr(signal, name):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
for item in sys.argv[1].split(","):
    if item:
        name, soft, hard = item.split(":")
        which = getattr(resource, name)
        soft, hard = int(soft), int(hard)
        _, ceiling = resource.getrlimit(which)
        if ceiling != resource.RLIM_INFINITY:
            soft, hard = min(soft, ceiling), min(hard, ceiling)
        resource.setrlimit(which, (soft, hard))
try:
    os.execv(sys.argv[2], sys.argv[2:])
except OSError as exc:
    sys.stderr.write("runwire: cannot run %s: %s\\n" % (sys.argv[2], exc.strerror))
    sys.exit(127)
"""


@dataclass(frozen=True)
class ShellLimits:
    """Resource limits for every shell child; 0 leaves the server's own limit in place.

    Attributes:
        cpu_seconds: CPU time (RLIMIT_CPU); the child gets SIGXCPU, then SIGKILL
            5 seconds later. The default matches the default node timeout.
        memory_bytes: Address space (RLIMIT_AS). Virtual, not resident: runtimes
            that reserve large ranges up front (JVM, V8) may need more or 0.
        processes: Processes of the server's user (RLIMIT_NPROC), a fork-bomb
            guard. The kernel counts every process of the user, not only this
            child's, and does not enforce it for root.
        file_bytes: Largest file the child may write (RLIMIT_FSIZE); beyond it
            the writer gets SIGXFSZ.
        open_files: Open file descriptors (RLIMIT_NOFILE).
        output_bytes: Stdout plus stderr streamed as NodeLog lines per attempt;
            past it one truncation marker line is logged and the rest dropped.
    """

    cpu_seconds: int = 600
    memory_bytes: int = 8 << 30
    processes: int = 4096
    file_bytes: int = 1 << 30
    open_files: int = 1024
    output_bytes: int = 4 << 20

    def rlimits(self) -> str:
        """The launcher's `NAME:soft:hard,...` argument; core dumps are always off."""
        items = ["RLIMIT_CORE:0:0"]
        if self.cpu_seconds:
            items.append(f"RLIMIT_CPU:{self.cpu_seconds}:{self.cpu_seconds + 5}")
        for name, value in (
            ("RLIMIT_AS", self.memory_bytes),
            ("RLIMIT_NPROC", self.processes),
            ("RLIMIT_FSIZE", self.file_bytes),
            ("RLIMIT_NOFILE", self.open_files),
        ):
            if value and hasattr(resource, name):
                items.append(f"{name}:{value}:{value}")
        return ",".join(items)


def resolve_program(name: str) -> str | None:
    """The real path `name` runs, or None when it names no executable."""
    found = name if "/" in name else shutil.which(name, path=SAFE_PATH)
    if found is None or not os.access(found, os.X_OK):
        return None
    return os.path.realpath(found)


def _env_problem(name: str, value: str) -> str | None:
    if "\x00" in value:
        return "must not contain NUL characters"
    if name.startswith("LD_"):
        # The dynamic loader reads these before any program code runs: LD_PRELOAD
        # would run a library of the flow's choosing inside an allow-listed program.
        return f"{name} is a dynamic loader variable and cannot be set"
    return None


def _arg(value: str | float | bool) -> str:
    return value if isinstance(value, str) else rfc8785.dumps(value).decode()


def _clean(raw: bytes) -> str:
    # Output must be valid UTF-8 on the wire: bad bytes become U+FFFD, NUL U+2400.
    return raw.decode("utf-8", errors="replace").replace("\x00", "\u2400")


class ShellAdapter:
    """`exec` runs `argv` as a subprocess in its own process group.

    No shell parses anything: `argv` goes to exec as is. Only programs on the
    server's `--shell-allow` list run (resolved on /usr/local/bin:/usr/bin:/bin
    to their real path); any other is refused at validation, or with a
    `SandboxViolation` if a template named it. The child starts in the run's
    workspace with an environment built from nothing (PATH, HOME, LANG and the
    node's `env`; no `LD_*`), under resource limits (`--shell-cpu-seconds`,
    `--shell-memory`, `--shell-processes`, `--shell-file-size`,
    `--shell-open-files`); a child killed for its CPU time or file size is a
    `SandboxViolation`. stdout and stderr stream as NodeLog lines until
    `--shell-output-cap` bytes, then a marker line and `truncated: true`. On
    timeout or cancel the whole process group is killed. A non-zero exit fails
    the node with reason `EXIT_STATUS` and the output so far.
    """

    name = "shell"
    actions: Mapping[str, ActionSpec] = {
        "exec": ActionSpec(
            "exec",
            "Run a program; output {exit_code, stdout_tail, stderr_tail, truncated}",
            {
                "type": "object",
                "properties": {
                    "argv": {
                        "description": "The program and its arguments, passed to exec"
                        " without a shell; argv[0] must be on --shell-allow.",
                        "type": "array",
                        # Numbers and booleans (a template like {{ inputs.n }}
                        # renders to one) become their canonical JSON text.
                        "items": {
                            "anyOf": [
                                {"type": "string", "maxLength": 65536},
                                {"type": ["number", "boolean"]},
                            ]
                        },
                        "minItems": 1,
                        "maxItems": 4096,
                    },
                    "env": {
                        "description": "Extra environment variables. The child starts"
                        " from PATH, HOME (the workspace) and LANG only; LD_* is refused.",
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

    def __init__(
        self,
        allow: tuple[str, ...],
        destructive: tuple[str, ...] = (),
        limits: ShellLimits | None = None,
    ) -> None:
        """Configure the adapter.

        Args:
            allow: Programs flows may run (`--shell-allow`); none turns shell off.
            destructive: Programs that need confirmation first (`--shell-destructive`).
            limits: Resource limits for every child.
        """
        self.allowed = frozenset(p for p in (resolve_program(a) for a in allow) if p)
        self.destructive = frozenset(p for p in (resolve_program(a) for a in destructive) if p)
        self.enabled = bool(allow)
        self.limits = limits or ShellLimits()

    def check(self, action: str, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        """No NUL in argv or env (exec cannot pass it); argv[0] must be allow-listed."""
        problems: list[tuple[str, str]] = []
        argv = params.get("argv") or []
        for i, arg in enumerate(argv):
            if "\x00" in str(arg):
                problems.append((f"argv[{i}]", "must not contain NUL characters"))
        for key, value in (params.get("env") or {}).items():
            if why := _env_problem(str(key), str(value)):
                problems.append((f"env.{key}", why))
        program = str(argv[0]) if argv else ""
        if not program or "{{" in program or problems:
            return problems
        resolved = resolve_program(program)
        if resolved is None:
            return [("argv[0]", f"program {program!r} not found on {SAFE_PATH}")]
        if resolved not in self.allowed:
            return [("argv[0]", f"program {program!r} is not on this server's --shell-allow list")]
        return []

    def describe_destructive(self, action: str, params: Mapping[str, Any]) -> str | None:
        """When argv[0] is on the server's `--shell-destructive` list: `Run: <argv>`."""
        argv = [_arg(a) for a in params.get("argv") or []]
        program = resolve_program(argv[0]) if argv else None
        if program is not None and program in self.destructive:
            return "Run: " + " ".join(argv)[:200]
        return None

    async def execute(self, ctx: NodeContext, action: str, params: Mapping[str, Any]) -> Any:
        """Run the program, streaming its output as NodeLog lines."""
        argv = [_arg(a) for a in params["argv"]]
        program = resolve_program(argv[0])
        if program is None or program not in self.allowed:
            raise SandboxRefused(
                events_pb2.SANDBOX_VIOLATION_KIND_PROGRAM,
                argv[0],
                f"program {argv[0]!r} is not on the --shell-allow list",
            )
        ctx.workspace.mkdir(parents=True, exist_ok=True)
        # Built from nothing: the server's environment (tokens, DATABASE_URL) never leaks in.
        env = {"PATH": SAFE_PATH, "HOME": str(ctx.workspace), "LANG": "C.UTF-8"}
        for key, value in (params.get("env") or {}).items():
            if why := _env_problem(str(key), str(value)):
                raise ActionFailed("PARAMS_INVALID", f"env.{key}: {why}")
            env[str(key)] = str(value)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-S",
            "-c",
            _LAUNCHER,
            self.limits.rlimits(),
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
        budget = _Budget(self.limits.output_bytes)
        try:
            assert proc.stdout is not None
            assert proc.stderr is not None
            await asyncio.gather(
                self._pump(ctx, proc.stdout, events_pb2.LOG_STREAM_STDOUT, tails, budget),
                self._pump(ctx, proc.stderr, events_pb2.LOG_STREAM_STDERR, tails, budget),
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
            "truncated": budget.exhausted,
        }
        limit = self._limit_hit(code)
        if limit is not None:
            raise SandboxRefused(
                events_pb2.SANDBOX_VIOLATION_KIND_LIMIT,
                Path(argv[0]).name,
                f"{Path(argv[0]).name} was killed for exceeding its {limit}",
                exit_code=code,
                output=output,
            )
        if code != 0:
            raise ActionFailed(
                "EXIT_STATUS",
                f"{Path(argv[0]).name} exited with status {code}",
                exit_code=code,
                output=output,
            )
        return output

    def _limit_hit(self, code: int) -> str | None:
        """Which limit killed the child, when its own exit status says so."""
        if code == -signal.SIGXFSZ:
            return f"file size limit ({self.limits.file_bytes} bytes)"
        if code == -signal.SIGXCPU:
            return f"CPU time limit ({self.limits.cpu_seconds}s)"
        return None

    async def _pump(
        self,
        ctx: NodeContext,
        reader: asyncio.StreamReader,
        stream: events_pb2.LogStream,
        tails: dict[events_pb2.LogStream, bytearray],
        budget: _Budget,
    ) -> None:
        pending = b""
        skipping = False  # inside an over-long line whose start is already logged
        tail = tails[stream]
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            ctx.count_output(len(chunk))
            tail.extend(chunk)
            del tail[:-_TAIL]
            if budget.exhausted:
                continue  # keep draining so the child never blocks on a full pipe
            if skipping:
                end = chunk.find(b"\n")
                if end < 0:
                    continue
                chunk, skipping = chunk[end + 1 :], False
            pending += chunk
            *complete, pending = pending.split(b"\n")
            if len(pending) > _MAX_LINE:
                complete.append(pending)  # logged cut; the rest of it is dropped
                pending, skipping = b"", True
            if complete:
                await self._emit(ctx, stream, complete, budget)
            # A fast producer always has data ready, so reads never suspend;
            # yield so other runs and the event writer get their turn.
            await asyncio.sleep(0)
        if pending and not budget.exhausted:
            await self._emit(ctx, stream, [pending], budget)

    async def _emit(
        self,
        ctx: NodeContext,
        stream: events_pb2.LogStream,
        lines: list[bytes],
        budget: _Budget,
    ) -> None:
        """Log lines in order, flagging cut ones, until the attempt's output budget runs out."""
        run: list[str] = []
        run_cut = False
        for raw in lines:
            cost = min(len(raw), _MAX_LINE) + 1
            if cost > budget.left:
                budget.exhausted = True
                break
            budget.left -= cost
            cut = len(raw) > _MAX_LINE
            if run and cut != run_cut:
                await ctx.log(stream, run, truncated=run_cut)
                run = []
            run.append(_clean(raw[:_MAX_LINE]))
            run_cut = cut
        if run:
            await ctx.log(stream, run, truncated=run_cut)
        if budget.exhausted and not budget.marked:
            budget.marked = True
            await ctx.log(
                events_pb2.LOG_STREAM_SYSTEM,
                [
                    f"output truncated: this attempt reached its {budget.cap}-byte output cap; "
                    "further output is not logged"
                ],
                truncated=True,
            )


class _Budget:
    """Bytes of output an attempt may still log, shared by its stdout and stderr."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.left = cap if cap > 0 else sys.maxsize
        self.exhausted = False
        self.marked = False


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _terminate_group(proc: asyncio.subprocess.Process) -> None:
    _kill_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError, asyncio.CancelledError):
        async with asyncio.timeout(_KILL_GRACE):
            await asyncio.shield(proc.wait())
    _kill_group(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        async with asyncio.timeout(_KILL_GRACE):
            await asyncio.shield(proc.wait())
