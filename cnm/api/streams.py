"""Moving a process's I/O over a hijacked connection (attach, exec): output as Docker's
multiplexed frames (or raw with a TTY), stdin from the client with Docker's detach keys
(ctrl-p ctrl-q by default), a pty master read and written without blocking the loop."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Awaitable, Callable, Sequence

from cnm.api.hijack import Hijacked
from cnm.api.rawstream import encode_frame
from cnm.errors import InvalidParameter

DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"
CHUNK = 32 * 1024
_CTRL_SPECIAL = {"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}


def detach_sequence(keys: str) -> bytes:
    """Docker's detach keys ("ctrl-p,ctrl-q", "a", "ctrl-@") as the bytes a terminal
    sends; InvalidParameter for a key Docker refuses."""
    out = bytearray()
    for key in (keys or DEFAULT_DETACH_KEYS).split(","):
        key = key.strip()
        if len(key) == 1:
            out.append(ord(key))
        elif key.startswith("ctrl-") and len(key) == 6:
            c = key[5]
            if "a" <= c.lower() <= "z":
                out.append(ord(c.lower()) - ord("a") + 1)
            elif c in _CTRL_SPECIAL:
                out.append(_CTRL_SPECIAL[c])
            else:
                raise InvalidParameter(f"invalid detach keys {keys!r}: unknown character {key!r}")
        else:
            raise InvalidParameter(f"invalid detach keys {keys!r}: use ctrl-<a-z@[\\\\]^_> or single characters")
    return bytes(out)


class DetachScanner:
    """Finds the detach sequence in a byte stream split anywhere. Bytes that might begin
    the sequence are held back until the next bytes tell (Docker's term.EscapeProxy)."""

    def __init__(self, sequence: bytes) -> None:
        self.sequence = sequence
        self.held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """(bytes to pass on, detached?)"""
        if not self.sequence:
            return data, False
        buf = self.held + data
        self.held = b""
        at = buf.find(self.sequence)
        if at >= 0:
            return buf[:at], True
        for keep in range(min(len(self.sequence) - 1, len(buf)), 0, -1):
            if self.sequence.startswith(buf[-keep:]):
                self.held = buf[-keep:]
                return buf[:-keep], False
        return buf, False


class FdStream:
    """Non-blocking reads and writes on one fd (a pty master) from the event loop;
    reads only when asked, so a slow client holds the process back instead of filling
    the daemon's memory. EIO (no process holds the pty any more) reads as EOF."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.loop = asyncio.get_running_loop()

    async def _ready(self, add: Callable, remove: Callable) -> None:
        fut: asyncio.Future[None] = self.loop.create_future()

        def wake() -> None:
            if not fut.done():
                fut.set_result(None)

        add(self.fd, wake)
        try:
            await fut
        finally:
            remove(self.fd)

    async def read(self) -> bytes:
        while True:
            try:
                return os.read(self.fd, CHUNK)
            except BlockingIOError:
                await self._ready(self.loop.add_reader, self.loop.remove_reader)
            except OSError as exc:
                if exc.errno in (errno.EIO, errno.EBADF):
                    return b""
                raise

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
                view = view[n:]
            except BlockingIOError:
                await self._ready(self.loop.add_writer, self.loop.remove_writer)


Read = Callable[[], Awaitable[bytes]]


async def pump_output(conn: Hijacked, read: Read, stream: int | None) -> None:
    """Copy `read()` to the client until EOF: frames on `stream` (1 stdout, 2 stderr),
    or raw bytes when None (a TTY)."""
    while data := await read():
        await conn.write(data if stream is None else encode_frame(stream, data))


async def pump_input(conn: Hijacked, write: Callable[[bytes], Awaitable[None]], scanner: DetachScanner | None) -> bool:
    """Copy the client's bytes to `write` until the client half-closes (False) or types
    the detach sequence (True)."""
    while data := await conn.read():
        if scanner is not None:
            data, detached = scanner.feed(data)
            if data:
                await write(data)
            if detached:
                return True
        else:
            await write(data)
    return False


async def bridge(
    conn: Hijacked,
    outputs: Sequence[tuple[Read, int | None]],
    stdin: Callable[[bytes], Awaitable[None]] | None,
    close_stdin: Callable[[], None] | None,
    detach_keys: str | None,
) -> bool:
    """Run the pumps until every output ended (then the client is told EOF) or the
    client detached or went away. Returns True if it detached. On the client's
    half-close, `close_stdin()` (the process sees EOF)."""
    scanner = DetachScanner(detach_sequence(detach_keys)) if detach_keys is not None else None
    out_tasks = [asyncio.ensure_future(pump_output(conn, read, stream)) for read, stream in outputs]
    in_task = asyncio.ensure_future(pump_input(conn, stdin, scanner)) if stdin is not None else None
    detached = False
    try:
        pending = set(out_tasks) | ({in_task} if in_task else set())
        while out_tasks and not all(t.done() for t in out_tasks):
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if in_task is not None and in_task in done:
                try:
                    detached = in_task.result()
                except (ConnectionResetError, BrokenPipeError, OSError):
                    detached = False  # the process's stdin is gone: outputs may go on
                if detached:
                    break
                if close_stdin is not None:
                    close_stdin()
                in_task = None
            for t in done:
                if t in out_tasks and t.exception() is not None and isinstance(t.exception(), ConnectionResetError):
                    return False  # the client went away
        return detached
    finally:
        for t in out_tasks + ([in_task] if in_task else []):
            if not t.done():
                t.cancel()
        await asyncio.gather(*out_tasks, *([in_task] if in_task else []), return_exceptions=True)
