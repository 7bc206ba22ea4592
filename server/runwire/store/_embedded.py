"""An embedded Postgres from the pgserver wheel, for `runwire serve` without DATABASE_URL."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

__all__ = ["EmbeddedPostgres"]

log = logging.getLogger(__name__)


class EmbeddedPostgres:
    """A Postgres cluster in a local directory, started on open and stopped on close."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server: Any = None

    def start(self) -> str:
        """Start (or join) the cluster; returns its connection URL."""
        import pgserver

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._server = pgserver.get_server(  # type: ignore[attr-defined]  # re-exported without __all__
            str(self.data_dir.resolve()), cleanup_mode="stop"
        )
        uri: str = self._server.get_uri()
        log.info("embedded Postgres in %s", self.data_dir)
        return uri

    def stop(self) -> None:
        """Stop the cluster if this process started it."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None
