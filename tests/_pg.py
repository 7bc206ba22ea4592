"""A Postgres of a test's own, on a loopback TCP port, that the test may restart.

The session's embedded Postgres is shared by every test; tests that restart
the database (`pg_ctl -m fast restart`) get their own cluster instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
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
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-w",
            "-l",
            str(self.data / "log"),
            "-o",
            f"-h 127.0.0.1 -p {self.port} -k {self.data}",
            "start",
        )
        return self.url()

    def restart_fast(self) -> None:
        """`pg_ctl -m fast restart`: every session is terminated, the server comes back."""
        self._run("pg_ctl", "-D", str(self.data), "-w", "-m", "fast", "restart")
        self.restarts += 1

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", str(self.data), "-w", "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
