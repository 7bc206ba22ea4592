"""A real webhook receiver on 127.0.0.1: verifies Standard Webhooks signatures, records
every POST, and answers from a script (500, 429 with Retry-After, a stall, a redirect)
before it answers 200."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from runwire.webhooks import secret_key, verify

__all__ = ["Post", "Receiver", "Reply", "assert_in_order_without_loss", "complete"]


@dataclass(frozen=True)
class Reply:
    """One scripted answer: a status (with headers), or a stall until released."""

    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    stall: bool = False


@dataclass
class Post:
    """One POST as received."""

    webhook_id: str
    timestamp: str
    signature_ok: bool
    body: bytes
    status: int
    at: float  # time.monotonic() when it arrived

    @property
    def events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = json.loads(self.body)["data"]["events"]
        return events


@dataclass
class Receiver:
    """Start with `async with Receiver(secret) as r`; `r.url` takes POSTs."""

    secret: str
    script: list[Reply] = field(default_factory=list)
    posts: list[Post] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    default: Reply = field(default_factory=Reply)
    on_post: Callable[[Post], None] | None = None

    def __post_init__(self) -> None:
        self._key = secret_key(self.secret)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    async def __aenter__(self) -> Receiver:
        self._loop = asyncio.get_running_loop()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                reply = receiver._next()
                wid = self.headers.get("webhook-id", "")
                ts = self.headers.get("webhook-timestamp", "")
                ok = verify(receiver._key, wid, ts, body, self.headers.get("webhook-signature", ""))
                if reply.stall:
                    receiver._record(Post(wid, ts, ok, body, 0, time.monotonic()))
                    receiver.release.wait(60)
                    self.close_connection = True
                    return
                receiver._record(Post(wid, ts, ok, body, reply.status, time.monotonic()))
                self.send_response(reply.status)
                for name, value in reply.headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        assert self._server is not None
        await asyncio.to_thread(self._server.shutdown)
        self._server.server_close()

    def _next(self) -> Reply:
        with self._lock:
            return self.script.pop(0) if self.script else self.default

    def _record(self, post: Post) -> None:
        with self._lock:
            self.posts.append(post)
        if self.on_post is not None:
            self.on_post(post)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._changed.set)

    async def until(self, predicate: Callable[[list[Post]], bool], within: float = 60) -> None:
        """Wait until `predicate(posts)` holds (checked on every POST)."""
        async with asyncio.timeout(within):
            while True:
                self._changed.clear()
                with self._lock:
                    posts = list(self.posts)
                if predicate(posts):
                    return
                await self._changed.wait()

    def delivered(self) -> list[dict[str, Any]]:
        """Events of acknowledged (2xx) POSTs, in arrival order."""
        with self._lock:
            posts = list(self.posts)
        return [e for p in posts if 200 <= p.status < 300 for e in p.events]


def complete(runs: dict[str, int]) -> Any:
    """A predicate: every run's events up to its last seq were acknowledged."""

    def check(posts: list[Post]) -> bool:
        got: dict[str, set[int]] = defaultdict(set)
        for p in posts:
            if 200 <= p.status < 300:
                for e in p.events:
                    got[e["runId"]].add(int(e["seq"]))
        return all(got[r] >= set(range(1, last + 1)) for r, last in runs.items())

    return check


def assert_in_order_without_loss(receiver: Receiver, runs: dict[str, int]) -> None:
    """Per run, acknowledged events are 1..last in order; a repeat is only a retry of a
    batch (same webhook-id, same body) that was not acknowledged the first time."""
    seen: dict[str, list[int]] = defaultdict(list)
    for event in receiver.delivered():
        seen[event["runId"]].append(int(event["seq"]))
    for run_id, last in runs.items():
        assert seen[run_id] == list(range(1, last + 1)), (run_id, seen[run_id])
    bodies: dict[str, bytes] = {}
    acked: set[str] = set()
    for post in receiver.posts:
        assert post.signature_ok, post.webhook_id
        assert bodies.setdefault(post.webhook_id, post.body) == post.body, "a retry changed"
        assert post.webhook_id not in acked, "an acknowledged batch was sent again"
        if 200 <= post.status < 300:
            acked.add(post.webhook_id)
