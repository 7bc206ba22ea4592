"""`runwire serve --workers N`: N server processes on one port and one database.

The supervisor (this process) first binds the address itself without
SO_REUSEPORT, which fails if anything else holds the port (even a server that
set SO_REUSEPORT), and picks the port when it is 0; then it starts the workers,
one after the other (the first migrates the database), each a plain `serve`
with `--workers 1` on that port and SO_REUSEPORT set, so the kernel spreads
connections among them. An embedded Postgres, when no database URL is given,
is the supervisor's, shared by all workers. Runs are spread by their leases
(each worker owns what it starts, and takes over what expired); a watcher is
served by the worker its connection reached, woken by NOTIFY for runs other
workers execute.

SIGTERM or SIGINT is passed to every worker (each drains as a single server
does). A worker that exits on its own ends the others too: a server that is
part dead says so by exiting, with the first failed worker's exit code.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runwire.config import Settings

__all__ = ["REUSE_PORT_ENV", "serve_workers"]

REUSE_PORT_ENV = "RUNWIRE_WORKER_REUSE_PORT"
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In a worker, before exec: kill it when the supervisor dies without stopping it.

    The supervisor passes SIGTERM on whenever it can; if it dies instead (kill
    -9), the workers die as abruptly, as one process would have, and their runs
    are taken over once their leases expire.
    """
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def claim_port(listen: str) -> int:
    """Bind `listen` exclusively once (no SO_REUSEPORT) to prove no one else holds
    it; returns the port (the kernel's pick for port 0). Raises OSError."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    family, kind, proto, _, addr = socket.getaddrinfo(
        host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    with socket.socket(family, kind, proto) as sock:
        # Like gRPC: connections of an earlier server in TIME_WAIT do not block.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        return int(sock.getsockname()[1])


def _worker_metrics(metrics_listen: str | None, index: int) -> list[str]:
    """Worker `index` (from 0) serves its own metrics on PORT+index (each its own
    kernel-picked port at 0): a scrape must see one process's counters, never
    whichever process SO_REUSEPORT handed the connection to."""
    if metrics_listen is None:
        return []
    host, _, port = metrics_listen.rpartition(":")
    return ["--metrics-listen", f"{host}:{int(port) + index if int(port) else 0}"]


def _worker_argv(
    raw_argv: Sequence[str], listen: str, database_url: str, metrics: Sequence[str] = ()
) -> list[str]:
    # argparse keeps the last of a repeated option: these override the user's.
    return [
        sys.executable,
        "-m",
        "runwire.cli",
        *raw_argv,
        "--workers",
        "1",
        "--listen",
        listen,
        "--database-url",
        database_url,
        *metrics,
    ]


def _forward(stream: object) -> None:
    for line in stream:  # type: ignore[attr-defined]
        sys.stdout.write(line)
        sys.stdout.flush()


def serve_workers(settings: Settings, workers: int, raw_argv: Sequence[str]) -> int:
    """Run `workers` server processes on one port; returns the exit code."""
    from runwire.metrics import parse_listen
    from runwire.store._embedded import EmbeddedPostgres

    if settings.metrics_listen is not None:
        try:
            parse_listen(settings.metrics_listen)
        except ValueError as exc:
            print(f"runwire: {exc}", file=sys.stderr)
            return 2
    host = settings.listen.rpartition(":")[0]
    try:
        port = claim_port(settings.listen)
    except OSError as exc:
        print(
            f"runwire: cannot listen on {settings.listen}: {exc.strerror or exc}", file=sys.stderr
        )
        return 2
    listen = f"{host}:{port}"
    embedded: EmbeddedPostgres | None = None
    database_url = settings.database_url or ""
    if not database_url:
        embedded = EmbeddedPostgres(settings.data_dir / "postgres")
        database_url = embedded.start()
    procs: list[subprocess.Popen[str]] = []
    stopping = False
    code = 0

    def stop_all(signum: int = signal.SIGTERM) -> None:
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signum)

    def on_signal(signum: int, _frame: object) -> None:
        stop_all(signal.SIGTERM)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        env = {**os.environ, REUSE_PORT_ENV: "1"}
        for i in range(workers):
            if stopping:
                break
            proc = subprocess.Popen(
                _worker_argv(
                    raw_argv, listen, database_url, _worker_metrics(settings.metrics_listen, i)
                ),
                stdout=subprocess.PIPE,
                text=True,
                env=env,
                preexec_fn=_die_with_parent,
            )
            procs.append(proc)
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith("runwire listening on "):
                print(f"runwire: worker {i + 1} of {workers} did not start", file=sys.stderr)
                code = proc.wait() or 3
                procs.remove(proc)  # reaped: os.wait below must not wait for it again
                stop_all()
                break
            threading.Thread(target=_forward, args=(proc.stdout,), daemon=True).start()
        else:
            print(f"runwire listening on {listen}", flush=True)
        while procs:
            pid, status = os.wait()
            done = next((p for p in procs if p.pid == pid), None)
            if done is None:
                continue
            done.returncode = os.waitstatus_to_exitcode(status)
            procs.remove(done)
            if not stopping:
                print(
                    f"runwire: worker {done.pid} exited ({done.returncode}); stopping the others",
                    file=sys.stderr,
                )
                code = done.returncode or 3
                stop_all()
            elif done.returncode not in (0, -signal.SIGTERM) and not code:
                code = done.returncode if done.returncode > 0 else 3
    finally:
        stop_all()
        for p in procs:
            with contextlib.suppress(Exception):
                p.wait(timeout=60)
        for s, handler in previous.items():
            signal.signal(s, handler)
        if embedded is not None:
            embedded.stop()
    return code
