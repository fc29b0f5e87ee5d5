"""The daemon's side of a conversation with a supervisor (cnm.runtime.wire): requests
to the template (start, exec) and their answer, and attach connections.

A `Session` is one connected socket. Blocking use:

    s = runtime.attach(cid, "oe")            # HELLO read; s.log_position = (inode, offset)
    while (frame := s.read_frame()) is not None:
        kind, time_ns, payload = frame       # wire.STDOUT/STDERR, then wire.EXIT
    s.close()

On an asyncio loop, take the frames already read (`buffered()`: what arrived with the
HELLO or OK), then the socket, feeding what arrives to the session's decoder:

    s.sock.setblocking(False)
    frames = s.buffered()
    while True:
        for kind, t, payload in frames: ...
        frames = s.feed(await loop.sock_recv(s.sock, 65536))
    await loop.sock_sendall(s.sock, wire.in_frame(wire.STDIN, data))

An output frame's first 8 bytes are Docker's multiplexed-stream header: forward
`wire.OUT_HEADER.pack(kind, len(payload), 0)[:8] + payload` (or `raw[:8] + payload`).
"""

from __future__ import annotations

import marshal
import os
import socket
import time

from cnm import errors
from cnm.errors import Conflict, InternalError, Unavailable
from cnm.runtime import linux, wire
from cnm.runtime.template import Template

ATTACH_SOCK = "attach.sock"


class Session:
    def __init__(
        self,
        sock: socket.socket,
        supervisor_pid: int | None = None,
        pid: int | None = None,
        log_position: tuple[int, int] | None = None,
        decoder: wire.OutDecoder | None = None,
    ) -> None:
        self.sock = sock
        self.supervisor_pid = supervisor_pid
        self.pid = pid  # the started or exec'd process (host pid)
        self.log_position = log_position  # (log file inode, offset) when the session began
        self.exit_code: int | None = None  # set when the EXIT frame arrives
        self.decoder = decoder or wire.OutDecoder()
        self._frames: list[tuple[int, int, bytes]] = []

    def fileno(self) -> int:
        return self.sock.fileno()

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        """Decode bytes read from the socket; EXIT sets `exit_code`."""
        frames = self.decoder.feed(data)
        for kind, _, payload in frames:
            if kind == wire.EXIT:
                self.exit_code = int(payload or b"-1")
        return frames

    def buffered(self) -> list[tuple[int, int, bytes]]:
        """Frames already read from the socket but not yet returned (taken: they are
        not returned again)."""
        frames, self._frames = self._frames, []
        return frames

    def read_frame(self, timeout: float | None = None) -> tuple[int, int, bytes] | None:
        """The next frame (blocking; Unavailable after `timeout` seconds), None at EOF."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._frames:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not linux.readable(self.sock.fileno(), left):
                    raise Unavailable("the container's supervisor did not answer in time")
            try:
                data = self.sock.recv(65536)
            except ConnectionError:
                data = b""
            if not data:
                return None
            self._frames += self.feed(data)
        return self._frames.pop(0)

    def send_stdin(self, data: bytes) -> None:
        self.sock.sendall(wire.in_frame(wire.STDIN, data))

    def close_stdin(self) -> None:
        """The process's stdin ends (with Docker's StdinOnce, or for an exec)."""
        self.sock.sendall(wire.in_frame(wire.CLOSE))

    def resize(self, rows: int, cols: int) -> None:
        self.sock.sendall(wire.in_frame(wire.RESIZE, b"%d %d" % (rows, cols)))

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _raise(payload: bytes) -> None:
    name, _, message = payload.decode(errors="replace").partition(" ")
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, errors.CNMError)):
        cls = InternalError
    raise cls(message)


def request(template: Template, msg: bytes, dirfd: int | None, cfg: dict, timeout: float) -> Session | None:
    """Send a request (operation + options, and the CONFIG frame) to a new supervisor;
    return the session once it answered OK (raise its ERROR as the cnm.errors class it
    names). None if the template died with the request (EOF before any answer: no
    process holds the other end). On a timeout the template is killed (a stuck one
    would fork the request late) and Unavailable raised."""
    sock = template.request(msg, dirfd)
    try:
        try:
            sock.sendall(wire.in_frame(wire.CONFIG, marshal.dumps(cfg)))
        except (BrokenPipeError, ConnectionError):
            sock.close()
            return None
        session = Session(sock)
        try:
            frame = session.read_frame(timeout)
        except Unavailable:
            template.kill()
            raise Unavailable(f"the process did not start within {timeout:.0f}s") from None
        if frame is None:
            sock.close()
            return None
        kind, _, payload = frame
        if kind == wire.ERROR:
            _raise(payload)
        if kind != wire.OK:
            raise InternalError(f"unexpected answer from a supervisor: frame kind {kind}")
        pids = payload.split()
        session.supervisor_pid = int(pids[0])
        session.pid = int(pids[1]) if len(pids) > 1 else None
        return session
    except BaseException:
        sock.close()
        raise


def connect(cdir: str, streams: str, timeout: float = 10.0) -> Session:
    """Attach to a running container's supervisor: `streams` letters "i" (write its
    stdin), "o" (stdout), "e" (stderr); "" for control only (resize, close stdin).
    Conflict if it is not running."""
    dirfd = os.open(cdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # Through the directory fd: a socket path may not exceed 108 bytes.
        sock.connect(f"/proc/self/fd/{dirfd}/{ATTACH_SOCK}")
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        raise Conflict(f"container {os.path.basename(cdir)} is not running") from None
    except BaseException:
        sock.close()
        raise
    finally:
        os.close(dirfd)
    try:
        sock.sendall(wire.in_frame(wire.ATTACH, streams.encode()))
        session = Session(sock)
        frame = session.read_frame(timeout)
    except (BrokenPipeError, ConnectionError):
        frame = None
    except BaseException:
        sock.close()
        raise
    if frame is None or frame[0] != wire.HELLO:
        sock.close()
        raise Conflict(f"container {os.path.basename(cdir)} is not running")
    pid, inode, offset = (int(x) for x in frame[2].split())
    session.supervisor_pid = pid
    session.log_position = (inode, offset) if inode else None
    return session
