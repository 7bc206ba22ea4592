"""An embedded Postgres from the pgserver wheel, for `runwire serve` without DATABASE_URL.

One cluster per data directory, never two: a postmaster that a crashed server
(kill -9) left running is reused, and the last server using the directory
stops it on every exit path it controls (SIGTERM, SIGINT, a fatal error, a
failed start).

pgserver counts the processes using a cluster in `<data>/.handle_pids.json`
and stops the cluster only when the last one leaves. A process killed with
-9 never leaves, so its pid stayed on the list forever and no later server
ever stopped the cluster: dead pids are pruned here, on start and on stop.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

__all__ = ["EmbeddedPostgres"]

log = logging.getLogger(__name__)

_HANDLES = ".handle_pids.json"
_STOP_TIMEOUT = 30.0


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user (Postgres runs as its own user under root)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): kill(0) is all there is
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class EmbeddedPostgres:
    """A Postgres cluster in a local directory, started on open and stopped on close."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server: Any = None

    def _lock(self) -> Any:
        from pgserver.postgres_server import PostgresServer

        return PostgresServer._lock

    def _prune(self) -> list[int]:
        """Drop pids of processes that died without leaving; the live ones."""
        path = self.data_dir.resolve() / _HANDLES
        if not path.exists():
            return []
        try:
            pids = [int(p) for p in json.loads(path.read_text())]
        except (ValueError, TypeError):
            pids = []
        live = [p for p in pids if _alive(p)]
        if live != pids:
            log.warning(
                "embedded Postgres in %s: forgetting %d processes that died without "
                "stopping it (%s)",
                self.data_dir,
                len(pids) - len(live),
                ", ".join(str(p) for p in pids if p not in live),
            )
            path.write_text(json.dumps(live))
        return live

    def postmaster_pid(self) -> int | None:
        """The running postmaster's pid, from its pid file."""
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
            pid = int(first)
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def start(self) -> str:
        """Start the cluster, or join the one already running there; returns its URL."""
        import pgserver

        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            self._prune()
        left = self.postmaster_pid()
        if left is not None:
            log.warning(
                "embedded Postgres in %s is already running (pid %d): reusing it",
                self.data_dir,
                left,
            )
        self._server = pgserver.get_server(  # type: ignore[attr-defined]  # re-exported without __all__
            str(self.data_dir.resolve()), cleanup_mode="stop"
        )
        uri: str = self._server.get_uri()
        log.info("embedded Postgres in %s", self.data_dir)
        return uri

    def stop(self) -> None:
        """Leave the cluster; stop it (fast shutdown) if no other live process uses it."""
        if self._server is None:
            return
        server, self._server = self._server, None
        with self._lock():
            others = [p for p in self._prune() if p != os.getpid()]
        if not others:
            self._fast_shutdown()
        # Deregisters this process (and, as the last one, finds nothing left to stop).
        server.cleanup()

    def _fast_shutdown(self) -> None:
        """SIGINT to the postmaster, as `pg_ctl -m fast stop` sends: sessions are
        ended at once instead of waiting for every client to leave."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        for sig, wait in ((signal.SIGINT, _STOP_TIMEOUT), (signal.SIGQUIT, 5.0)):
            try:
                os.kill(pid, sig)
            except OSError:
                return
            deadline = time.monotonic() + wait
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if not _alive(pid):
                log.info("embedded Postgres in %s stopped", self.data_dir)
                return
        log.error("embedded Postgres in %s (pid %d) did not stop", self.data_dir, pid)
