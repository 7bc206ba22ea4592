"""Watch a run for people: reconnect with after_seq until RunCompleted, and show it (`_view.py`)."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

import grpc
from rich.console import Console
from rich.live import Live

from runwire._view import RunView as _View
from runwire._view import event_line as _line
from runwire.v1 import events_pb2, run_service_pb2, run_service_pb2_grpc

__all__ = ["watch_and_render"]

_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


def watch_and_render(
    addr: str,
    run_id: str,
    after_seq: int,
    metadata: list[tuple[str, str]],
    *,
    plain: bool = False,
    credentials: grpc.ChannelCredentials | None = None,
    node_ids: Sequence[str] = (),
) -> int:
    """Watch until RunCompleted, reconnecting with after_seq; 0 when the run succeeded.

    `node_ids`, when the flow is known, lists its nodes so the live view shows
    them all from the start.
    """
    view = _View(run_id, node_ids, last_seq=after_seq)
    console = Console()
    # The display re-renders the view on each refresh (8 a second), so running
    # times tick between events; the `live.update` calls below are redundant.
    live = (
        None
        if plain or not console.is_terminal
        else Live(console=console, refresh_per_second=8, get_renderable=view.render)
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
