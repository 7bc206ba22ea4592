"""Adapters: named families of actions that nodes run, in one registry."""

from __future__ import annotations

from collections.abc import Mapping

from runwire.adapters._base import ActionFailed, ActionSpec, Adapter, NodeContext, SandboxRefused
from runwire.adapters.shell import ShellAdapter
from runwire.adapters.util import UtilAdapter

__all__ = [
    "ActionFailed",
    "ActionSpec",
    "Adapter",
    "NodeContext",
    "Registry",
    "SandboxRefused",
    "ShellAdapter",
    "UtilAdapter",
]


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
    def default(cls, *, shell_allow: tuple[str, ...]) -> Registry:
        """The server's adapters; shell is off unless programs are allow-listed."""
        shell = ShellAdapter(shell_allow)
        disabled = {} if shell.enabled else {"shell": "start the server with --shell-allow PATH"}
        return cls([shell, UtilAdapter()], disabled)
