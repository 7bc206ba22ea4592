"""canonical_json's fast path writes exactly what RFC 8785 (the rfc8785 library) writes."""

from __future__ import annotations

from typing import Any

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from runwire.engine import canonical_json

_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=12)
_numbers = st.one_of(
    st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 3.0, 2.0**53, 1e21, 1e-7, 123456789.0]),
)
_json: Any = st.recursive(
    st.one_of(st.none(), st.booleans(), _numbers, _text),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_text, inner, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(_json)
def test_canonical_json_equals_rfc8785(value: Any) -> None:
    assert canonical_json(value) == rfc8785.dumps(value).decode("utf-8")


def test_canonical_json_sorts_keys_by_utf16_code_units() -> None:
    """U+E000 sorts after U+1F600 in UTF-16 (a surrogate pair starts with 0xD83D) but
    before it by code point: such keys must not take the stdlib's path."""
    value = {"\ue000": 1, "\U0001f600": 2}
    assert canonical_json(value) == rfc8785.dumps(value).decode("utf-8")
    assert canonical_json(value).index("\U0001f600") < canonical_json(value).index("\ue000")
