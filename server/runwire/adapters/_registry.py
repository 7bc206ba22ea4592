"""The registry: adapter name to adapter, and which adapters this server switched off."""

from __future__ import annotations

from collections.abc import Mapping

from runwire.adapters import fs, http
from runwire.adapters._base import Adapter
from runwire.adapters.fs import FsAdapter
from runwire.adapters.http import HttpAdapter
from runwire.adapters.shell import ShellAdapter, ShellLimits
from runwire.adapters.util import UtilAdapter

__all__ = ["Registry"]


class Registry:
    """Adapter name → adapter, plus which names this server has switched off."""

    def __init__(self, adapters: list[Adapter], disabled: Mapping[str, str] | None = None) -> None:
        self._adapters = {a.name: a for a in adapters}
        self.disabled = dict(disabled or {})

    def get(self, name: str) -> Adapter | None:
        """The adapter, or None."""
        return self._adapters.get(name)

    def names(self) -> list[str]:
        """Known adapter names, sorted."""
        return sorted(self._adapters)

    @classmethod
    def default(
        cls,
        *,
        shell_allow: tuple[str, ...],
        shell_destructive: tuple[str, ...] = (),
        shell_limits: ShellLimits | None = None,
        fs_roots: tuple[str, ...] = (),
        fs_max_bytes: int = fs.DEFAULT_MAX_BYTES,
        http_allow: tuple[str, ...] = (),
        http_max_bytes: int = http.DEFAULT_MAX_BYTES,
    ) -> Registry:
        """The server's adapters; shell is off unless programs are allow-listed.

        Args:
            shell_allow: Programs shell nodes may run (`--shell-allow`).
            shell_destructive: Programs gated by confirmation (`--shell-destructive`).
            shell_limits: Resource limits for shell children.
            fs_roots: Extra fs roots as `[NAME=]PATH` (`--fs-root`).
            fs_max_bytes: Cap on one fs read or write (`--fs-max-bytes`).
            http_allow: Non-public hosts or CIDRs http may reach (`--http-allow`).
            http_max_bytes: Request body cap and response truncation point (`--http-max-bytes`).

        Raises:
            ValueError: An fs root or http allow entry is malformed.
        """
        shell = ShellAdapter(shell_allow, shell_destructive, shell_limits)
        disabled = {} if shell.enabled else {"shell": "start the server with --shell-allow PATH"}
        adapters: list[Adapter] = [
            shell,
            FsAdapter(fs_roots, max_bytes=fs_max_bytes),
            HttpAdapter(http_allow, max_bytes=http_max_bytes),
            UtilAdapter(),
        ]
        return cls(adapters, disabled)
