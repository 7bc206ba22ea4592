"""What every adapter provides and what it may ask of the engine while it runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from runwire.v1 import events_pb2

__all__ = [
    "ActionFailed",
    "ActionSpec",
    "Adapter",
    "NodeContext",
    "SandboxRefused",
    "is_templated",
]


def is_templated(value: object) -> bool:
    """True for a string holding template syntax, which is only checked once rendered."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


@dataclass(frozen=True)
class ActionSpec:
    """One action of an adapter: its JSON Schema for params, whether it destroys,
    and whether it is pure (no effect outside the run, so it may start before
    its NodeStarted is committed)."""

    name: str
    summary: str
    params_schema: Mapping[str, Any]
    destructive: bool = False
    pure: bool = False


class ActionFailed(Exception):
    """The action ran and failed; the node attempt fails with this reason."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        exit_code: int = 0,
        output: Any = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.exit_code = exit_code
        self.output = output


class SandboxRefused(ActionFailed):
    """The adapter refused the action; the engine emits SandboxViolation first.

    `exit_code` and `output` are set when the action had already run, for
    example a process killed for exceeding a resource limit.
    """

    def __init__(
        self,
        kind: events_pb2.SandboxViolationKind,
        target: str,
        detail: str,
        *,
        exit_code: int = 0,
        output: Any = None,
    ) -> None:
        super().__init__("SANDBOX", detail, exit_code=exit_code, output=output)
        self.kind = kind
        self.target = target
        self.detail = detail


class NodeContext(Protocol):
    """The engine's side of a running node attempt."""

    @property
    def run_id(self) -> str:
        """The run."""
        ...

    @property
    def node_id(self) -> str:
        """The node."""
        ...

    @property
    def workspace(self) -> Path:
        """The run's private working directory."""
        ...

    async def log(
        self, stream: events_pb2.LogStream, lines: list[str], *, truncated: bool = False
    ) -> None:
        """Emit one NodeLog per line, in order.

        Args:
            stream: Where the lines came from.
            lines: The lines, already valid UTF-8 without NUL.
            truncated: Mark every line as cut short, or as the output-cap marker.
        """
        ...

    def count_output(self, nbytes: int) -> None:
        """Add to the attempt's output byte count (reported by heartbeats)."""
        ...


class Adapter(Protocol):
    """A family of actions a node can run."""

    name: str
    actions: Mapping[str, ActionSpec]

    def check(self, action: str, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Extra checks beyond the JSON Schema: (params sub-path, description) pairs."""
        ...

    def describe_destructive(self, action: str, params: Mapping[str, Any]) -> str | None:
        """A one-line human summary if running this would destroy something
        (for example `Delete file: build/out.bin`), else None. Params are rendered."""
        ...

    async def execute(self, ctx: NodeContext, action: str, params: Mapping[str, Any]) -> Any:
        """Run the action; returns the node output (JSON-able) or raises ActionFailed."""
        ...
