"""Docker's connection hijack: after `101 UPGRADED` (`Connection: Upgrade`, `Upgrade:
tcp`) an HTTP connection becomes a raw duplex stream — the container's output one
way, its stdin the other (attach, exec start).

    conn = await hijack(request, MULTIPLEXED)
    data = await conn.read()          # client bytes; b"" once the client half-closed
    await conn.write(frame)           # raw bytes to the client
    await conn.close()                # the end of the stream: the client reads EOF

The client may half-close (Docker's CLI does, when its stdin ends) and still read
output. aiohttp's protocol would let asyncio close the whole connection on that EOF, so
after the upgrade the connection's input is taken over by a protocol of our own that
keeps it open and hands the EOF to `read()`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

RAW = "application/vnd.docker.raw-stream"  # a TTY: output as it is
MULTIPLEXED = "application/vnd.docker.multiplexed-stream"  # 8-byte frame headers (API >= 1.42)


def wants_upgrade(request: web.Request) -> bool:
    return (
        "upgrade" in request.headers.get("Connection", "").lower()
        and request.headers.get("Upgrade", "").lower() == "tcp"
    )


class _Input(asyncio.Protocol):
    """Takes the connection's input over after the upgrade: client bytes into a queue,
    b"" at its half-close. Set as the transport's protocol (asyncio's set_protocol), it
    passes what concerns the connection as a whole on to aiohttp's own protocol (flow
    control of writes, the connection's loss); it also serves as aiohttp's payload parser
    once, to receive the bytes aiohttp had buffered behind the request."""

    def __init__(self, queue: asyncio.Queue[bytes], inner: Any) -> None:
        self.queue = queue
        self.inner = inner
        self.ended = False

    # aiohttp's payload-parser shape (feed_data -> (eof, tail), feed_eof)
    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.data_received(data)
        return False, b""

    def feed_eof(self) -> None:
        self._end()

    # asyncio.Protocol
    def data_received(self, data: bytes) -> None:
        if data and not self.ended:
            self.queue.put_nowait(bytes(data))

    def eof_received(self) -> bool:
        self._end()
        return True  # keep the connection open: the output goes on

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def _end(self) -> None:
        if not self.ended:
            self.ended = True
            self.queue.put_nowait(b"")


class Hijacked:
    def __init__(
        self, request: web.Request, response: web.StreamResponse, queue: asyncio.Queue[bytes], takeover: _Input
    ) -> None:
        self.request = request
        self.response = response
        self._queue = queue
        self._takeover = takeover
        self._closed = False

    @property
    def transport(self) -> asyncio.Transport | None:
        return self.request.transport

    def gone(self) -> bool:
        """The connection is closed or closing (the client went away)."""
        t = self.transport
        return t is None or t.is_closing()

    async def read(self) -> bytes:
        """The client's next bytes; b"" at its half-close or when it went away."""
        if self._closed:
            return b""
        return await self._queue.get()

    async def write(self, data: bytes) -> None:
        """Raw bytes to the client; ConnectionResetError once it went away."""
        if self.gone():
            raise ConnectionResetError("the client closed the connection")
        await self.response.write(data)

    async def close(self) -> None:
        """End of the stream: send what is pending, then close the connection."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.response.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass
        t = self.transport
        if t is not None and not t.is_closing():
            t.close()


async def hijack(request: web.Request, content_type: str) -> Hijacked:
    """Answer `101 UPGRADED` and take the connection over. The caller checks
    `wants_upgrade(request)` first (Docker's clients always ask). A client must not send
    before it has read the 101 (Docker's do not): aiohttp's C parser upgrades only
    websockets, so bytes that came with the request would be parsed as a next one."""
    resp = web.StreamResponse(
        status=101, reason="UPGRADED", headers={"Content-Type": content_type, "Connection": "Upgrade", "Upgrade": "tcp"}
    )
    resp.force_close()  # never reused for another request
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    protocol: Any = request.protocol
    transport = request.transport
    # What the transport calls now (the API listener's ConnectionGuard, wrapping aiohttp's
    # protocol) keeps getting the connection's loss: the guard counts open connections.
    takeover = _Input(queue, transport.get_protocol() if transport is not None else protocol)
    await resp.prepare(request)
    protocol.set_parser(takeover)  # the bytes aiohttp buffered behind the request
    transport = request.transport
    if transport is None or transport.is_closing():
        takeover.feed_eof()
    else:
        transport.set_protocol(takeover)  # then every byte, and the client's half-close
    return Hijacked(request, resp, queue, takeover)
