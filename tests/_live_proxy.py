"""A loopback TCP proxy whose connections a test can reset on demand."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

__all__ = ["TcpProxy"]

# SO_LINGER on with a zero timeout: close() sends RST instead of FIN, so the
# client sees its connection reset, as when a middlebox or the network drops it.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)


class _Link:
    """One accepted connection and its upstream twin."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        self.pumps: list[asyncio.Task[None]] = []

    def reset(self) -> None:
        sock = self.client.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
        self.client.transport.abort()
        self.upstream.transport.abort()


class TcpProxy:
    """Listens on 127.0.0.1:0 and forwards every connection to `upstream_port`.

    `accepted` counts connections made through it, so a test can tell that a
    client came back after `cut()` reset everything it had open.
    """

    def __init__(
        self,
        upstream_port: int,
        *,
        upstream_unix: str | None = None,
        listen_unix: str | None = None,
    ) -> None:
        self.upstream_port = upstream_port
        # Unix-domain sockets instead of TCP on either side (an embedded Postgres).
        self.upstream_unix = upstream_unix
        self.listen_unix = listen_unix
        self.accepted = 0
        self.refusing = False  # set: new connections are reset at once, like a dead server
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None

    @property
    def addr(self) -> str:
        assert self._server is not None, "start() the proxy first"
        if self.listen_unix is not None:
            return self.listen_unix
        port = self._server.sockets[0].getsockname()[1]
        return f"127.0.0.1:{port}"

    async def start(self) -> str:
        """Start listening; returns the proxy's `host:port`."""
        if self.listen_unix is not None:
            self._server = await asyncio.start_unix_server(self._accept, self.listen_unix)
        else:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self.addr

    async def cut(self) -> int:
        """Reset every open connection, both sides; returns how many there were."""
        links = list(self._links)
        for link in links:
            link.reset()
        for link in links:
            await asyncio.gather(*link.pumps, return_exceptions=True)
        return len(links)

    async def close(self) -> None:
        """Stop listening and reset whatever is still connected."""
        if self._server is not None:
            self._server.close()
        await self.cut()
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.refusing:
            writer.transport.abort()
            return
        try:
            if self.upstream_unix is not None:
                up_reader, up_writer = await asyncio.open_unix_connection(self.upstream_unix)
            else:
                up_reader, up_writer = await asyncio.open_connection(
                    "127.0.0.1", self.upstream_port
                )
        except OSError:
            writer.transport.abort()  # nothing upstream (a restarting server): refuse
            return
        link = _Link(writer, up_writer)
        link.pumps = [
            asyncio.create_task(_pump(reader, up_writer)),
            asyncio.create_task(_pump(up_reader, writer)),
        ]
        self._links.add(link)
        try:
            # Either direction ending ends the link: gRPC never half-closes TCP.
            await asyncio.wait(link.pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._links.discard(link)
            writer.transport.abort()
            up_writer.transport.abort()
            await asyncio.gather(*link.pumps, return_exceptions=True)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
