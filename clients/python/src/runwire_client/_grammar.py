"""The stream grammar checker: the rules of clients/GRAMMAR.md, by name."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from ._errors import GrammarViolation
from ._events import event_case
from ._gen.runwire.v1 import EventFilter, RunEvent

__all__ = ["GrammarChecker", "check_stream"]

# The rule names, identical in the Go, Rust and TypeScript checkers.
SEQ_START: Final = "seq-start"
SEQ_GAPLESS: Final = "seq-gapless"
RUN_ID_STABLE: Final = "run-id-stable"
RUN_STARTED_FIRST: Final = "run-started-first"
RUN_COMPLETED_LAST: Final = "run-completed-last"
ATTEMPT_OPEN: Final = "attempt-open"
OUTPUT_OUTSIDE_ATTEMPT: Final = "output-outside-attempt"
TERMINAL_OUTSIDE_ATTEMPT: Final = "terminal-outside-attempt"
SKIP_INSIDE_ATTEMPT: Final = "skip-inside-attempt"
ATTEMPT_UNCLOSED: Final = "attempt-unclosed"
ITEM_OUTSIDE_FRAME: Final = "item-outside-frame"
ITEM_UNCLOSED: Final = "item-unclosed"

RULES: Final = (
    SEQ_START,
    SEQ_GAPLESS,
    RUN_ID_STABLE,
    RUN_STARTED_FIRST,
    RUN_COMPLETED_LAST,
    ATTEMPT_OPEN,
    OUTPUT_OUTSIDE_ATTEMPT,
    TERMINAL_OUTSIDE_ATTEMPT,
    SKIP_INSIDE_ATTEMPT,
    ATTEMPT_UNCLOSED,
    ITEM_OUTSIDE_FRAME,
    ITEM_UNCLOSED,
)

# The hand-written classification of variants; every other known variant may
# appear anywhere between RunStarted and RunCompleted. A variant added to the
# catalog belongs here only if the grammar gives it a place in an attempt.
NODE_OUTPUT: Final = frozenset({"node_log", "node_token", "tool_call", "node_heartbeat"})
NODE_TERMINAL: Final = frozenset({"node_succeeded", "node_failed"})
CLASSIFIED: Final = (
    NODE_OUTPUT
    | NODE_TERMINAL
    | {
        "run_started",
        "run_completed",
        "node_started",
        "node_skipped",
    }
)

# A filtered stream keeps the attempt rules only when its kinds select all of
# these (clients/GRAMMAR.md, "Filtered streams").
ATTEMPT_FRAMING: Final = frozenset({"node_started", "node_succeeded", "node_failed"})


def is_filtered(event_filter: EventFilter | None) -> bool:
    """Whether a WatchRun with this filter may skip events: it names kinds or node ids."""
    return event_filter is not None and bool(event_filter.kinds or event_filter.node_ids)


_Attempt = tuple[int, int]  # (iteration, attempt) of the envelope


class GrammarChecker:
    """Checks one run's event stream against the stream grammar.

    Create one per watch with the `after_seq` the watch started from, `feed`
    it every event in order, and `finish` it when the stream ends. The first
    broken rule raises `GrammarViolation`; the checker is not meant to be fed
    after that.

    For a resumed stream (`after_seq > 0`) the attempt rules apply only to
    attempts the checker saw open: output or terminal events for a node it
    has never seen are accepted, but once it has seen that node's attempt
    close, a stray event fails.

    Given the watch's `EventFilter`, it applies the filtered-stream rule of
    clients/GRAMMAR.md: seqs must increase but may skip, and the attempt
    rules hold only when the filter's kinds select NodeStarted, NodeSucceeded
    and NodeFailed.
    """

    def __init__(self, after_seq: int = 0, event_filter: EventFilter | None = None) -> None:
        self._after_seq = after_seq
        self._filtered = is_filtered(event_filter)
        kinds = set(event_filter.kinds) if event_filter is not None else set()
        self._attempt_rules = not kinds or kinds >= ATTEMPT_FRAMING
        self._last_seq: int | None = None
        self._run_id: str | None = None
        self._completed = False
        self._open: dict[str, _Attempt] = {}
        # Nodes whose attempts the checker has seen open or close; on a stream
        # checked from the start every node counts as seen.
        self._seen: set[str] = set()

    @property
    def last_seq(self) -> int:
        """The `seq` of the last event fed, or `after_seq` before the first."""
        return self._after_seq if self._last_seq is None else self._last_seq

    @property
    def completed(self) -> bool:
        """Whether RunCompleted has been fed."""
        return self._completed

    def feed(self, event: RunEvent) -> None:
        """Checks the next event of the stream.

        Raises:
            GrammarViolation: The event breaks a rule.
            UnknownEventError: The event's oneof case is not known.
        """
        case = event_case(event)
        seq = event.seq
        self._check_sequence(event, seq)
        if self._completed:
            raise GrammarViolation(RUN_COMPLETED_LAST, seq, f"{case} after RunCompleted")
        if (case == "run_started") != (seq == 1):
            detail = (
                f"RunStarted at seq {seq}, it belongs at seq 1"
                if case == "run_started"
                else f"seq 1 is {case}, not RunStarted"
            )
            raise GrammarViolation(RUN_STARTED_FIRST, seq, detail)
        if self._attempt_rules:
            self._check_attempts(event, case, seq)
        self._last_seq = seq
        if case == "run_completed":
            self._completed = True

    def finish(self) -> None:
        """Checks that the stream ended properly: after RunCompleted.

        Raises:
            GrammarViolation: `run-completed-last` when RunCompleted never came.
        """
        if not self._completed:
            raise GrammarViolation(
                RUN_COMPLETED_LAST, self.last_seq, "stream ended without RunCompleted"
            )

    def _check_sequence(self, event: RunEvent, seq: int) -> None:
        if self._filtered:
            previous = self.last_seq
            if seq <= previous:
                rule = SEQ_START if self._last_seq is None else SEQ_GAPLESS
                raise GrammarViolation(
                    rule, seq, f"seq {seq} follows seq {previous}, want more than {previous}"
                )
            if self._last_seq is None:
                self._run_id = event.run_id
            elif event.run_id != self._run_id:
                raise GrammarViolation(
                    RUN_ID_STABLE, seq, f"run_id {event.run_id!r} differs from {self._run_id!r}"
                )
            return
        if self._last_seq is None:
            if seq != self._after_seq + 1:
                raise GrammarViolation(
                    SEQ_START, seq, f"first seq is {seq}, want {self._after_seq + 1}"
                )
            self._run_id = event.run_id
            return
        if seq != self._last_seq + 1:
            raise GrammarViolation(
                SEQ_GAPLESS,
                seq,
                f"seq {seq} follows seq {self._last_seq}, want {self._last_seq + 1}",
            )
        if event.run_id != self._run_id:
            raise GrammarViolation(
                RUN_ID_STABLE, seq, f"run_id {event.run_id!r} differs from {self._run_id!r}"
            )

    def _check_attempts(self, event: RunEvent, case: str, seq: int) -> None:
        # A fan-out item is a track of its own, named `node[item_index]`;
        # the node's own attempt (no item) frames its items.
        frame = event.node_id
        item = event.item_index
        node = frame if item is None else f"{frame}[{item}]"
        attempt = (event.iteration, event.attempt)
        open_attempt = self._open.get(node)
        if case == "node_started" and item is not None:
            open_frame = self._open.get(frame)
            if (open_frame is None and (self._after_seq == 0 or frame in self._seen)) or (
                open_frame is not None and open_frame[0] != event.iteration
            ):
                raise GrammarViolation(
                    ITEM_OUTSIDE_FRAME,
                    seq,
                    f"NodeStarted for item {node!r} {_name(attempt)} outside an open visit of node {frame!r}",
                )
        if case in NODE_TERMINAL and item is None:
            items = sorted(n for n in self._open if n.startswith(f"{frame}["))
            if items:
                raise GrammarViolation(
                    ITEM_UNCLOSED,
                    seq,
                    f"{case} for node {frame!r} while items are open: {', '.join(items)}",
                )
        if case == "node_started":
            if open_attempt is not None:
                raise GrammarViolation(
                    ATTEMPT_OPEN,
                    seq,
                    f"NodeStarted for node {node!r} {_name(attempt)} while {_name(open_attempt)} is open",
                )
            self._open[node] = attempt
            self._seen.add(node)
        elif case in NODE_OUTPUT or case in NODE_TERMINAL:
            rule = OUTPUT_OUTSIDE_ATTEMPT if case in NODE_OUTPUT else TERMINAL_OUTSIDE_ATTEMPT
            if open_attempt is None:
                if self._after_seq == 0 or node in self._seen:
                    raise GrammarViolation(
                        rule, seq, f"{case} for node {node!r} {_name(attempt)} with no open attempt"
                    )
            elif open_attempt != attempt:
                raise GrammarViolation(
                    rule,
                    seq,
                    f"{case} for node {node!r} {_name(attempt)} but {_name(open_attempt)} is open",
                )
            if case in NODE_TERMINAL:
                self._open.pop(node, None)
                self._seen.add(node)
        elif case == "node_skipped":
            if open_attempt is not None:
                raise GrammarViolation(
                    SKIP_INSIDE_ATTEMPT,
                    seq,
                    f"NodeSkipped for node {node!r} while {_name(open_attempt)} is open",
                )
        elif case == "run_completed" and self._open:
            names = ", ".join(f"{n!r} {_name(a)}" for n, a in sorted(self._open.items()))
            raise GrammarViolation(ATTEMPT_UNCLOSED, seq, f"RunCompleted while open: {names}")


def _name(attempt: _Attempt) -> str:
    return f"iteration {attempt[0]} attempt {attempt[1]}"


def check_stream(
    events: Iterable[RunEvent], after_seq: int = 0, event_filter: EventFilter | None = None
) -> None:
    """Checks a whole stream: feeds every event, then finishes.

    Raises:
        GrammarViolation: The first rule the stream breaks.
    """
    checker = GrammarChecker(after_seq, event_filter)
    for event in events:
        checker.feed(event)
    checker.finish()
