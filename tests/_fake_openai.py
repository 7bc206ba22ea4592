"""A scripted OpenAI Chat Completions server on loopback, speaking the real SSE wire format.

Each request to `POST /v1/chat/completions` takes the next `Reply` from the
script. A reply is either an HTTP error (status, headers, JSON body) or a
stream of `chat.completion.chunk` objects sent as SSE events over chunked
transfer encoding, ending with `data: [DONE]`, with optional faults: cut the
connection before the end, send a chunk that is not JSON, or stall (holding
the connection open) until the client goes away. Every request body is
recorded so tests assert what was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FakeOpenAI", "Reply", "chunk", "text_reply", "tool_reply"]


def chunk(
    *,
    content: str | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    finish_reason: str | None = None,
    usage: dict[str, int] | None = None,
    model: str = "fake-model",
    choices: bool = True,
) -> dict[str, Any]:
    """One `chat.completion.chunk` object as real servers send it."""
    delta: dict[str, Any] = {}
    if content is not None:
        delta["content"] = content
    if tool_calls is not None:
        delta["tool_calls"] = tool_calls
    body: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": (
            [{"index": 0, "delta": delta, "finish_reason": finish_reason}] if choices else []
        ),
    }
    if usage is not None:
        body["usage"] = usage
    return body


@dataclass
class Reply:
    """What the fake answers to one request."""

    chunks: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    cut_after: int | None = None  # close the connection after this many chunks, no [DONE]
    malformed_after: int | None = None  # send a non-JSON event after this many chunks
    stall_after: int | None = None  # after this many chunks, hold until the client leaves


def text_reply(*parts: str, prompt_tokens: int = 11, completion_tokens: int = 7) -> Reply:
    """A streamed text answer split into `parts`, with a usage chunk."""
    chunks = [chunk(content="")] + [chunk(content=p) for p in parts]
    chunks.append(chunk(finish_reason="stop"))
    chunks.append(
        chunk(
            choices=False,
            usage={
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        )
    )
    return Reply(chunks)


def tool_reply(*calls: tuple[str, str, str], split: int = 3) -> Reply:
    """Parallel tool calls (id, function name, arguments JSON), arguments split in fragments."""
    chunks: list[dict[str, Any]] = []
    for index, (call_id, name, arguments) in enumerate(calls):
        chunks.append(
            chunk(
                tool_calls=[
                    {
                        "index": index,
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": ""},
                    }
                ]
            )
        )
        step = max(1, len(arguments) // split + 1)
        for start in range(0, len(arguments), step):
            piece = arguments[start : start + step]
            chunks.append(chunk(tool_calls=[{"index": index, "function": {"arguments": piece}}]))
    chunks.append(chunk(finish_reason="tool_calls"))
    chunks.append(
        chunk(
            choices=False, usage={"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29}
        )
    )
    return Reply(chunks)


class FakeOpenAI:
    """The server; `async with FakeOpenAI(script) as fake:` then `fake.base_url`."""

    def __init__(
        self,
        script: list[Reply] | None = None,
        respond: Callable[[dict[str, Any]], Reply] | None = None,
    ) -> None:
        self.script: list[Reply] = list(script or [])
        self.respond = respond  # answers from the request, when the script is empty
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.disconnected = asyncio.Event()  # a stalled stream saw its client go away
        self.streaming = asyncio.Event()  # a stalled stream is waiting
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def __aenter__(self) -> FakeOpenAI:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client went away, or the fake is shutting down
        finally:
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        if method == "POST" and path.endswith("/embeddings"):
            request = json.loads(body)
            self.requests.append(request)
            self.headers.append(headers)
            tokens = len(str(request["input"]).split())
            await self._send(
                writer,
                200,
                {},
                {
                    "object": "list",
                    "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5, 1.0]}],
                    "model": request["model"],
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                },
            )
            return True
        if method != "POST" or not path.endswith("/chat/completions"):
            await self._send(writer, 404, {}, {"error": {"message": f"no route {path}"}})
            return True
        self.requests.append(json.loads(body))
        self.headers.append(headers)
        if self.script:
            reply = self.script.pop(0)
        elif self.respond is not None:
            reply = self.respond(self.requests[-1])
        else:
            reply = Reply(status=500, body={"error": {"message": "the script is empty"}})
        if reply.status != 200:
            await self._send(writer, reply.status, reply.headers, reply.body or {"error": {}})
            return True
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\ncache-control: no-cache\r\n\r\n"
        )
        for i, c in enumerate(reply.chunks):
            if reply.cut_after == i:
                await writer.drain()
                return False  # the connection closes mid-stream
            if reply.malformed_after == i:
                self._event(writer, b"data: {not json\n\n")
            if reply.stall_after == i:
                await writer.drain()
                self.streaming.set()
                # The client closing its end is the only way out.
                while await reader.read(1024):
                    pass
                self.disconnected.set()
                return False
            self._event(writer, b"data: " + json.dumps(c).encode() + b"\n\n")
            await writer.drain()
        if reply.cut_after is not None:
            return False
        self._event(writer, b"data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    @staticmethod
    def _event(writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    @staticmethod
    async def _send(
        writer: asyncio.StreamWriter, status: int, headers: dict[str, str], body: dict[str, Any]
    ) -> None:
        data = json.dumps(body).encode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(
            f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
            f"content-length: {len(data)}\r\n{extra}\r\n".encode()
            + data
        )
        await writer.drain()
