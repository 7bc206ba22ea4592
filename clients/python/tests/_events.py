"""Builders of small RunEvent streams for the client tests."""

from __future__ import annotations

from runwire_client import RunEvent, v1

RUN_ID = "run_test"

# A stream item: "run_started" for a run-level event, ("node_log", "a") for a
# node event of iteration 1 attempt 1, ("node_log", "a", 2, 1), or with the
# item of a fan-out node last: ("node_log", "a", 1, 1, 0).
Item = str | tuple[str, str] | tuple[str, str, int, int] | tuple[str, str, int, int, int]


def event(
    seq: int,
    case: str,
    node: str = "",
    iteration: int = 0,
    attempt: int = 0,
    item_index: int | None = None,
    *,
    run_id: str = RUN_ID,
) -> RunEvent:
    """A RunEvent of variant `case` (its oneof field name) with an empty payload."""
    payload_class = getattr(v1, "".join(part.title() for part in case.split("_")))
    return RunEvent(
        run_id=run_id,
        seq=seq,
        node_id=node,
        iteration=iteration,
        attempt=attempt,
        item_index=item_index,
        **{case: payload_class()},
    )


def stream(*items: Item, after_seq: int = 0) -> list[RunEvent]:
    """Events numbered from `after_seq + 1`, one per item."""
    events = []
    for seq, item in enumerate(items, start=after_seq + 1):
        if isinstance(item, str):
            events.append(event(seq, item))
        elif len(item) == 2:
            events.append(event(seq, item[0], item[1], 1, 1))
        else:
            events.append(event(seq, *item))
    return events
