"""Accumulate streamed chat-completion chunks into one turn, tolerating what real servers do."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runwire.engine import ModelToolCall

__all__ = ["StreamAccumulator"]


@dataclass
class _Call:
    call_id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class StreamAccumulator:
    """Folds chunks (as plain dicts) into text, tool calls, finish reason and usage.

    Tool-call fragments are keyed by `index`; a new `id` at a used index opens a
    new call (some servers reuse index 0 for parallel calls). The function name
    comes from the first fragment that has one (some servers repeat it in every
    fragment). Usage may never come (counts stay 0). A stream without a
    `finish_reason` is broken, which `finished` tells.
    """

    def __init__(self) -> None:
        self.text_parts: list[str] = []
        self.finish_reason = ""
        self.input_tokens = 0
        self.output_tokens = 0
        self.model = ""
        self._calls: list[_Call] = []
        self._open: dict[int, _Call] = {}

    @property
    def finished(self) -> bool:
        """True once a choice reported its finish_reason."""
        return bool(self.finish_reason)

    @property
    def text(self) -> str:
        """The answer text so far."""
        return "".join(self.text_parts)

    def add(self, chunk: dict[str, Any]) -> str:
        """Fold one chunk; returns its text delta (may be empty)."""
        self.model = self.model or str(chunk.get("model") or "")
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.input_tokens = int(usage.get("prompt_tokens") or 0)
            self.output_tokens = int(usage.get("completion_tokens") or 0)
        delta_text = ""
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                delta_text += content
            for frag in delta.get("tool_calls") or []:
                self._fragment(frag)
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
        if delta_text:
            self.text_parts.append(delta_text)
        return delta_text

    def _fragment(self, frag: dict[str, Any]) -> None:
        index = int(frag.get("index") or 0)
        call_id = frag.get("id") or ""
        call = self._open.get(index)
        if call is None or (call_id and call.call_id and call_id != call.call_id):
            call = _Call(call_id=call_id)
            self._open[index] = call
            self._calls.append(call)
        elif call_id and not call.call_id:
            call.call_id = call_id
        fn = frag.get("function") or {}
        if fn.get("name") and not call.name:
            call.name = str(fn["name"])
        if isinstance(fn.get("arguments"), str):
            call.arguments.append(fn["arguments"])

    def tool_calls(self) -> list[ModelToolCall]:
        """The calls in the model's order; a call without an id gets `call_<n>`."""
        return [
            ModelToolCall(c.call_id or f"call_{i}", c.name, "".join(c.arguments))
            for i, c in enumerate(self._calls)
        ]
