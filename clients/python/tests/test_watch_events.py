"""watch_events() against a real grpc.aio server: resume from the last cursor, dedup, typed errors."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import pytest
from grpclib.client import Channel
from grpclib.const import Status

from runwire_client import (
    Backoff,
    EventsWatch,
    RunwireError,
    UnknownEventError,
    WatchedEvent,
    encode_event,
    v1,
    watch_events,
)

from ._events import event
from .conftest import Abort, Hold, ScriptedRunService, Send, StartServer

FAST = Backoff(initial=0.001, maximum=0.01, give_up_after=30.0)

# Two runs interleaved in commit order.
A1, B1, A2, B2, A3 = (
    event(1, "run_started", run_id="run_a"),
    event(1, "run_started", run_id="run_b"),
    event(2, "run_status_changed", run_id="run_a"),
    event(2, "run_status_changed", run_id="run_b"),
    event(3, "run_completed", run_id="run_a"),
)
FILTER = v1.RunEventsFilter(flow_name="deploy", labels={"team": "infra"})


def keys(items: list[WatchedEvent]) -> list[tuple[str, int]]:
    return [(item.event.run_id, item.event.seq) for item in items]


async def take(events: EventsWatch, count: int) -> list[WatchedEvent]:
    """The first `count` items; then leaves the stream, which never ends by itself."""
    items: list[WatchedEvent] = []
    async with asyncio.timeout(10):
        async for item in events:
            items.append(item)
            if len(items) == count:
                break
    await events.aclose()
    return items


async def test_watch_events_yields_events_with_the_cursor_to_resume_after_each(
    start_server: StartServer, channel_to: Callable[[int], Channel]
) -> None:
    service = ScriptedRunService([Send([A1, B1], cursor="c2"), Send([A2], cursor="c3"), Hold()])
    port, _ = await start_server(service)

    events = watch_events(channel_to(port), FILTER, start=v1.StreamStart.EARLIEST, backoff=FAST)
    items = await take(events, 3)

    assert keys(items) == [("run_a", 1), ("run_b", 1), ("run_a", 2)]
    # Within a response only its last event carries the response's cursor;
    # the first stream had none before it.
    assert [item.cursor for item in items] == ["", "c2", "c3"]
    assert events.cursor == "c3"
    [request] = service.events_requests
    assert (request.cursor, request.start, request.filter.flow_name) == (
        "",
        v1.StreamStart.EARLIEST,
        "deploy",
    )


@pytest.mark.parametrize(
    "failure",
    [
        Abort(grpc.StatusCode.UNAVAILABLE, "draining", reason="SERVER_DRAINING"),
        Abort(grpc.StatusCode.INTERNAL, "stream reset"),
        Abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy", reason="OVERLOADED"),
        None,  # an OK end: the stream never ends by itself, so it was cut
    ],
    ids=["unavailable", "internal without info", "overloaded", "ok end"],
)
async def test_watch_events_resumes_from_the_last_cursor_and_drops_resent_events(
    failure: Abort | None, start_server: StartServer, channel_to: Callable[[int], Channel]
) -> None:
    first = [Send([A1, B1], cursor="c2"), Send([], cursor="c5")]
    service = ScriptedRunService(
        first + ([failure] if failure else []),
        # The server resends what the client has: dropped by (run_id, seq).
        [Send([A1, B1, A2], cursor="c6"), Send([B2, A3], cursor="c8"), Hold()],
    )
    port, _ = await start_server(service)

    events = watch_events(channel_to(port), FILTER, backoff=FAST)
    items = await take(events, 5)

    assert keys(items) == [("run_a", 1), ("run_b", 1), ("run_a", 2), ("run_b", 2), ("run_a", 3)]
    assert [r.cursor for r in service.events_requests] == ["", "c5"]
    assert all(r.filter.flow_name == "deploy" for r in service.events_requests)
    assert items[2].cursor == "c6"


async def test_watch_events_waits_at_least_the_retry_info_delay(
    start_server: StartServer, channel_to: Callable[[int], Channel]
) -> None:
    """The same Retrier as watch: an OVERLOADED RetryInfo delay is waited out in full."""
    asked = 0.3  # far above FAST's waits
    service = ScriptedRunService(
        [
            Send([A1], cursor="c1"),
            Abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, "busy", reason="OVERLOADED", retry_delay=asked
            ),
        ],
        [Send([B1], cursor="c2"), Hold()],
    )
    port, _ = await start_server(service)

    items = await take(watch_events(channel_to(port), FILTER, backoff=FAST), 2)

    assert keys(items) == [("run_a", 1), ("run_b", 1)]
    assert [r.cursor for r in service.events_requests] == ["", "c1"]
    assert service.call_times[1] - service.abort_times[0] >= asked


async def test_watch_events_restarts_at_start_when_no_response_came(
    start_server: StartServer, channel_to: Callable[[int], Channel]
) -> None:
    service = ScriptedRunService(
        [Abort(grpc.StatusCode.UNAVAILABLE, "draining")], [Send([A1], cursor="c1"), Hold()]
    )
    port, _ = await start_server(service)

    events = watch_events(channel_to(port), cursor="", start=v1.StreamStart.EARLIEST, backoff=FAST)
    assert keys(await take(events, 1)) == [("run_a", 1)]
    assert [(r.cursor, r.start) for r in service.events_requests] == [
        ("", v1.StreamStart.EARLIEST)
    ] * 2


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, "CURSOR_INVALID"),
        (grpc.StatusCode.OUT_OF_RANGE, "CURSOR_EXPIRED"),
        (grpc.StatusCode.INTERNAL, "INTERNAL"),
    ],
)
async def test_watch_events_raises_cursor_errors_without_retrying(
    code: grpc.StatusCode,
    reason: str,
    start_server: StartServer,
    channel_to: Callable[[int], Channel],
) -> None:
    service = ScriptedRunService([Abort(code, "no", reason=reason)], [Hold()])
    port, _ = await start_server(service)

    with pytest.raises(RunwireError) as caught:
        await take(watch_events(channel_to(port), cursor="c9", backoff=FAST), 1)
    assert (caught.value.code, caught.value.reason) == (Status(code.value[0]), reason)
    assert [r.cursor for r in service.events_requests] == ["c9"]


async def test_watch_events_raises_unknown_event(
    start_server: StartServer, channel_to: Callable[[int], Channel]
) -> None:
    # Field 127, length-delimited: a variant from a newer contract.
    newer = encode_event(v1.RunEvent(run_id="run_a", seq=2)) + b"\xfa\x07\x00"
    service = ScriptedRunService([Send([A1, newer], cursor="c2"), Hold()])
    port, _ = await start_server(service)

    with pytest.raises(UnknownEventError, match="upgrade the client"):
        await take(watch_events(channel_to(port), backoff=FAST), 2)


async def test_watch_events_gives_up_after_its_budget(
    start_server: StartServer, channel_to: Callable[[int], Channel]
) -> None:
    port, server = await start_server(ScriptedRunService())
    await server.stop(None)
    budget = Backoff(initial=0.001, maximum=0.01, give_up_after=0.05)

    with pytest.raises(RunwireError, match="gave up watching events") as caught:
        await take(watch_events(channel_to(port), backoff=budget), 1)
    assert caught.value.code == Status.UNAVAILABLE
