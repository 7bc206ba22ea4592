"""What read commands print: a table for people, `wide` for more columns, JSON or YAML for scripts.

JSON and YAML are the proto3 JSON mapping of the response message, the same
shape every client language decodes, so scripts never parse tables.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import yaml
from google.protobuf import json_format
from google.protobuf.message import Message

from runwire.v1 import events_pb2, run_service_pb2

__all__ = ["FORMATS", "dump", "run_lines", "runs_table", "status_name"]

FORMATS = ("table", "wide", "json", "yaml")


def status_name(status: int) -> str:
    """`RUNNING` for RUN_STATUS_RUNNING."""
    return events_pb2.RunStatus.Name(status).removeprefix("RUN_STATUS_")


def dump(message: Message, fmt: str) -> str:
    """`message` as JSON or YAML in the proto3 JSON mapping."""
    data = json_format.MessageToDict(message)
    if fmt == "yaml":
        text: str = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        return text.rstrip("\n")
    return json.dumps(data, indent=2, ensure_ascii=False)


def _time(ts: Any, present: bool = True) -> str:
    if not present:
        return "-"
    moment: datetime = ts.ToDatetime(tzinfo=UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _duration(run: run_service_pb2.Run) -> str:
    if not run.HasField("end_time"):
        return "-"
    seconds = (run.end_time.ToDatetime() - run.create_time.ToDatetime()).total_seconds()
    return f"{seconds:.1f}s"


def _nodes(run: run_service_pb2.Run) -> str:
    return (
        f"{run.succeeded_node_count}/{run.node_count} ok"
        + (f", {run.failed_node_count} failed" if run.failed_node_count else "")
        + (f", {run.skipped_node_count} skipped" if run.skipped_node_count else "")
    )


def runs_table(runs: Sequence[run_service_pb2.Run], *, wide: bool) -> str:
    """Aligned columns with a header; `wide` adds nodes, duration and labels."""
    header = ["RUN", "STATUS", "CREATED", "FLOW"] + (
        ["NODES", "DURATION", "LABELS"] if wide else []
    )
    rows = [header]
    for run in runs:
        row = [run.run_id, status_name(run.status), _time(run.create_time), run.flow_name]
        if wide:
            labels = ",".join(f"{k}={v}" for k, v in sorted(run.labels.items()))
            row += [_nodes(run), _duration(run), labels or "-"]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def run_lines(run: run_service_pb2.Run, *, wide: bool) -> str:
    """One run as `field: value` lines."""
    lines = [
        f"run:      {run.run_id}",
        f"flow:     {run.flow_name}",
        f"status:   {status_name(run.status)}",
        f"nodes:    {_nodes(run)}",
        f"created:  {_time(run.create_time)}",
        f"ended:    {_time(run.end_time, run.HasField('end_time'))}",
    ]
    if run.labels:
        lines.append("labels:   " + ", ".join(f"{k}={v}" for k, v in sorted(run.labels.items())))
    inputs = json_format.MessageToDict(run.inputs)
    if inputs:
        lines.append(f"inputs:   {json.dumps(inputs, ensure_ascii=False, sort_keys=True)}")
    for gate in run.pending_gates:
        kind = run_service_pb2.GateKind.Name(gate.kind).removeprefix("GATE_KIND_").lower()
        which = gate.node_id
        if gate.HasField("item_index"):
            which += f" --item {gate.item_index}"
        if gate.tool_call_id:
            which += f" --tool-call {gate.tool_call_id}"
        lines.append(f"waiting:  {which} ({kind}) {gate.message}")
    if run.HasField("error"):
        lines.append(f"error:    {run.error.reason}: {run.error.message}")
    if wide:
        lines += [
            f"digest:   {run.flow_digest}",
            f"request:  {run.request_id or '-'}",
            f"last seq: {run.last_seq}",
            f"updated:  {_time(run.update_time)}",
        ]
    return "\n".join(lines)
