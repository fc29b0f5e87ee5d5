"""The supervisor's I/O loop: the process's output to its log and attached clients, the
clients' input to its stdin, TTY resizes, and the process's exit.

Runs in a supervisor (container or exec), forked from the template: one poll() over a
handful of fds, no asyncio, no threads, and as few allocations as the work allows —
every page a supervisor writes is memory it no longer shares (see cnm.runtime.shim).

Clients speak cnm.runtime.wire. A client never holds the process back: output goes to
the log and to each client without blocking; a client that falls more than BACKLOG
bytes behind is dropped (it can attach again; the log has everything). Input is
written to the process without blocking too; while STDIN_BACKLOG bytes wait, no client
input is read (the clients' sockets fill and hold their writers back).
"""

from __future__ import annotations

import _socket
import fcntl
import os
import select
import struct
import termios
import time

from cnm.runtime import wire

CHUNK = 32 * 1024
BACKLOG = 4 << 20
STDIN_BACKLOG = 256 * 1024
DRAIN_SECONDS = 2.0  # after the process exited, how long its output may still come
_IN = select.POLLIN
_OUT = select.POLLOUT
_GONE = select.POLLHUP | select.POLLERR | select.POLLNVAL
WINSIZE = struct.Struct("HHHH")  # struct winsize: rows, columns, (pixels)


class Client:
    __slots__ = ("sock", "fd", "want", "stdin", "inbuf", "pending", "reading")

    def __init__(self, sock: _socket.socket, want: bytes = b"", stdin: bool = False) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.want = want  # kinds it receives, as bytes of wire kinds
        self.stdin = stdin  # may it write the process's stdin
        self.inbuf = bytearray()
        self.pending = bytearray()  # output not yet taken by its socket
        self.reading = True  # its input is still open


def wants(letters: str, tty: bool) -> tuple[bytes, bool]:
    """(output kinds, stdin allowed) from ATTACH letters ("i", "o", "e"). On a TTY there
    is one output stream, STDOUT."""
    kinds = bytes([wire.STDOUT] if "o" in letters else []) + bytes([wire.STDERR] if "e" in letters and not tty else [])
    return kinds, "i" in letters


class LogWriter:
    """container.log (+ .1 … .N-1 rotated), records as cnm.runtime.wire describes."""

    NAME = "container.log"

    def __init__(self, dirfd: int, max_size: int, max_files: int) -> None:
        self.dirfd = dirfd
        self.max_size = max_size
        self.max_files = max(1, max_files)
        self._open()

    def _open(self) -> None:
        self.fd = os.open(
            self.NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=self.dirfd
        )
        st = os.fstat(self.fd)
        self.inode, self.size = st.st_ino, st.st_size

    def write(self, header: bytes, data: bytes) -> None:
        try:
            self.size += os.writev(self.fd, (header, data, wire.TRAILER.pack(len(data))))
        except OSError:
            return  # a full disk must not stop the container: the clients still get it
        if self.size >= self.max_size:
            self.rotate()

    def rotate(self) -> None:
        os.close(self.fd)
        d = self.dirfd
        for i in range(self.max_files - 1, 0, -1):
            src = self.NAME if i == 1 else f"{self.NAME}.{i - 1}"
            try:
                os.rename(src, f"{self.NAME}.{i}", src_dir_fd=d, dst_dir_fd=d)
            except FileNotFoundError:
                pass
        if self.max_files == 1:
            os.unlink(self.NAME, dir_fd=d)
        self._open()

    def position(self) -> bytes:
        return b"%d %d" % (self.inode, self.size)


class Relay:
    """One process's I/O. `outputs`: (fd, kind) pairs to read (a TTY's master once, as
    STDOUT); `stdin`: the fd to write its input to, or -1; `master`: the TTY's master
    for resizes, or -1."""

    def __init__(
        self,
        outputs: list[tuple[int, int]],
        stdin: int,
        master: int,
        stdin_once: bool,
        log: LogWriter | None,
        listener: _socket.socket | None,
    ) -> None:
        self.poll = select.poll()
        self.outputs = dict(outputs)
        self.stdin = stdin
        self.master = master
        self.tty = master >= 0
        self.stdin_once = stdin_once
        self.stdin_pending = bytearray()
        self.stdin_closing = False
        self.log = log
        self.listener = listener
        self.clients: dict[int, Client] = {}
        for fd in self.outputs:
            os.set_blocking(fd, False)
            self.poll.register(fd, _IN)
        if stdin >= 0:
            os.set_blocking(stdin, False)
        if listener is not None:
            self.poll.register(listener.fileno(), _IN)

    # --- clients -------------------------------------------------------------------

    def add(self, client: Client, hello: bool = True) -> None:
        client.sock.setblocking(False)
        self.clients[client.fd] = client
        self.poll.register(client.fd, _IN)
        if hello:
            self.send_control(client, wire.HELLO, self._hello())

    def _hello(self) -> bytes:
        pos = self.log.position() if self.log is not None else b"0 0"
        return b"%d %s" % (os.getpid(), pos)

    def drop(self, client: Client) -> None:
        if self.clients.pop(client.fd, None) is None:
            return
        try:
            self.poll.unregister(client.fd)
        except KeyError:
            pass
        client.sock.close()
        if client.stdin and client.reading:
            self._stdin_ended()

    def send_control(self, client: Client, kind: int, payload: bytes) -> None:
        self._send(client, wire.OUT_HEADER.pack(kind, len(payload), time.time_ns()), payload)

    def _send(self, client: Client, header: bytes, data: bytes) -> None:
        if client.pending:
            client.pending += header
            client.pending += data
        else:
            try:
                n = client.sock.sendmsg((header, data))
            except BlockingIOError:
                n = 0
            except OSError:
                self.drop(client)
                return
            whole = len(header) + len(data)
            if n == whole:
                return
            rest = (header + data)[n:]
            client.pending += rest
            self.poll.modify(client.fd, (_IN if client.reading else 0) | _OUT)
        if len(client.pending) > BACKLOG:
            self.drop(client)

    def _flush(self, client: Client) -> None:
        try:
            n = client.sock.send(client.pending)
        except BlockingIOError:
            return
        except OSError:
            self.drop(client)
            return
        del client.pending[:n]
        if not client.pending:
            self.poll.modify(client.fd, _IN if client.reading else 0)

    def _client_input(self, client: Client) -> None:
        try:
            data = client.sock.recv(CHUNK)
        except BlockingIOError:
            return
        except OSError:
            self.drop(client)
            return
        if not data:  # half-closed: its input ended, its output goes on
            client.reading = False
            self.poll.modify(client.fd, _OUT if client.pending else 0)
            if client.stdin:
                self._stdin_ended()
            return
        client.inbuf += data
        size = wire.IN_HEADER.size
        while len(client.inbuf) >= size:
            kind, length = wire.IN_HEADER.unpack_from(client.inbuf)
            if length > wire.MAX_PAYLOAD:
                self.drop(client)
                return
            if len(client.inbuf) < size + length:
                break
            payload = bytes(client.inbuf[size : size + length])
            del client.inbuf[: size + length]
            self._command(client, kind, payload)
            if client.fd not in self.clients:
                return

    def _command(self, client: Client, kind: int, payload: bytes) -> None:
        if kind == wire.STDIN:
            if client.stdin and self.stdin >= 0 and not self.stdin_closing:
                self.stdin_pending += payload
                self._write_stdin()
        elif kind == wire.ATTACH:
            client.want, client.stdin = wants(payload.decode(errors="replace"), self.tty)
            self.send_control(client, wire.HELLO, self._hello())
        elif kind == wire.CLOSE:
            if client.stdin:
                client.stdin = False
                self._stdin_ended()
        elif kind == wire.RESIZE:
            if self.master >= 0:
                try:
                    rows, cols = (int(x) for x in payload.split())
                    fcntl.ioctl(self.master, termios.TIOCSWINSZ, WINSIZE.pack(rows, cols, 0, 0))
                except (ValueError, OSError, struct.error):
                    pass
            self.send_control(client, wire.OK, b"")  # done: the next input sees the new size

    # --- the process's stdin -------------------------------------------------------

    def _stdin_ended(self) -> None:
        """A client's input ended: with stdin_once (Docker's StdinOnce), the process's
        stdin closes once what is pending is written. A TTY is never closed this way:
        it is the output too."""
        if self.stdin_once and not self.tty and self.stdin >= 0:
            self.stdin_closing = True
            self._write_stdin()

    def _write_stdin(self) -> None:
        if self.stdin_pending:
            try:
                n = os.write(self.stdin, self.stdin_pending)
                del self.stdin_pending[:n]
            except BlockingIOError:
                pass
            except OSError:  # the process closed its stdin: input goes nowhere
                self.stdin_pending.clear()
                self._close_stdin()
                return
        if self.stdin_pending:
            self._watch_stdin(True)
        else:
            self._watch_stdin(False)
            if self.stdin_closing:
                self._close_stdin()

    def _watch_stdin(self, on: bool) -> None:
        if self.stdin < 0:
            return
        if self.stdin == self.master:  # a TTY: one fd, polled for output already
            if self.master in self.outputs:
                self.poll.modify(self.master, _IN | _OUT if on else _IN)
        elif on:
            self.poll.register(self.stdin, _OUT)
        else:
            try:
                self.poll.unregister(self.stdin)
            except KeyError:
                pass

    def _close_stdin(self) -> None:
        if self.stdin >= 0 and self.stdin != self.master:
            self._watch_stdin(False)
            os.close(self.stdin)
        self.stdin = -1

    # --- output --------------------------------------------------------------------

    def _output(self, fd: int) -> bool:
        """Read once from an output; False at its end."""
        try:
            data = os.read(fd, CHUNK)
        except BlockingIOError:
            return True
        except OSError:  # EIO: nobody holds the TTY's other side any more
            data = b""
        if not data:
            self.poll.unregister(fd)
            del self.outputs[fd]
            if fd != self.master:
                os.close(fd)
            return False
        kind = self.outputs[fd]
        header = wire.OUT_HEADER.pack(kind, len(data), time.time_ns())
        if self.log is not None:
            self.log.write(header, data)
        for client in list(self.clients.values()):
            if kind in client.want:
                self._send(client, header, data)
        return True

    # --- the loop ------------------------------------------------------------------

    def run(self, exited_fd: int) -> None:
        """Relay until the process ended (`exited_fd`, its pidfd, is readable) and its
        output is drained (or DRAIN_SECONDS passed)."""
        self.poll.register(exited_fd, _IN)
        deadline = 0.0
        while True:
            timeout = -1 if not deadline else max(0, int((deadline - time.monotonic()) * 1000))
            if deadline and (not self.outputs or timeout == 0):
                return
            for fd, ev in self.poll.poll(timeout):
                if fd == exited_fd:
                    self.poll.unregister(exited_fd)
                    deadline = time.monotonic() + DRAIN_SECONDS
                elif fd in self.outputs:
                    if ev & _OUT:
                        self._write_stdin()
                    if ev & (_IN | _GONE) and fd in self.outputs:
                        self._output(fd)
                elif fd in self.clients:
                    client = self.clients[fd]
                    if ev & _OUT and client.pending:
                        self._flush(client)
                    if fd in self.clients and ev & (_IN | _GONE):
                        if ev & _IN and client.reading and len(self.stdin_pending) < STDIN_BACKLOG:
                            self._client_input(client)
                        elif ev & _GONE:
                            self.drop(client)
                elif self.listener is not None and fd == self.listener.fileno():
                    self._accept()
                elif fd == self.stdin:
                    self._write_stdin()

    def _accept(self) -> None:
        try:
            fd, _ = self.listener._accept()  # type: ignore[union-attr]
        except OSError:
            return
        self.add(Client(_socket.socket(fileno=fd)), hello=False)

    def finish(self, code: int) -> None:
        """Tell every client the exit code, give them a moment to take what is pending,
        and close them."""
        if self.listener is not None:
            self.poll.unregister(self.listener.fileno())
            self.listener.close()
            self.listener = None
        for client in list(self.clients.values()):
            self.send_control(client, wire.EXIT, b"%d" % code)
        deadline = time.monotonic() + DRAIN_SECONDS
        while any(c.pending for c in self.clients.values()) and time.monotonic() < deadline:
            for fd, ev in self.poll.poll(100):
                waiting = self.clients.get(fd)
                if waiting is not None and ev & _OUT:
                    self._flush(waiting)
                elif waiting is not None and ev & _GONE:
                    self.drop(waiting)
        for client in list(self.clients.values()):
            self.drop(client)
