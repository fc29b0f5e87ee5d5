"""The CLI's side of a hijacked connection (`net exec`, `net attach`, `net run -i/-t`):
the daemon's output to our stdout and stderr (Docker's multiplexed frames, or raw bytes
with a TTY), our stdin to the daemon, the local terminal in raw mode with a TTY and its
size sent along (at the start and on SIGWINCH).

    sock, early = client.hijack("POST", f"/exec/{eid}/start", {"Detach": False, "Tty": tty})
    pump(sock, early, tty=tty, stdin=interactive)

Our stdin's end is a half-close of the connection (the daemon closes the process's
stdin); the stream ends when the daemon closes its side.
"""

from __future__ import annotations

import _socket
import os
import select

from cnm.errors import CNMError

TYPE_CHECKING = False  # typing stays out of the CLI's start; type checkers see True
if TYPE_CHECKING:
    from collections.abc import Callable

CHUNK = 65536
HEADER = 8


class Demux:
    """Docker's multiplexed frames (1 stdout, 2 stderr: an 8-byte header, then the
    payload) to (stream, bytes) pieces, as they arrive. Pure."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        out: list[tuple[int, bytes]] = []
        while len(self._buf) >= HEADER:
            size = int.from_bytes(self._buf[4:8], "big")
            if len(self._buf) < HEADER + size:
                break
            stream = self._buf[0]
            out.append((2 if stream == 2 else 1, bytes(self._buf[HEADER : HEADER + size])))
            del self._buf[: HEADER + size]
        return out


def terminal_size(fd: int = 1) -> tuple[int, int] | None:
    """(rows, columns) of the terminal on `fd` (else stdin), None without one."""
    for candidate in (fd, 0):
        try:
            size = os.get_terminal_size(candidate)
            return size.lines, size.columns
        except OSError:
            continue
    return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def pump(
    sock: _socket.socket, early: bytes, *, tty: bool, stdin: bool, resize: Callable[[int, int], None] | None = None
) -> None:
    """Copy until the daemon closes the connection. `early`: bytes that came with the
    101 answer. `resize(rows, cols)` is called at once and on SIGWINCH with a TTY."""
    import signal  # (CLI start-up: only with a terminal)

    sock.setblocking(True)
    raw_mode = None
    if tty and stdin and os.isatty(0):
        import termios  # (CLI start-up: only with a terminal)
        import tty as ttymod  # (CLI start-up: only with a terminal)

        raw_mode = termios.tcgetattr(0)
        ttymod.setraw(0)
    woke: list[int] = []
    old_handler = None
    if tty and resize is not None:
        size = terminal_size()
        if size is not None:
            _resize(resize, size)
        r, w = os.pipe()
        os.set_blocking(w, False)
        old_handler = signal.signal(signal.SIGWINCH, lambda *_: _poke(w))
        woke = [r, w]
    demux = None if tty else Demux()
    try:
        _out(early, demux)
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        reading_stdin = stdin
        if reading_stdin:
            poller.register(0, select.POLLIN)
        if woke:
            poller.register(woke[0], select.POLLIN)
        while True:
            for fd, _ in poller.poll():
                if fd == sock.fileno():
                    data = sock.recv(CHUNK)
                    if not data:
                        return
                    _out(data, demux)
                elif fd == 0:
                    data = os.read(0, CHUNK)
                    if data:
                        sock.sendall(data)
                    else:  # our stdin ended: the process's ends too
                        poller.unregister(0)
                        _half_close(sock)
                elif woke and fd == woke[0]:
                    os.read(woke[0], 512)
                    size = terminal_size()
                    if size is not None and resize is not None:
                        _resize(resize, size)
    except (ConnectionResetError, BrokenPipeError):
        return
    finally:
        if raw_mode is not None:
            import termios  # (CLI start-up: only with a terminal)

            termios.tcsetattr(0, termios.TCSADRAIN, raw_mode)
        if old_handler is not None:
            signal.signal(signal.SIGWINCH, old_handler)
        for fd in woke:
            os.close(fd)


def _out(data: bytes, demux: Demux | None) -> None:
    if not data:
        return
    if demux is None:
        _write_all(1, data)
        return
    for stream, payload in demux.feed(data):
        _write_all(stream, payload)


def _poke(fd: int) -> None:
    try:
        os.write(fd, b"x")
    except OSError:
        pass  # the pipe is full: a resize is pending anyway


def _resize(resize: Callable[[int, int], None], size: tuple[int, int]) -> None:
    try:
        resize(*size)
    except CNMError:
        pass  # the process ended meanwhile: nothing to size


def _half_close(sock: _socket.socket) -> None:
    try:
        sock.shutdown(_socket.SHUT_WR)
    except OSError:
        pass
