"""Secrets out, placeholders in: what an attempt sends to a cloud model, and back again.

Private keys, provider-style API keys, JWTs, bearer tokens, credentials in
URLs, e-mail addresses and card numbers (Luhn-checked) become stable
placeholders such as `⟦SECRET_1⟧`: the same secret gets the same placeholder
within the attempt, so the model can still refer to it. The map lives in the
attempt's memory only; tool arguments and the final answer are rehydrated
before they are used. Events keep what crossed the boundary.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["Sanitizer"]

_PLACEHOLDER = re.compile(r"⟦SECRET_(\d+)⟧")

# (pattern, group holding the secret): the group is replaced, the rest kept.
_RULES: list[tuple[re.Pattern[str], int]] = [
    (
        re.compile(
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY-----"
        ),
        0,
    ),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"), 0),
    (
        re.compile(
            r"\b(?:sk-(?:ant-|proj-)?[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}|ghp_[A-Za-z0-9]{30,}"
            r"|github_pat_[A-Za-z0-9_]{20,}|xox[abpr]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{30,}"
            r"|glpat-[A-Za-z0-9_-]{20,})"
        ),
        0,
    ),
    (re.compile(r"(?i)\bbearer\s+([A-Za-z0-9._~+/=-]{8,})"), 1),
    (re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://([^\s/:@]+:[^\s/@]+)@"), 1),
    (re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"), 0),
    (re.compile(r"\b\d(?:[ -]?\d){12,18}\b"), 0),  # card numbers, kept only if Luhn-valid
]


def _luhn(text: str) -> bool:
    digits = [int(c) for c in text if c.isdigit()]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


class Sanitizer:
    """One attempt's secret <-> placeholder map."""

    def __init__(self, patterns: tuple[str, ...] = ()) -> None:
        self._placeholder: dict[str, str] = {}
        self._secret: dict[str, str] = {}
        # Operator patterns go after the built-in ones and before the card
        # check, whose Luhn test must stay the last rule (`_card`).
        self._rules = [*_RULES[:-1], *((re.compile(p), 0) for p in patterns), _RULES[-1]]
        self._card = len(self._rules) - 1

    def _name(self, secret: str) -> str:
        found = self._placeholder.get(secret)
        if found is None:
            found = f"⟦SECRET_{len(self._placeholder) + 1}⟧"
            self._placeholder[secret] = found
            self._secret[found] = secret
        return found

    def hide(self, text: str) -> str:
        """`text` with every secret replaced by its placeholder."""
        for i, (pattern, group) in enumerate(self._rules):

            def swap(m: re.Match[str], group: int = group, card: bool = i == self._card) -> str:
                secret = m.group(group)
                if card and not _luhn(secret):
                    return m.group(0)
                start, end = m.start(group) - m.start(0), m.end(group) - m.start(0)
                whole = m.group(0)
                return whole[:start] + self._name(secret) + whole[end:]

            text = pattern.sub(swap, text)
        return text

    def hidden(self) -> bool:
        """Whether anything was hidden so far (placeholders only this map can put back)."""
        return bool(self._secret)

    def reveal(self, text: str) -> str:
        """`text` with this attempt's placeholders replaced by their secrets."""
        if not self._secret:
            return text
        return _PLACEHOLDER.sub(lambda m: self._secret.get(m.group(0), m.group(0)), text)

    def reveal_value(self, value: Any) -> Any:
        """A JSON value with placeholders in its strings (keys too) rehydrated."""
        if isinstance(value, str):
            return self.reveal(value)
        if isinstance(value, list):
            return [self.reveal_value(v) for v in value]
        if isinstance(value, dict):
            return {self.reveal(k): self.reveal_value(v) for k, v in value.items()}
        return value
