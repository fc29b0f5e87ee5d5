"""The supervisor's answer to the request that made it (a start, an exec): one socket,
its frames (cnm.runtime.wire), written once. Shared by the supervisor (cnm.runtime.shim)
and the exec supervisor (cnm.runtime.exec_shim)."""

from __future__ import annotations

import os
import time

from cnm.runtime import wire

fd = -1  # the Runtime's socket until the request is answered


def frame(kind: int, payload: bytes) -> None:
    try:
        os.write(fd, wire.out_frame(kind, payload, time.time_ns()))
    except OSError:
        pass  # the caller died; the container still runs and adopt() will find it


def error(kind: str, message: str) -> None:
    """An ERROR frame: the cnm.errors class name and the message, on one line."""
    frame(wire.ERROR, f"{kind} {message}".replace("\n", " ").encode(errors="replace"))


def read_all(pipe: int) -> bytes:
    """Everything until EOF (a child's failure report)."""
    chunks: list[bytes] = []
    while True:
        b = os.read(pipe, 65536)
        if not b:
            return b"".join(chunks)
        chunks.append(b)
