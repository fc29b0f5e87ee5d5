"""The unix-socket transport's HTTP reading, byte by byte: answers that arrive in small
pieces, Content-Length, chunked and until-close bodies, line reads with limits."""

from __future__ import annotations

import socket
import threading

import pytest

from cnm.api.transport import _RawResponse, _SocketReader


def feeding(payload: bytes, piece: int):
    """A connected socket whose peer sends `payload` `piece` bytes at a time, then closes."""
    ours, theirs = socket.socketpair()

    def feed():
        for i in range(0, len(payload), piece):
            theirs.sendall(payload[i : i + piece])
        theirs.close()

    threading.Thread(target=feed, daemon=True).start()
    return ours


@pytest.mark.parametrize("piece", [1, 3, 7, 65536])
def test_reader_lines_limits_and_reads_across_pieces(piece):
    r = _SocketReader(feeding(b"first line\nsecond\n" + b"x" * 70000 + b"\nend", piece))
    assert r.readline() == b"first line\n"
    assert r.readline(3) == b"sec"
    assert r.readline(65537) == b"ond\n"
    assert r.read(70001) == b"x" * 70000 + b"\n"
    first = r.read1(10)
    assert first and b"end".startswith(first)
    assert first + b"".join(iter(lambda: r.read1(10), b"")) == b"end"
    assert r.readline() == b"" and r.read(5) == b""


@pytest.mark.parametrize("piece", [1, 5, 65536])
@pytest.mark.parametrize(
    "wire, body",
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello", b"hello"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\nT: 1\r\n\r\n",
            b"hello",
        ),
        (b"HTTP/1.0 200 OK\r\n\r\nuntil the end", b"until the end"),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
    ],
)
def test_responses_in_every_framing(piece, wire, body):
    resp = _RawResponse(feeding(wire, piece))
    assert resp.status in (200, 204) and resp.read() == body
    resp.close()


def test_chunked_lines_span_chunks():
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab\ncd\r\n3\r\nef\n\r\n0\r\n\r\n"
    resp = _RawResponse(feeding(wire, 2))
    assert list(resp) == [b"ab\n", b"cdef\n"]
