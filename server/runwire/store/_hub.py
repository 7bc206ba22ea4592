"""Fan committed events out to this process's watchers.

Local commits are published with their bytes already framed, so one
serialization serves every watcher of a run. Commits made by other processes
arrive as Postgres NOTIFY wake-ups carrying only the new last seq; watchers
then read the events from the store. Publishing never blocks: a watcher whose
bounded queue overflows is marked, drops its queue and catches up from the
store (promise 5).

It also wakes cross-run log readers (runwire.store._log; for WatchEvents, the
shared tail of runwire.store._log_tail, and webhook delivery):
`log_changed()` returns an event that is set at the next commit of events by
any process (this process's writer calls `wake_log`; other processes' commits
arrive on the same NOTIFY channel), on a LISTEN reconnect (commits may have
been missed) and on drain. Take it before reading the log, then wait on it
when the read found nothing new: a commit between the read and the wait
has set it already.

And it tells the webhook deliverer (`on_subscriptions`) when any process made
a subscription claimable (created, resumed, or its lease released) on the
subscriptions channel, and after a LISTEN reconnect, so a replica claims it
at once rather than on its next lease round.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from runwire.store._transient import is_transient

__all__ = ["CONTROL_CHANNEL", "EVENTS_CHANNEL", "Chunk", "Hub", "Subscription"]

log = logging.getLogger(__name__)

# When the watcher count has dropped this far below its peak since the last
# trim (a wave left, not the churn of watchers coming and going), the process
# returns freed heap to the system TRIM_DELAY seconds later (malloc_trim, in a
# thread: it takes milliseconds on a large heap; glibc only, else nothing
# happens), one trim at a time.
# gRPC core's per-call memory (most of an idle watcher's) is malloc'd, and
# glibc keeps it otherwise. CPython's small-object arenas are not malloc'd:
# they go back only when entirely free (see bench/README.md, idle watchers).
TRIM_AFTER_LEAVING = 128
TRIM_DELAY = 1.0


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_malloc_trim = _find_malloc_trim()

EVENTS_CHANNEL = "runwire_events"
CONTROL_CHANNEL = "runwire_control"
# Payload: a subscription id that became claimable (store/_subscriptions.py).
SUBSCRIPTIONS_CHANNEL = "runwire_subscriptions"


@dataclass(frozen=True, slots=True)
class Chunk:
    """Consecutive committed events of one run, framed for WatchRunResponse.

    `kinds` and `ends` (each event's oneof case, and where its framed entry
    ends in `framed`) let a filtered watcher pick events without decoding
    the chunk.
    """

    first_seq: int
    last_seq: int
    framed: bytes
    completed: bool
    kinds: tuple[str, ...]
    ends: tuple[int, ...]


class Subscription:
    """One watcher's bounded view of a run's live events.

    An idle watcher costs this object, a list and one future (no asyncio.Event
    with its deque of waiters, no deque of its own): thousands of them wait on
    a run held at a gate.
    """

    __slots__ = ("_chunks", "_hub", "_max", "_ready", "_waiter", "overflowed", "run_id", "wake_seq")

    def __init__(self, hub: Hub, run_id: str, max_chunks: int) -> None:
        self._hub = hub
        self.run_id = run_id
        self._max = max_chunks
        self._chunks: list[Chunk] = []
        # Something was offered since the last take (or the hub closes); the
        # future, if any, is what `wait` handed out while nothing was.
        self._ready = hub.closing
        self._waiter: asyncio.Future[None] | None = None
        self.overflowed = False
        self.wake_seq = 0

    def _set_ready(self) -> None:
        self._ready = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _offer(self, chunk: Chunk) -> None:
        if self.overflowed:
            return
        if len(self._chunks) >= self._max:
            # Slow watcher: forget the queue, it will re-read from the store.
            self._chunks = []
            self.overflowed = True
            self._hub.overflows += 1
            self.wake_seq = max(self.wake_seq, chunk.last_seq)
        else:
            self._chunks.append(chunk)
        self._set_ready()

    def _wake(self, seq: int) -> None:
        self.wake_seq = max(self.wake_seq, seq)
        self._set_ready()

    def wait(self) -> Awaitable[None]:
        """Done once something was offered since the last `take`, or the hub closes."""
        waiter = self._waiter
        if waiter is None or waiter.cancelled():
            # None since the last take, or cancelled with the task that waited.
            waiter = self._waiter = asyncio.get_running_loop().create_future()
        if self._ready and not waiter.done():
            waiter.set_result(None)
        return waiter

    def live_from(self) -> int | None:
        """The first seq of the queued chunks when the queue holds every local
        commit of the run since then (it did not overflow); else None."""
        if self.overflowed or not self._chunks:
            return None
        return self._chunks[0].first_seq

    def take(self) -> tuple[list[Chunk], bool, int]:
        """Everything queued, whether the queue overflowed, and the newest seq woken
        for since the last take (0: none)."""
        chunks, self._chunks = self._chunks, []
        overflowed, wake_seq = self.overflowed, self.wake_seq
        # Handed over once: the caller reads the store for it. Kept, the
        # reconnect marker (1 << 62) sent the watcher to the store on every
        # later commit for the rest of its life.
        self.overflowed, self.wake_seq = False, 0
        self._ready = False
        self._waiter = None
        return chunks, overflowed, wake_seq

    def close(self) -> None:
        """Stop receiving."""
        self._hub._unsubscribe(self)


class Hub:
    """Per-process registry of watchers, fed by the writer and by NOTIFY."""

    def __init__(self, max_chunks: int = 256) -> None:
        self._subs: dict[str, set[Subscription]] = {}
        self._max_chunks = max_chunks
        self.overflows = 0  # how often a slow watcher fell back to the store
        self.origin = uuid.uuid4().hex[:16]  # tags this process's NOTIFYs
        # The trim trigger's count of live subscriptions and its peak since
        # the last trim (`watching` stays the sum over the sets).
        self._live = 0
        self._peak = 0
        self.trims = 0  # heap trims done after waves of watchers left
        self.on_trimmed: Callable[[], None] | None = None  # called after each
        # The trim scheduled or running, if any.
        self._trim: asyncio.TimerHandle | None = None
        self._listener: asyncio.Task[None] | None = None
        self.on_control: Callable[[str], None] | None = None
        # Called after every (re)connect of the LISTEN connection: control
        # requests NOTIFYed while it was down were missed and must be re-read.
        self.on_listen: Callable[[], None] | None = None
        # Called when a webhook subscription became claimable, and after every
        # (re)connect (a NOTIFY may have been missed): the deliverer claims now.
        self.on_subscriptions: Callable[[], None] | None = None
        # Set by close_all (drain): every wait returns, now and from then on.
        self.closing = False
        # Set while the LISTEN connection is up: this process hears the other
        # processes' commits and control requests.
        self.listening = asyncio.Event()
        self._log_event: asyncio.Event | None = None

    def subscribe(self, run_id: str) -> Subscription:
        """Start queueing the run's live events for one watcher."""
        sub = Subscription(self, run_id, self._max_chunks)
        self._subs.setdefault(run_id, set()).add(sub)
        self._live += 1
        self._peak = max(self._peak, self._live)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.run_id)
        if subs is None or sub not in subs:
            return  # closed before
        subs.discard(sub)
        if not subs:
            del self._subs[sub.run_id]
        self._live -= 1
        if self._wave_left() and self._trim is None:
            # Many watchers left: once the wave has passed, hand the freed
            # heap back to the system.
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to trim for
                self._trim = asyncio.get_running_loop().call_later(TRIM_DELAY, self._trim_now)

    def _wave_left(self) -> bool:
        return self._peak - self._live >= TRIM_AFTER_LEAVING and _malloc_trim is not None

    def _trim_now(self) -> None:
        self._peak = self._live
        trim = _malloc_trim
        if trim is None:
            self._trim = None
            return
        loop = asyncio.get_running_loop()
        loop.run_in_executor(None, trim, 0).add_done_callback(self._trimmed)

    def _trimmed(self, done: asyncio.Future[int]) -> None:
        # Only now may the next wave schedule a trim: never two at once.
        self._trim = None
        if not done.cancelled() and done.exception() is None:
            self.trims += 1
            if self.on_trimmed is not None:
                self.on_trimmed()
        if self._wave_left() and not self.closing:
            # A wave left while this trim ran.
            self._trim = asyncio.get_running_loop().call_later(TRIM_DELAY, self._trim_now)

    @property
    def watching(self) -> int:
        """Live subscriptions (watchers) of this process; read when metrics are collected."""
        return sum(len(subs) for subs in self._subs.values())

    def watcher_count(self, run_id: str) -> int:
        """How many watchers of the run this process serves."""
        return len(self._subs.get(run_id, ()))

    def publish(self, run_id: str, chunk: Chunk) -> None:
        """Hand a committed chunk to every local watcher of the run."""
        for sub in self._subs.get(run_id, ()):
            sub._offer(chunk)

    def wake(self, run_id: str, seq: int) -> None:
        """Tell the run's watchers that events up to `seq` are committed."""
        for sub in self._subs.get(run_id, ()):
            sub._wake(seq)

    def log_changed(self) -> asyncio.Event:
        """An event set at the next commit of events by any process (see the module doc)."""
        if self._log_event is None:
            self._log_event = asyncio.Event()
            if self.closing:
                self._log_event.set()
        return self._log_event

    def wake_log(self) -> None:
        """Events were committed: wake the log readers waiting on `log_changed`."""
        event, self._log_event = self._log_event, None
        if event is not None:
            event.set()

    def close_all(self) -> None:
        """Draining: wake every watcher, now and every later one, to see `closing`."""
        self.closing = True
        self.wake_log()
        for subs in self._subs.values():
            for sub in subs:
                sub._set_ready()

    def wake_all(self) -> None:
        """After a lost LISTEN connection: every watcher re-checks the store."""
        self.wake_log()
        for run_id, subs in self._subs.items():
            for sub in subs:
                sub._wake(1 << 62)
            log.debug("woke watchers of %s after reconnect", run_id)

    def _on_notify(self, _conn: object, _pid: int, channel: str, payload: object) -> None:
        payload = str(payload)
        if channel == EVENTS_CHANNEL:
            origin, _, rest = payload.partition("|")
            if origin == self.origin:
                # Our own commit: its chunk is published locally, and Postgres
                # delivers the NOTIFY before our writer has even returned from
                # COMMIT, so waking on it would send every watcher to the store.
                return
            self.wake_log()
            run_id, _, seq = rest.rpartition(":")
            with contextlib.suppress(ValueError):
                self.wake(run_id, int(seq))
        elif channel == CONTROL_CHANNEL and self.on_control is not None:
            self.on_control(payload)
        elif channel == SUBSCRIPTIONS_CHANNEL and self.on_subscriptions is not None:
            self.on_subscriptions()

    def start(self, connect: Callable[[], Awaitable[asyncpg.Connection]]) -> None:
        """Listen for other processes' commits and control requests."""
        self._listener = asyncio.create_task(self._listen(connect), name="runwire-listen")

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The LISTEN task; its end (other than by stop()) is fatal to the server."""
        return self._listener

    async def _listen(self, connect: Callable[[], Awaitable[asyncpg.Connection]]) -> None:
        backoff = 0.1
        while True:
            lost = asyncio.Event()
            conn: asyncpg.Connection | None = None
            try:
                async with asyncio.timeout(10):
                    conn = await connect()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(EVENTS_CHANNEL, self._on_notify)
                await conn.add_listener(CONTROL_CHANNEL, self._on_notify)
                await conn.add_listener(SUBSCRIPTIONS_CHANNEL, self._on_notify)
                backoff = 0.1
                self.listening.set()
                # Anything committed while we were not listening must be read now.
                self.wake_all()
                if self.on_listen is not None:
                    self.on_listen()
                if self.on_subscriptions is not None:
                    self.on_subscriptions()
                await lost.wait()
                log.warning("LISTEN connection lost; reconnecting")
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("LISTEN connection failed (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                self.listening.clear()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.terminate()

    async def stop(self) -> None:
        """Stop listening (and trimming)."""
        if self._trim is not None:
            self._trim.cancel()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
