"""Render a run's event stream for people: a live node table, or one line per event."""

from __future__ import annotations

import random
import sys
import time
from collections import deque
from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
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
# The watch retry rule of every runwire client (clients/GRAMMAR.md,
# "Watching"): UNAVAILABLE always; these only without a runwire ErrorInfo
# (then a dying connection or a proxy said it, not the server); 100 ms
# doubling to 2 s, each wait drawn from [wait/2, wait]; give up after 120 s
# without a response.
_TRANSPORT = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
_FIRST_BACKOFF, _MAX_BACKOFF, _GIVE_UP_AFTER = 0.1, 2.0, 120.0


def _runwire_info(exc: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    status = rpc_status.from_call(exc)  # a streaming call's error is the call
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info) and info.domain == "runwire.v1":
            return info
    return None


def _retryable(exc: grpc.RpcError) -> bool:
    code = exc.code()
    return code is grpc.StatusCode.UNAVAILABLE or (
        code in _TRANSPORT and _runwire_info(exc) is None
    )


def _beyond_end(exc: grpc.RpcError) -> tuple[int, int] | None:
    """(last_seq, status) when WatchRun said after_seq is past the finished run's end."""
    info = _runwire_info(exc)
    if exc.code() is not grpc.StatusCode.OUT_OF_RANGE or info is None:
        return None
    if info.reason != "AFTER_SEQ_BEYOND_END":
        return None
    name = info.metadata.get("status", "")
    status = events_pb2.RunStatus.Value(name) if name in events_pb2.RunStatus.keys() else 0  # noqa: SIM118 (an EnumTypeWrapper has no __contains__)
    return int(info.metadata.get("last_seq", "0") or 0), status


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


class _CutStream(Exception):
    """WatchRun ended OK before the run's end."""


def watch_and_render(
    addr: str, run_id: str, after_seq: int, metadata: list[tuple[str, str]], *, plain: bool = False
) -> int:
    """Watch to the run's end, reconnecting with after_seq; 0 when the run succeeded.

    The end is RunCompleted, the server's stream_end (after_seq was the last
    seq), or OUT_OF_RANGE AFTER_SEQ_BEYOND_END (after_seq was past it): in
    each case the exit status follows the final status, so
    `runwire watch RUN --after-seq LAST` exits as `runwire watch RUN` does.
    """
    view = _View(run_id, last_seq=after_seq)
    console = Console()
    live = (
        None
        if plain or not console.is_terminal
        else Live(view.render(), console=console, refresh_per_second=8)
    )
    backoff = _FIRST_BACKOFF
    failing_since: float | None = None
    end: tuple[int, int] | None = None  # (last_seq, status) once the run's end is known
    if live:
        live.start()
    try:
        while end is None:
            channel = grpc.insecure_channel(addr)
            stub = run_service_pb2_grpc.RunServiceStub(channel)
            try:
                for response in stub.WatchRun(
                    run_service_pb2.WatchRunRequest(run_id=run_id, after_seq=view.last_seq),
                    metadata=metadata,
                ):
                    backoff, failing_since = _FIRST_BACKOFF, None
                    for event in response.events:
                        if event.seq <= view.last_seq:
                            continue
                        if event.seq != view.last_seq + 1:
                            print(
                                f"runwire: run {run_id}: expected seq {view.last_seq + 1}, "
                                f"received seq {event.seq}",
                                file=sys.stderr,
                            )
                            return 1
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
                    if view.final is not None:
                        end = view.last_seq, view.final.status
                    elif response.HasField("stream_end"):
                        end = response.stream_end.last_seq, response.stream_end.status
                    if end is not None:
                        break
                else:
                    # An OK end without the run's end is a cut stream: resume.
                    raise _CutStream
            except (grpc.RpcError, _CutStream) as exc:
                if isinstance(exc, grpc.RpcError):
                    end = _beyond_end(exc)
                    if end is not None:
                        break
                    if not _retryable(exc):
                        print(f"runwire: {exc.code().name}: {exc.details()}", file=sys.stderr)
                        return 1
                now = time.monotonic()
                failing_since = now if failing_since is None else failing_since
                if now - failing_since >= _GIVE_UP_AFTER:
                    print(
                        f"runwire: gave up watching run {run_id} after {now - failing_since:.0f}s "
                        f"of failures (last seq {view.last_seq})",
                        file=sys.stderr,
                    )
                    return 1
                time.sleep(
                    backoff * (0.5 + random.random() / 2)
                )  # reconnect pacing, not synchronisation
                backoff = min(backoff * 2, _MAX_BACKOFF)
            finally:
                channel.close()
    finally:
        if live:
            live.stop()
    if view.final is None:
        # The run ended at or before after_seq: no RunCompleted came to summarize.
        last_seq, status_value = end
        name = (
            events_pb2.RunStatus.Name(status_value)
            if status_value in events_pb2.RunStatus.values()
            else str(status_value)
        )
        print(f"run {run_id} {name.removeprefix('RUN_STATUS_')}: finished at seq {last_seq}")
        return 0 if status_value == events_pb2.RUN_STATUS_SUCCEEDED else 1
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
