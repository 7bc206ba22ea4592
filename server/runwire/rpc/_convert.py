"""Translate between stored rows and API messages; page tokens and filters."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Sequence
from datetime import datetime

from google.protobuf import json_format

from runwire.errors import FieldViolation, FilterInvalid, PageTokenInvalid
from runwire.store import GateRow, RunRow
from runwire.v1 import events_pb2, run_service_pb2

__all__ = ["decode_page_token", "encode_page_token", "parse_filter", "run_to_proto"]


def run_to_proto(row: RunRow, pending: Sequence[GateRow] = ()) -> run_service_pb2.Run:
    """The API view of a stored run, with its pending gates when given."""
    run = run_service_pb2.Run(
        run_id=row.run_id,
        flow_name=row.flow_name,
        flow_digest=row.flow_digest,
        status=row.status,  # type: ignore[arg-type]  # stored as the RunStatus number
        node_count=row.node_count,
        succeeded_node_count=row.succeeded_node_count,
        failed_node_count=row.failed_node_count,
        skipped_node_count=row.skipped_node_count,
        last_seq=row.last_seq,
        labels=row.labels,
        request_id=row.request_id or "",
    )
    run.create_time.FromDatetime(row.create_time)
    run.update_time.FromDatetime(row.update_time)
    if row.end_time is not None:
        run.end_time.FromDatetime(row.end_time)
    json_format.ParseDict(row.inputs, run.inputs)
    for gate in pending:
        pg = run.pending_gates.add(node_id=gate.node_id, kind=gate.kind, message=gate.message)
        pg.create_time.FromDatetime(gate.create_time)
        if gate.item_index is not None:
            pg.item_index = gate.item_index
        pg.tool_call_id = gate.tool_call_id
        if gate.expire_time is not None:
            pg.expire_time.FromDatetime(gate.expire_time)
    if row.error:
        run.error.CopyFrom(
            events_pb2.ErrorSummary(
                reason=row.error.get("reason", ""),
                message=row.error.get("message", ""),
                exit_code=row.error.get("exit_code", 0),
            )
        )
    return run


_TERM = re.compile(
    r"""^\s*(?:(?P<status>status)|labels\.(?P<label>[a-z][a-z0-9_-]{0,62}))\s*=\s*
        (?:"(?P<quoted>[^"]*)"|(?P<bare>[^\s"]+))\s*$""",
    re.VERBOSE,
)


_STATUS_NAMES = frozenset(events_pb2.RunStatus.keys()) - {"RUN_STATUS_UNSPECIFIED"}


def parse_filter(text: str) -> tuple[int | None, dict[str, str]]:
    """Parse the AIP-160 subset ListRuns accepts into (status, labels)."""
    status: int | None = None
    labels: dict[str, str] = {}
    if not text.strip():
        return status, labels
    for term in re.split(r"\s+AND\s+", text.strip()):
        m = _TERM.match(term)
        if m is None:
            raise FilterInvalid(
                [
                    FieldViolation(
                        "filter",
                        f'cannot parse {term!r}; expected status = RUN_STATUS_... or labels.<key> = "value"',
                    )
                ]
            )
        value = m["quoted"] if m["quoted"] is not None else m["bare"]
        if m["status"]:
            name = value if value.startswith("RUN_STATUS_") else f"RUN_STATUS_{value}"
            if name not in _STATUS_NAMES:
                raise FilterInvalid([FieldViolation("filter", f"unknown run status {value!r}")])
            status = events_pb2.RunStatus.Value(name)
        else:
            labels[m["label"]] = value
    return status, labels


def _filter_key(text: str) -> str:
    return hashlib.sha256(text.strip().encode()).hexdigest()[:16]


def encode_page_token(row: RunRow, filter_text: str) -> str:
    """An opaque token resuming after `row` for the same filter."""
    raw = json.dumps(
        {"t": row.create_time.isoformat(), "r": row.run_id, "f": _filter_key(filter_text)}
    )
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_page_token(token: str, filter_text: str) -> tuple[datetime, str]:
    """The (create_time, run_id) cursor in `token`; PageTokenInvalid when it is not ours."""
    try:
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        cursor = (datetime.fromisoformat(raw["t"]), str(raw["r"]))
        key = raw["f"]
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise PageTokenInvalid([FieldViolation("page_token", "malformed page token")]) from exc
    if key != _filter_key(filter_text):
        raise PageTokenInvalid(
            [FieldViolation("page_token", "page token was issued for a different filter")]
        )
    return cursor
