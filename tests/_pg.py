"""A Postgres of a test's own, on a loopback TCP port, that the test may restart.

The session's embedded Postgres is shared by every test; tests that restart
the database (`pg_ctl -m fast restart`) get their own cluster instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from pgserver._commands import POSTGRES_BIN_PATH

__all__ = ["RestartablePostgres"]

_ROOT = Path(__file__).resolve().parent.parent / ".runwire" / "test-pg"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RestartablePostgres:
    """initdb + pg_ctl from the pgserver wheel, listening on 127.0.0.1 only."""

    def __init__(self) -> None:
        _ROOT.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix=f"restart-{os.getpid()}-", dir=_ROOT))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.port = _free_port()
        # Postgres refuses to run as root; pgserver runs it as its own user.
        self._user = "pgserver" if os.geteuid() == 0 else None
        self.restarts = 0
        self.start_crashes = 0
        self._proc: subprocess.Popen[bytes] | None = None

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [str(POSTGRES_BIN_PATH / tool), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            user=self._user,
            timeout=120,
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> str:
        if self._user is not None:
            from pgserver.utils import ensure_user_exists

            ensure_user_exists(self._user)
            self.data.mkdir()
            shutil.chown(self.data, self._user, self._user)
        self._run("initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres", "-E", "utf8")
        self._start()
        return self.url()

    def _start(self) -> None:
        # A freshly exec'd postgres (or pg_ctl) died of SIGSEGV at startup now
        # and then on this loaded machine, before logging a line: try again.
        for attempt in range(5):
            try:
                self._start_once()
                return
            except RuntimeError:
                if attempt == 4:
                    raise
                self.start_crashes += 1

    def _start_once(self) -> None:
        # The postmaster runs as this object's child (not daemonized by
        # pg_ctl, whose start and stop crashed with SIGSEGV now and then on a
        # loaded machine): restarts signal it and wait for it directly.
        with (self.data / "log").open("ab") as log:
            self._proc = subprocess.Popen(
                [
                    str(POSTGRES_BIN_PATH / "postgres"),
                    "-D",
                    str(self.data),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.data),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                user=self._user,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while not self._ready():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                tail = (self.data / "log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"postgres did not start (exit {self._proc.poll()}):\n{tail}")
            time.sleep(0.01)

    def _ready(self) -> bool:
        try:
            lines = (self.data / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return len(lines) > 7 and lines[0] == str(self._proc.pid) and lines[7].strip() == "ready"

    def restart_fast(self) -> None:
        """What `pg_ctl -m fast restart` does: SIGINT to the postmaster (fast
        shutdown: every session is terminated), wait for it to exit, start again."""
        self._proc.send_signal(signal.SIGINT)
        self._proc.wait(60)
        self._start()
        self.restarts += 1

    def down(self) -> None:
        """Fast shutdown, and stay down (an outage) until `up()`."""
        self._proc.send_signal(signal.SIGINT)
        self._proc.wait(60)

    def up(self) -> None:
        """Start again after `down()`."""
        self._start()
        self.restarts += 1

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGQUIT)  # immediate shutdown
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(30)
        shutil.rmtree(self.root, ignore_errors=True)
