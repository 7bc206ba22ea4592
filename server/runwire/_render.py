"""Watch a run for people: reconnect with after_seq until RunCompleted, and show it (`_view.py`)."""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Sequence

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from rich.console import Console
from rich.live import Live

from runwire._view import RunView as _View
from runwire._view import event_line as _line
from runwire.v1 import events_pb2, run_service_pb2, run_service_pb2_grpc

__all__ = ["watch_and_render"]

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
# The most of a server's RetryInfo delay the CLI waits (as the clients do).
_MAX_SERVER_DELAY = 30.0


def _runwire_info(exc: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    status = rpc_status.from_call(exc)  # a streaming call's error is the call
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info) and info.domain == "runwire.v1":
            return info
    return None


def _server_delay(exc: grpc.RpcError) -> float:
    """The longest `google.rpc.RetryInfo` delay the failed status asks for, capped; else 0."""
    status = rpc_status.from_call(exc)
    delay = 0.0
    for detail in status.details if status is not None else ():
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            delay = max(delay, info.retry_delay.ToTimedelta().total_seconds())
    return min(delay, _MAX_SERVER_DELAY)


def _retryable(exc: grpc.RpcError) -> bool:
    code = exc.code()
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        # The server turned the call away at its admission bound: retry.
        info = _runwire_info(exc)
        return info is not None and info.reason == "OVERLOADED"
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


class _CutStream(Exception):
    """WatchRun ended OK before the run's end."""


def watch_and_render(
    addr: str,
    run_id: str,
    after_seq: int,
    metadata: list[tuple[str, str]],
    *,
    plain: bool = False,
    credentials: grpc.ChannelCredentials | None = None,
    node_ids: Sequence[str] = (),
    give_up_after: float = _GIVE_UP_AFTER,
    event_filter: run_service_pb2.EventFilter | None = None,
) -> int:
    """Watch to the run's end, reconnecting with after_seq; 0 when the run succeeded.

    While the server cannot be reached it says on stderr that it is retrying,
    backs off, and gives up after `give_up_after` seconds of failures with no
    response (0: never) with exit status 3, the CLI's "server unreachable".

    The end is RunCompleted, the server's stream_end (after_seq was the last
    seq), or OUT_OF_RANGE AFTER_SEQ_BEYOND_END (after_seq was past it): in
    each case the exit status follows the final status, so
    `runwire watch RUN --after-seq LAST` exits as `runwire watch RUN` does.
    `node_ids`, when the flow is known, lists its nodes so the live view shows
    them all from the start.

    With an `event_filter` naming kinds or node ids, only the events it
    selects are shown (RunCompleted always is), seqs may skip, and a
    reconnect resumes after the server's last `resume_after_seq`, past the
    events the filter skipped (as the Python client's `watch` does). A
    status the server answers that is not retried (a bad filter's
    INVALID_ARGUMENT) is raised for the CLI to print.
    """
    filtered = event_filter is not None and bool(event_filter.kinds or event_filter.node_ids)
    # view.last_seq: the seq last shown. resume: where the next call starts,
    # the same unless a filter skipped events past it (resume_after_seq).
    resume = after_seq
    view = _View(run_id, node_ids, last_seq=after_seq)
    console = Console()
    # The display re-renders the view on each refresh (8 a second), so running
    # times tick between events; the `live.update` calls below are redundant.
    live = (
        None
        if plain or not console.is_terminal
        else Live(console=console, refresh_per_second=8, get_renderable=view.render)
    )
    backoff = _FIRST_BACKOFF
    failing_since: float | None = None
    end: tuple[int, int] | None = None  # (last_seq, status) once the run's end is known
    if live:
        live.start()
    try:
        while end is None:
            channel = (
                grpc.secure_channel(addr, credentials)
                if credentials is not None
                else grpc.insecure_channel(addr)
            )
            stub = run_service_pb2_grpc.RunServiceStub(channel)
            try:
                request = run_service_pb2.WatchRunRequest(
                    run_id=run_id,
                    after_seq=resume,
                    filter=event_filter if filtered else None,
                )
                for response in stub.WatchRun(request, metadata=metadata):
                    backoff, failing_since = _FIRST_BACKOFF, None
                    for event in response.events:
                        if event.seq <= resume:
                            continue  # already shown: resent after a resume
                        if not filtered and event.seq != view.last_seq + 1:
                            print(
                                f"runwire: run {run_id}: expected seq {view.last_seq + 1}, "
                                f"received seq {event.seq}",
                                file=sys.stderr,
                            )
                            return 1
                        view.apply(event)
                        resume = event.seq
                        if live is None:
                            print(_line(event), flush=True)
                            if event.node_id in view.gates and event.WhichOneof("event") in (
                                "awaiting_confirmation",
                                "approval_requested",
                                "ai_review_required",
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
                    if filtered:
                        # The server looked this far; what it skipped is filtered out.
                        resume = max(resume, response.resume_after_seq)
                else:
                    # An OK end without the run's end is a cut stream: resume.
                    raise _CutStream
            except (grpc.RpcError, _CutStream) as exc:
                if isinstance(exc, grpc.RpcError):
                    end = _beyond_end(exc)
                    if end is not None:
                        break
                    if not _retryable(exc):
                        raise  # the CLI prints it with its field violations

                now = time.monotonic()
                failing_since = now if failing_since is None else failing_since
                if give_up_after and now - failing_since >= give_up_after:
                    print(
                        f"runwire: gave up watching run {run_id} after {now - failing_since:.0f}s "
                        f"of failures (last seq {resume})",
                        file=sys.stderr,
                    )
                    return 3
                wait = backoff * (0.5 + random.random() / 2)
                asked = _server_delay(exc) if isinstance(exc, grpc.RpcError) else 0.0
                if asked > wait:
                    # Never sooner than the server asked (an overloaded server
                    # says how long in RetryInfo), nor past the give-up time.
                    wait = asked
                    if give_up_after and now + wait - failing_since > give_up_after:
                        print(
                            f"runwire: gave up watching run {run_id}: the server asked to "
                            f"wait {wait:.1f}s, past {give_up_after:.0f}s of failures "
                            f"(last seq {resume})",
                            file=sys.stderr,
                        )
                        return 3
                if give_up_after:
                    # The last try lands on the give-up time, not a whole backoff past it.
                    wait = min(wait, give_up_after - (now - failing_since))
                cause = exc.code().name if isinstance(exc, grpc.RpcError) else "stream cut"
                print(
                    f"runwire: watch of {run_id} interrupted ({cause}); retrying after seq "
                    f"{resume} in {wait:.1f}s",
                    file=sys.stderr,
                    flush=True,
                )
                time.sleep(wait)  # reconnect pacing, not synchronisation
                backoff = min(backoff * 2, _MAX_BACKOFF)
            finally:
                channel.close()
    finally:
        if live:
            live.stop()
    final = view.final
    if final is None:
        # The run ended at or before after_seq: no RunCompleted came to summarize.
        assert end is not None
        last_seq, status_value = end
        name = (
            events_pb2.RunStatus.Name(status_value)
            if status_value in events_pb2.RunStatus.values()
            else str(status_value)
        )
        print(f"run {run_id} {name.removeprefix('RUN_STATUS_')}: finished at seq {last_seq}")
        return 0 if status_value == events_pb2.RUN_STATUS_SUCCEEDED else 1
    status = events_pb2.RunStatus.Name(final.status).removeprefix("RUN_STATUS_")
    summary = (
        f"run {run_id} {status}: {final.succeeded_node_count} succeeded, {final.failed_node_count} failed, "
        f"{final.skipped_node_count} skipped in {final.duration.ToTimedelta().total_seconds():.2f}s"
    )
    if final.input_token_count or final.output_token_count:
        summary += (
            f"; model tokens {final.input_token_count} in / {final.output_token_count} out"
            f", ${final.cost_micros / 1e6:.4f}"
        )
    if final.HasField("error"):
        summary += f" ({final.error.message})"
    print(summary)
    return 0 if final.status == events_pb2.RUN_STATUS_SUCCEEDED else 1
