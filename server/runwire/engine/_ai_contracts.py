"""An AI answer against its contract (a JSON Schema): parsed, checked, and the contract's version."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import jsonschema
from google.protobuf import json_format

from runwire.engine._validate import canonical_json
from runwire.v1 import flow_pb2

__all__ = [
    "NOT_JSON",
    "classify_schema",
    "contract_version",
    "contract_violations",
    "judge",
    "parse_answer",
]

NOT_JSON: Any = object()
"""What the parsers return for an answer that is not JSON."""


def parse_answer(text: str) -> Any:
    """The answer as JSON (fences stripped), or None when it is prose."""
    value = _parse_strict(text)
    return None if value is NOT_JSON else value


def _parse_strict(text: str) -> Any:
    body = text.strip()
    if body.startswith("```"):
        # Models like to fence JSON: ```json ... ```
        body = body.split("\n", 1)[1] if "\n" in body else ""
        body = body.rsplit("```", 1)[0]
    try:
        return json.loads(body)
    except ValueError:
        return NOT_JSON


def judge(schema: dict[str, Any] | None, text: str) -> tuple[Any, list[str]]:
    """The parsed answer and its contract violations (as `path: message`)."""
    parsed = _parse_strict(text)
    if parsed is NOT_JSON:
        return NOT_JSON, ["(root): the answer is not JSON"]
    return parsed, contract_violations(schema, parsed)


def contract_violations(schema: dict[str, Any] | None, value: Any) -> list[str]:
    """Each way `value` breaks the JSON Schema (draft 2020-12), as `path: message`."""
    if schema is None:
        return []
    validator = jsonschema.Draft202012Validator(schema)
    found = sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"[:300] for e in found[:20]
    ]


def classify_schema(labels: list[str]) -> dict[str, Any]:
    """The contract of a CLASSIFY node: one of its labels and a confidence."""
    return {
        "type": "object",
        "required": ["label", "confidence"],
        "properties": {
            "label": {"enum": labels},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        },
    }


def contract_version(node: flow_pb2.Node) -> str:
    """The node's contract version: as written, or a digest of the canonical contract."""
    ai = node.ai
    if ai.contract_version:
        return ai.contract_version
    if ai.operation == flow_pb2.AI_OPERATION_CLASSIFY:
        text = canonical_json(classify_schema(list(ai.labels)))
    elif not ai.HasField("contract"):
        return ""
    else:
        text = canonical_json(json_format.MessageToDict(ai.contract))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]
