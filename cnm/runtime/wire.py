"""The bytes between a supervisor and its clients, and the records of a container's log.

Both sides import this module (the supervisor through the template), so it imports only
`struct` (already loaded by ctypes in the template) and stays small.

Supervisor -> client: frames with a 16-byte header

    kind (u8) | 0 0 0 | payload length (u32, big-endian) | time (u64 ns since the epoch, big-endian)

then the payload. The first 8 bytes of an output frame (kind STDOUT 1 or STDERR 2) are
byte for byte Docker's multiplexed-stream frame header (application/vnd.docker.raw-stream):
the daemon forwards `header[:8] + payload` to a Docker client without re-encoding, and
has the time for `logs --follow --timestamps`. A TTY's output is all STDOUT.

    HELLO  first frame on every connection: b"<supervisor pid> <log inode> <log offset>"
           (where the log file stood when the connection was taken: a follower reads the
           files up to there, then takes the frames)
    OK     a start or exec went through: b"<supervisor pid> <process pid>"; or a RESIZE
           was applied (empty)
    ERROR  it did not: b"<cnm.errors class name> <message>"
    EXIT   the process ended: b"<exit code>"; the supervisor closes the connection after it

Client -> supervisor: frames with an 8-byte header (kind, 0 0 0, length) and a payload.

    ATTACH  the first frame on an attach socket connection: which streams, as letters:
            "i" stdin (the client may write it), "o" stdout, "e" stderr
    STDIN   bytes for the process's stdin (a pipe, or the TTY)
    CLOSE   the client's input ended (half-close does the same)
    RESIZE  b"<rows> <columns>" for the TTY
    CONFIG  the first frame of a start or exec request: its configuration (marshal)

Log file: one record per read from the container, the supervisor->client header and
payload followed by the payload length again (u32, big-endian), so the file is read
backwards (`--tail`) as easily as forwards. A record is written with one write(2) on an
O_APPEND file: a reader sees whole records, or a last one still being written (shorter
than its header says: wait or stop there).
"""

from __future__ import annotations

import struct

STDIN, STDOUT, STDERR = 0, 1, 2
HELLO, OK, ERROR, EXIT = 0x10, 0x11, 0x12, 0x13
ATTACH, CLOSE, RESIZE, CONFIG = 0x20, 0x21, 0x22, 0x23

OUT_HEADER = struct.Struct(">BxxxIQ")  # supervisor -> client, and a log record's head
IN_HEADER = struct.Struct(">BxxxI")  # client -> supervisor
TRAILER = struct.Struct(">I")  # a log record's tail
MAX_PAYLOAD = 1 << 20  # a client frame bigger than this is a protocol error


def out_frame(kind: int, payload: bytes, time_ns: int) -> bytes:
    return OUT_HEADER.pack(kind, len(payload), time_ns) + payload


def in_frame(kind: int, payload: bytes = b"") -> bytes:
    return IN_HEADER.pack(kind, len(payload)) + payload


class OutDecoder:
    """Feeds on supervisor->client bytes; yields (kind, time_ns, payload) per whole frame."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        self._buf += data
        out = []
        size = OUT_HEADER.size
        while len(self._buf) >= size:
            kind, length, t = OUT_HEADER.unpack_from(self._buf)
            if len(self._buf) < size + length:
                break
            out.append((kind, t, bytes(self._buf[size : size + length])))
            del self._buf[: size + length]
        return out

    @property
    def pending(self) -> int:
        """Bytes held back: a frame not yet whole."""
        return len(self._buf)
