"""The util adapter: side-effect-free steps (set a value, wait, fail on purpose)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from runwire.adapters._base import ActionFailed, ActionSpec, NodeContext

__all__ = ["UtilAdapter"]


class UtilAdapter:
    """`set` outputs a value, `sleep` waits (cancellably), `fail` fails with a message."""

    name = "util"
    actions: Mapping[str, ActionSpec] = {
        "set": ActionSpec(
            "set",
            "Output a value; output: the rendered `value`",
            {
                "type": "object",
                "properties": {
                    "value": {"description": "Any JSON value; templates in it are rendered."}
                },
                "required": ["value"],
                "additionalProperties": False,
            },
            pure=True,
        ),
        "sleep": ActionSpec(
            "sleep",
            "Wait a number of seconds; output {slept_seconds}",
            {
                "type": "object",
                "properties": {
                    "seconds": {
                        "description": "How long to wait; a cancel ends the wait.",
                        "type": "number",
                        "minimum": 0,
                        "maximum": 86400,
                    }
                },
                "required": ["seconds"],
                "additionalProperties": False,
            },
            pure=True,
        ),
        "fail": ActionSpec(
            "fail",
            "Fail with a message (the node fails with reason FAILED)",
            {
                "type": "object",
                "properties": {
                    "message": {
                        "description": "The error message.",
                        "type": "string",
                        "maxLength": 4096,
                    }
                },
                "required": ["message"],
                "additionalProperties": False,
            },
            pure=True,
        ),
    }

    def check(self, action: str, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        """No checks beyond the schema."""
        return []

    def describe_destructive(self, action: str, params: Mapping[str, Any]) -> str | None:
        """Util actions destroy nothing."""
        return None

    async def execute(self, ctx: NodeContext, action: str, params: Mapping[str, Any]) -> Any:
        """Run one util action."""
        if action == "set":
            return params["value"]
        if action == "sleep":
            await asyncio.sleep(float(params["seconds"]))
            return {"slept_seconds": params["seconds"]}
        raise ActionFailed("FAILED", str(params["message"]))
