"""Python client for runwire: decode events, check the stream grammar, watch runs.

The generated messages, enums and the RunService stub live in
`runwire_client.v1`; the most used are re-exported here.
"""

from . import _wkt

# Before anything decodes: make the generated Timestamp and Duration exact to
# the nanosecond (see _wkt). Every import of runwire_client._gen passes here.
_wkt.install()

from . import v1  # noqa: E402 (after the install above, by design)
from ._errors import (  # noqa: E402
    FieldViolation,
    GrammarViolation,
    RunwireError,
    SeqGapError,
    UnknownEventError,
)
from ._events import (  # noqa: E402
    EVENT_CASES,
    decode_event,
    encode_event,
    event_case,
    event_from_dict,
    event_from_json,
    event_to_dict,
    event_to_json,
)
from ._gen.runwire.v1 import RunEvent, RunServiceStub  # noqa: E402
from ._grammar import GrammarChecker, check_stream  # noqa: E402
from ._watch import Backoff, RunEnd, Watch, watch  # noqa: E402
from ._watch_events import EventsWatch, WatchedEvent, watch_events  # noqa: E402
from ._wkt import NanoDatetime, NanoTimedelta  # noqa: E402

__all__ = [
    "EVENT_CASES",
    "Backoff",
    "EventsWatch",
    "FieldViolation",
    "GrammarChecker",
    "GrammarViolation",
    "NanoDatetime",
    "NanoTimedelta",
    "RunEnd",
    "RunEvent",
    "RunServiceStub",
    "RunwireError",
    "SeqGapError",
    "UnknownEventError",
    "Watch",
    "WatchedEvent",
    "check_stream",
    "decode_event",
    "encode_event",
    "event_case",
    "event_from_dict",
    "event_from_json",
    "event_to_dict",
    "event_to_json",
    "v1",
    "watch",
    "watch_events",
]
