"""Render a run's event stream for people: a live node table, or one line per event."""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass, field

import grpc
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from runwire.v1 import events_pb2, run_service_pb2, run_service_pb2_grpc

__all__ = ["watch_and_render"]

_STYLE = {
    "running": "yellow",
    "succeeded": "green",
    "failed": "red",
    "skipped": "dim",
    "retrying": "magenta",
}
_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


@dataclass
class _Node:
    status: str = "running"
    attempt: int = 0
    detail: str = ""
    duration: str = ""
    lines: deque[str] = field(default_factory=lambda: deque(maxlen=3))


@dataclass
class _View:
    run_id: str
    flow: str = ""
    status: str = "PENDING"
    nodes: dict[str, _Node] = field(default_factory=dict)
    notes: deque[str] = field(default_factory=lambda: deque(maxlen=5))
    gates: dict[str, str] = field(default_factory=dict)
    last_seq: int = 0
    final: events_pb2.RunCompleted | None = None

    def apply(self, e: events_pb2.RunEvent) -> None:
        self.last_seq = e.seq
        case = e.WhichOneof("event")
        node = self.nodes.setdefault(e.node_id, _Node()) if e.node_id else None
        if case == "run_started":
            self.flow = e.run_started.flow_name
        elif case == "run_status_changed":
            self.status = events_pb2.RunStatus.Name(e.run_status_changed.new_status).removeprefix(
                "RUN_STATUS_"
            )
        elif case == "run_paused":
            self.notes.append(f"paused by {e.run_paused.principal} {e.run_paused.reason}")
        elif case == "run_resumed":
            self.notes.append(f"resumed by {e.run_resumed.principal}")
        elif case == "run_completed":
            self.final = e.run_completed
        elif node is not None:
            if case == "node_started":
                node.status, node.attempt, node.detail = (
                    "running",
                    e.attempt,
                    f"{e.node_started.adapter}.{e.node_started.action}",
                )
            elif case == "node_succeeded":
                node.status, node.duration = (
                    "succeeded",
                    f"{e.node_succeeded.duration.ToTimedelta().total_seconds():.2f}s",
                )
            elif case == "node_failed":
                node.status = "retrying" if e.node_failed.will_retry else "failed"
                node.duration = f"{e.node_failed.duration.ToTimedelta().total_seconds():.2f}s"
                node.lines.append(f"! {e.node_failed.error.message}")
            elif case == "node_skipped":
                node.status, node.detail = "skipped", e.node_skipped.reason
            elif case == "node_log":
                node.lines.append(e.node_log.line)
            elif case == "node_heartbeat":
                node.duration = f"{e.node_heartbeat.elapsed.ToTimedelta().total_seconds():.0f}s…"
            elif case == "sandbox_violation":
                node.lines.append(f"sandbox: {e.sandbox_violation.detail}")
            elif case == "awaiting_confirmation":
                self.gates[e.node_id] = (
                    f"⚠ {e.node_id} waits for confirmation: {e.awaiting_confirmation.action_summary}"
                    f" — runwire confirm|reject {self.run_id} {e.node_id}"
                )
                node.detail = "awaiting confirmation"
            elif case == "approval_requested":
                self.gates[e.node_id] = (
                    f"⚠ {e.node_id} waits for approval: {e.approval_requested.message}"
                    f" — runwire approve|reject {self.run_id} {e.node_id}"
                )
                node.detail = "awaiting approval"
            elif case in {"confirmation_resolved", "approval_resolved"}:
                self.gates.pop(e.node_id, None)
                payload = getattr(e, case)
                decision = (
                    events_pb2.GateDecision.Name(payload.decision)
                    .removeprefix("GATE_DECISION_")
                    .lower()
                )
                node.lines.append(f"{decision} by {payload.principal}")
            elif case == "iteration_capped":
                self.notes.append(
                    f"loop at {e.node_id} capped at {e.iteration_capped.max_visits} visits"
                )

    def render(self) -> Group:
        table = Table(title=f"{self.flow} · {self.run_id} · {self.status}", expand=True)
        table.add_column("node")
        table.add_column("status")
        table.add_column("time", justify="right")
        table.add_column("latest output", overflow="fold")
        for node_id, node in self.nodes.items():
            table.add_row(
                node_id,
                Text(
                    node.status + (f" #{node.attempt}" if node.attempt > 1 else ""),
                    style=_STYLE.get(node.status, ""),
                ),
                node.duration,
                "\n".join(node.lines) or node.detail,
            )
        return Group(
            table,
            *(Text(g, style="bold black on yellow") for g in self.gates.values()),
            *(Text(n, style="bold yellow") for n in self.notes),
        )


def _line(e: events_pb2.RunEvent) -> str:
    case = e.WhichOneof("event") or "unknown"
    payload = getattr(e, case) if case != "unknown" else None
    text = str(payload).replace("\n", " ").strip() if payload is not None else ""
    where = f" {e.node_id}#{e.attempt}" if e.node_id else ""
    return f"{e.seq:>6} {case}{where} {text}"


def watch_and_render(
    addr: str,
    run_id: str,
    after_seq: int,
    metadata: list[tuple[str, str]],
    *,
    plain: bool = False,
    credentials: grpc.ChannelCredentials | None = None,
) -> int:
    """Watch until RunCompleted, reconnecting with after_seq; 0 when the run succeeded."""
    view = _View(run_id, last_seq=after_seq)
    console = Console()
    live = (
        None
        if plain or not console.is_terminal
        else Live(view.render(), console=console, refresh_per_second=8)
    )
    backoff = 0.2
    if live:
        live.start()
    try:
        while view.final is None:
            channel = (
                grpc.secure_channel(addr, credentials)
                if credentials is not None
                else grpc.insecure_channel(addr)
            )
            stub = run_service_pb2_grpc.RunServiceStub(channel)
            try:
                for response in stub.WatchRun(
                    run_service_pb2.WatchRunRequest(run_id=run_id, after_seq=view.last_seq),
                    metadata=metadata,
                ):
                    backoff = 0.2
                    for event in response.events:
                        if event.seq <= view.last_seq:
                            continue
                        view.apply(event)
                        if live is None:
                            print(_line(event), flush=True)
                            if event.node_id in view.gates and event.WhichOneof("event") in (
                                "awaiting_confirmation",
                                "approval_requested",
                            ):
                                print(view.gates[event.node_id], flush=True)
                    if live:
                        live.update(view.render())
            except grpc.RpcError as exc:
                if exc.code() not in _RETRYABLE:
                    print(f"runwire: {exc.code().name}: {exc.details()}", file=sys.stderr)
                    return 1
                time.sleep(backoff)  # reconnect pacing, not synchronisation
                backoff = min(backoff * 2, 5.0)
            finally:
                channel.close()
    finally:
        if live:
            live.stop()
    final = view.final
    status = events_pb2.RunStatus.Name(final.status).removeprefix("RUN_STATUS_")
    summary = (
        f"run {run_id} {status}: {final.succeeded_node_count} succeeded, {final.failed_node_count} failed, "
        f"{final.skipped_node_count} skipped in {final.duration.ToTimedelta().total_seconds():.2f}s"
    )
    if final.HasField("error"):
        summary += f" ({final.error.message})"
    print(summary)
    return 0 if final.status == events_pb2.RUN_STATUS_SUCCEEDED else 1
