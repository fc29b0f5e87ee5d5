"""Docker's multiplexed log stream (`application/vnd.docker.raw-stream`). Pure, stdlib.

Each frame is an 8-byte header — stream (1 stdout, 2 stderr), three zero bytes, the
payload size as a big-endian uint32 — then the payload. Used by the daemon to send
`GET /containers/{id}/logs` and by the client to read it.
"""

from __future__ import annotations

import struct

TYPE_CHECKING = False  # typing stays out of the CLI's start (~4 ms); type checkers see True
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

MEDIA_TYPE = "application/vnd.docker.raw-stream"
STDIN, STDOUT, STDERR = 0, 1, 2
HEADER = struct.Struct(">BxxxI")
MAX_FRAME = 1 << 20  # what one frame carries at most; bigger data is split


def encode_frame(stream: int, data: bytes) -> bytes:
    """One or more frames carrying `data` on `stream` (b"" for empty data)."""
    if stream not in (STDIN, STDOUT, STDERR):
        raise ValueError(f"invalid stream {stream}")
    return b"".join(
        HEADER.pack(stream, len(data[i : i + MAX_FRAME])) + data[i : i + MAX_FRAME]
        for i in range(0, len(data), MAX_FRAME)
    )


def _read_exactly(read: Callable[[int], bytes], n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = read(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def iter_frames(read: Callable[[int], bytes]) -> Iterator[tuple[int, bytes]]:
    """(stream, payload) for each frame read with `read(n)` until the end of the body.
    Raises ValueError on a truncated or malformed frame."""
    while True:
        head = _read_exactly(read, HEADER.size)
        if not head:
            return
        if len(head) < HEADER.size:
            raise ValueError("truncated frame header in the log stream")
        stream, size = HEADER.unpack(head)
        if stream not in (STDIN, STDOUT, STDERR):
            raise ValueError(f"invalid stream {stream} in the log stream")
        payload = _read_exactly(read, size)
        if len(payload) < size:
            raise ValueError("truncated frame in the log stream")
        yield stream, payload
