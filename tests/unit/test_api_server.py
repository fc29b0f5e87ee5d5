"""The API server on a real unix socket (in a background thread) with a fake controller,
driven by our own client and by raw HTTP through the transport."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import tempfile
import threading
from pathlib import Path

import pytest

from cnm.api.client import APIClient
from cnm.api.server import make_app
from cnm.api.testing import FakeController, ServerThread
from cnm.api.transport import UnixSocketTransport
from cnm.errors import Conflict, Forbidden, InternalError, InvalidParameter, NotFound
from cnm.model import Network


@pytest.fixture
def sockdir():
    # Short path: AF_UNIX paths are limited to 108 bytes, pytest's tmp_path can be long.
    d = tempfile.mkdtemp(prefix="cnm-api-", dir="/tmp")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def ctl():
    return FakeController()


@pytest.fixture
def server(ctl, sockdir):
    with ServerThread(make_app(ctl), sockdir / "cnm.sock") as srv:
        yield srv


@pytest.fixture
def client(server):
    return APIClient(server.host)


@pytest.fixture
def raw(server):
    return UnixSocketTransport(str(server.path))


def _json(answer):
    status, headers, data = answer
    assert headers["content-type"].startswith("application/json")
    return status, json.loads(data)


def test_socket_is_0660(server):
    assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o660
    assert stat.S_ISSOCK(os.stat(server.path).st_mode)


def test_ping_and_version(client, raw):
    assert client.ping() == "OK"
    status, headers, data = raw.request("GET", "/_ping")
    assert (status, data, headers["api-version"]) == (200, b"OK", "1.43")
    info = client.version()
    assert info["ApiVersion"] == "1.43" and info["Os"] == "linux" and "Version" in info


def test_create_inspect_list_remove_roundtrip(client, raw, ctl):
    status, body = _json(
        raw.request(
            "POST",
            "/networks/create",
            {
                "Name": "front",
                "Labels": {"team": "a"},
                "IPAM": {"Config": [{"Subnet": "10.5.0.0/16", "Gateway": "10.5.0.254"}]},
            },
        )
    )
    assert status == 201 and body["Warning"] == "" and len(body["Id"]) == 64
    net_id = body["Id"]
    assert net_id in ctl.networks  # the controller really got it

    out = client.network_inspect("front")
    assert out["Id"] == net_id and out["Name"] == "front" and out["Labels"] == {"team": "a"}
    assert out["IPAM"]["Config"] == [{"Subnet": "10.5.0.0/16", "Gateway": "10.5.0.254"}]
    assert client.network_inspect(net_id[:10])["Name"] == "front"

    names = {n["Name"] for n in client.networks()}
    assert names == {"bridge", "host", "none", "front"}

    status, headers, data = raw.request("DELETE", f"/networks/{net_id}")
    assert (status, data) == (204, b"")
    assert net_id not in ctl.networks
    with pytest.raises(NotFound, match="network front not found"):
        client.network_inspect("front")


def test_inspect_includes_containers(client, ctl):
    net_id = client.network_create({"Name": "web"})
    ep = {
        "Name": "c1",
        "EndpointID": "e" * 64,
        "MacAddress": "02:42:0a:00:00:02",
        "IPv4Address": "172.18.0.2/16",
        "IPv6Address": "",
    }
    ctl.containers[net_id] = {"c" * 64: ep}
    assert client.network_inspect("web")["Containers"] == {"c" * 64: ep}


def test_version_prefix_is_accepted(raw):
    assert raw.request("GET", "/v1.43/_ping")[0] == 200
    status, body = _json(raw.request("POST", "/v1.41/networks/create", {"Name": "pfx"}))
    assert status == 201
    status, body = _json(raw.request("GET", "/v1.43/networks/pfx"))
    assert status == 200 and body["Name"] == "pfx"
    assert raw.request("DELETE", "/v1.43/networks/pfx")[0] == 204


@pytest.mark.parametrize(
    "method, path, body, status, message",
    [
        ("GET", "/nope", None, 404, "page not found"),
        ("GET", "/v1.43/nope/deeper", None, 404, "page not found"),
        ("PUT", "/networks/create", None, 405, "method not allowed"),
        ("GET", "/networks/missing", None, 404, "network missing not found"),
        ("DELETE", "/networks/bridge", None, 403, "bridge is a pre-defined network and cannot be removed"),
        (
            "POST",
            "/networks/create",
            {"Name": "x", "IPAM": {"Config": [{"Subnet": "10.0.0.0/33"}]}},
            400,
            "invalid subnet 10.0.0.0/33",
        ),
        ("POST", "/networks/create", {"Driver": "bridge"}, 400, "missing field Name: a network needs a name"),
        (
            "POST",
            "/networks/create",
            {"Name": "x", "Internal": "no"},
            400,
            "field Internal must be a boolean, not a string",
        ),
        ("POST", "/networks/create", {"Name": "bridge"}, 409, "network with name bridge already exists"),
        ("GET", "/networks?filters=%7Bnot-json", None, 400, "invalid filters:"),
        ("GET", "/networks?filters=%7B%22colour%22%3A%5B%22red%22%5D%7D", None, 400, "invalid filter 'colour'"),
    ],
)
def test_errors_have_status_and_message(raw, method, path, body, status, message):
    got_status, got = _json(raw.request(method, path, body))
    assert got_status == status
    assert set(got) == {"message"} and got["message"].startswith(message)


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("GET", "/networks/missing", None),  # an error (Docker's CLI unpacks only this type)
        ("GET", "/nope", None),  # aiohttp's own 404, rewritten
        ("POST", "/networks/create", {"Name": "ct"}),  # a success
    ],
)
def test_json_content_type_is_exact(raw, method, path, body):
    _status, headers, _data = raw.request(method, path, body)
    assert headers["content-type"] == "application/json"


def test_malformed_json_body_is_400(server):
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(server.path))
    payload = b'{"Name": "x",'
    s.sendall(
        b"POST /networks/create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload)
    )
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert json.loads(body)["message"].startswith("invalid JSON body:")


def test_ambiguous_prefix_is_400(client, ctl):
    ctl.networks.clear()
    for suffix, name in (("1", "a"), ("2", "b")):
        ctl.networks["ab" + suffix * 62] = Network(id="ab" + suffix * 62, name=name, driver="bridge")
    with pytest.raises(InvalidParameter, match="ambiguous"):
        client.network_inspect("ab")
    assert client.network_inspect("ab1")["Name"] == "a"


def test_unexpected_exception_is_500_and_logged(raw, ctl, caplog):
    ctl.fail["list_networks"] = RuntimeError("disk on fire")
    with caplog.at_level("ERROR", logger="cnm.api"):
        status, body = _json(raw.request("GET", "/networks"))
    assert status == 500 and "disk on fire" in body["message"]
    assert any(r.exc_info and "GET /networks failed" in r.getMessage() for r in caplog.records)


def test_error_categories_survive_the_round_trip(client, ctl):
    for exc, cls in (
        (Conflict("network x has active endpoints"), Conflict),
        (Forbidden("no"), Forbidden),
        (InternalError("bug"), InternalError),
    ):
        ctl.fail["delete_network"] = exc
        with pytest.raises(cls) as err:
            client.network_remove("whatever")
        assert err.value.message == exc.message


def test_remove_with_endpoints_is_409(client, ctl, raw):
    net_id = client.network_create({"Name": "busy"})
    ctl.containers[net_id] = {"c1": {"Name": "c1"}}
    status, body = _json(raw.request("DELETE", "/networks/busy"))
    assert (status, body["message"]) == (409, "network busy has active endpoints")


def test_prune_removes_unused_custom_networks(client, ctl):
    client.network_create({"Name": "unused"})
    busy = client.network_create({"Name": "busy"})
    ctl.containers[busy] = {"c1": {"Name": "c1"}}
    assert client.networks_prune() == ["unused"]
    assert {n["Name"] for n in client.networks()} == {"bridge", "host", "none", "busy"}
    assert client.networks_prune() == []


def test_filters(client):
    client.network_create({"Name": "front-a", "Labels": {"tier": "web"}})
    client.network_create({"Name": "back-b", "Driver": "overlay"})

    def names(filters):
        return sorted(n["Name"] for n in client.networks(filters))

    assert names({"driver": ["overlay"]}) == ["back-b"]
    assert names({"driver": ["overlay", "null"]}) == ["back-b", "none"]
    assert names({"name": ["front"]}) == ["front-a"]
    assert names({"name": ["-"], "driver": ["bridge"]}) == ["front-a"]
    assert names({"scope": ["global"]}) == []
    assert names({"type": ["custom"]}) == ["back-b", "front-a"]
    assert names({"label": ["tier"]}) == ["front-a"] == names({"label": ["tier=web"]})
    assert names({"label": ["tier=db"]}) == []
    some_id = client.network_inspect("back-b")["Id"]
    assert names({"id": [some_id[:8]]}) == ["back-b"]
    # the legacy map form {"driver": {"overlay": true}}
    assert sorted(
        n["Name"]
        for n in client.request("GET", "/networks", query={"filters": json.dumps({"driver": {"overlay": True}})})
    ) == ["back-b"]


def test_list_has_empty_containers(client, ctl):
    net_id = client.network_create({"Name": "x"})
    ctl.containers[net_id] = {"c1": {"Name": "c1"}}
    listed = next(n for n in client.networks() if n["Name"] == "x")
    assert listed["Containers"] == {}


def test_controller_calls_run_off_the_event_loop(client, ctl):
    seen = []
    orig = ctl.list_networks

    def spy():
        seen.append(threading.current_thread().name)
        return orig()

    ctl.list_networks = spy
    client.networks()
    assert seen and seen[0].startswith("cnm-api")


def test_stale_socket_is_replaced_and_live_one_refused(sockdir, ctl):
    path = sockdir / "cnm.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: a crashed daemon's leftover
    with ServerThread(make_app(ctl), path) as srv:
        assert APIClient(srv.host).ping() == "OK"
        with pytest.raises(Conflict, match=f"another daemon is listening on {path}"):
            ServerThread(make_app(FakeController()), path).start()
        assert APIClient(srv.host).ping() == "OK"  # the live one is untouched
    assert not path.exists()  # removed on shutdown


def test_regular_file_in_the_way_is_refused(sockdir, ctl):
    path = sockdir / "cnm.sock"
    path.write_text("not a socket")
    with pytest.raises(Conflict, match="is not a socket"):
        ServerThread(make_app(ctl), path).start()
    assert path.read_text() == "not a socket"
