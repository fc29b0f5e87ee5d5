"""APIClient over the in-memory transport, and the unix transport's failure modes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from cnm.api.client import APIClient, socket_path
from cnm.api.transport import InMemoryTransport, UnixSocketTransport
from cnm.errors import Conflict, Forbidden, InternalError, InvalidParameter, NotFound, Unavailable


def _json(status: int, body) -> tuple[int, dict, bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(body).encode()


def test_socket_path_parsing():
    assert socket_path("unix:///run/cnm/cnm.sock") == "/run/cnm/cnm.sock"
    assert socket_path("/tmp/x.sock") == "/tmp/x.sock"
    with pytest.raises(InvalidParameter, match="unsupported host 'tcp://1.2.3.4:2375'"):
        socket_path("tcp://1.2.3.4:2375")
    with pytest.raises(InvalidParameter, match="must be absolute"):
        socket_path("unix://relative.sock")


def test_methods_send_dockers_requests_and_decode_answers():
    def handler(method, path, body):
        if (method, path) == ("POST", "/networks/create"):
            return _json(201, {"Id": "f" * 64, "Warning": ""})
        if method == "GET" and path.startswith("/networks?"):
            return _json(200, [{"Name": "a"}])
        if (method, path) == ("GET", "/networks/my%2Fnet"):
            return _json(200, {"Name": "my/net"})
        if (method, path) == ("DELETE", "/networks/a"):
            return 204, {}, b""
        if (method, path) == ("POST", "/networks/prune"):
            return _json(200, {"NetworksDeleted": None})
        if path == "/_ping":
            return 200, {"Content-Type": "text/plain; charset=utf-8"}, b"OK"
        return _json(404, {"message": "page not found"})

    t = InMemoryTransport(handler)
    c = APIClient(transport=t)
    assert c.network_create({"Name": "a"}) == "f" * 64
    assert t.calls[-1] == ("POST", "/networks/create", {"Name": "a"})
    assert c.networks({"driver": ["bridge"]}) == [{"Name": "a"}]
    query = parse_qs(urlsplit(t.calls[-1][1]).query)
    assert json.loads(query["filters"][0]) == {"driver": ["bridge"]}
    assert c.network_inspect("my/net") == {"Name": "my/net"}  # the ref is quoted into one segment
    assert c.network_remove("a") is None
    assert c.networks_prune() == []  # Docker sends null for "none"
    assert c.ping() == "OK"


@pytest.mark.parametrize(
    "status, cls",
    [
        (400, InvalidParameter),
        (403, Forbidden),
        (404, NotFound),
        (409, Conflict),
        (503, Unavailable),
        (500, InternalError),
        (418, InvalidParameter),
        (502, InternalError),
    ],
)
def test_non_2xx_maps_to_the_error_category(status, cls):
    c = APIClient(transport=InMemoryTransport(lambda m, p, b: _json(status, {"message": "the reason"})))
    with pytest.raises(cls) as err:
        c.network_inspect("x")
    assert type(err.value) is cls and err.value.message == "the reason"


def test_error_without_json_body_keeps_the_text_or_status():
    c = APIClient(transport=InMemoryTransport(lambda m, p, b: (500, {}, b"plain failure\n")))
    with pytest.raises(InternalError, match="^plain failure$"):
        c.ping()
    c = APIClient(transport=InMemoryTransport(lambda m, p, b: (404, {}, b"")))
    with pytest.raises(NotFound, match="the daemon answered HTTP 404"):
        c.ping()


def test_malformed_json_answer_is_an_internal_error():
    c = APIClient(transport=InMemoryTransport(lambda m, p, b: (200, {"Content-Type": "application/json"}, b"{")))
    with pytest.raises(InternalError, match="malformed JSON"):
        c.networks()


def test_stream_returns_the_open_response_and_raises_on_error():
    lines = b"one\ntwo\n"
    c = APIClient(transport=InMemoryTransport(lambda m, p, b: (200, {"Content-Type": "text/plain"}, lines)))
    resp = c.request("GET", "/containers/x/logs?follow=1", stream=True)
    assert resp.status == 200 and resp.getheader("content-type") == "text/plain"
    assert [resp.readline(), resp.readline(), resp.readline()] == [b"one\n", b"two\n", b""]
    resp.close()
    c = APIClient(transport=InMemoryTransport(lambda m, p, b: _json(404, {"message": "no such container"})))
    with pytest.raises(NotFound, match="no such container"):
        c.request("GET", "/containers/x/logs", stream=True)


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="cnm-cli-", dir="/tmp")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


def test_missing_socket_says_how_to_start_the_daemon(sockdir):
    path = sockdir / "absent.sock"
    with pytest.raises(Unavailable) as err:
        APIClient(f"unix://{path}").ping()
    assert err.value.message == (
        f"cannot reach the cnm daemon at unix://{path} — is it running? start it with: net daemon --socket {path}"
    )


def test_stale_socket_nobody_listening_is_unavailable(sockdir):
    path = sockdir / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()
    with pytest.raises(Unavailable, match="cannot reach the cnm daemon"):
        APIClient(f"unix://{path}").networks()


@pytest.mark.skipif(os.geteuid() == 0, reason="root bypasses file permissions, so EACCES cannot be provoked")
def test_socket_without_permission_is_forbidden(sockdir):
    path = sockdir / "locked.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.listen()
    os.chmod(path, 0)
    try:
        with pytest.raises(Forbidden, match="permission denied"):
            APIClient(f"unix://{path}").ping()
    finally:
        s.close()


def test_daemon_that_hangs_up_is_unavailable(sockdir):
    path = sockdir / "rude.sock"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen()

    def hang_up():
        conn, _ = srv.accept()
        conn.recv(65536)
        conn.close()

    th = threading.Thread(target=hang_up, daemon=True)
    th.start()
    try:
        with pytest.raises(Unavailable, match=f"cannot talk to the cnm daemon at unix://{path}"):
            UnixSocketTransport(str(path), timeout=5).request("GET", "/_ping")
    finally:
        th.join(5)
        srv.close()
