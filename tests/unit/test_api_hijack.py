"""The connection hijack (attach, exec start) on a real unix socket: 101 UPGRADED, raw
bytes both ways, output after the client's half-close, EOF at the end."""

from __future__ import annotations

import shutil
import socket
import tempfile
from pathlib import Path

import pytest
from aiohttp import web

from cnm.api.common import Route
from cnm.api.hijack import MULTIPLEXED, hijack, wants_upgrade
from cnm.api.server import make_app
from cnm.api.testing import FakeController, ServerThread


async def echo_upper(request: web.Request) -> web.StreamResponse:
    """Echoes the client's bytes upper-cased; after its half-close, says "bye"."""
    assert wants_upgrade(request)
    conn = await hijack(request, MULTIPLEXED)
    while data := await conn.read():
        await conn.write(data.upper())
    await conn.write(b"bye")
    await conn.close()
    return conn.response


@pytest.fixture
def sock_path():
    d = tempfile.mkdtemp(prefix="cnm-hj-", dir="/tmp")
    app = make_app(FakeController(), extra_routes=[Route("POST", "/echo", echo_upper)])
    with ServerThread(app, Path(d) / "s.sock") as srv:
        yield str(srv.path)
    shutil.rmtree(d, ignore_errors=True)


def read_headers(s: socket.socket) -> tuple[bytes, bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        assert chunk, f"connection closed in the headers: {buf!r}"
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def read_all(s: socket.socket, have: bytes = b"") -> bytes:
    s.settimeout(5)
    while chunk := s.recv(4096):
        have += chunk
    return have


def test_upgrade_duplex_and_half_close(sock_path):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    s.sendall(
        b"POST /v1.43/echo HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n"
    )
    head, rest = read_headers(s)
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 101 UPGRADED"
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert headers["upgrade"] == "tcp" and headers["connection"].lower() == "upgrade"
    assert headers["content-type"] == MULTIPLEXED and "transfer-encoding" not in headers
    s.sendall(b"hello ")
    s.settimeout(5)
    assert rest + s.recv(100) == b"HELLO "
    s.sendall(b"again")
    s.shutdown(socket.SHUT_WR)  # as Docker's CLI does when its stdin ends
    assert read_all(s) == b"AGAINbye"  # output after the half-close still arrives, then EOF
    s.close()
