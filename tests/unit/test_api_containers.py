"""Container routes on a real unix socket, over a fake ContainerService whose runtime
runs plain child processes (no namespaces, no root): real output, exit codes, signals."""

from __future__ import annotations

import io
import json
import threading
import time
from datetime import datetime

import pytest

from cnm.api.client import APIClient
from cnm.api.rawstream import HEADER, STDERR, STDOUT, encode_frame, iter_frames
from cnm.api.transport import UnixSocketTransport
from cnm.errors import Conflict, Forbidden, InvalidParameter, NotFound


@pytest.fixture
def client(server):
    return APIClient(server.host)


@pytest.fixture
def raw(server):
    return UnixSocketTransport(str(server.path))


def run_ct(client, body: dict) -> str:
    """Docker's run: create, then start."""
    cid = client.container_create(body)
    client.container_start(cid)
    return cid


def sh(script: str, **extra) -> dict:
    return {"Cmd": ["sh", "-c", script], **extra}


def until(predicate, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


# -- the raw stream --------------------------------------------------------------------


def test_frames_round_trip_and_header_layout():
    data = encode_frame(STDOUT, b"hello\n") + encode_frame(STDERR, b"") + encode_frame(STDERR, b"oops")
    assert data[:8] == bytes([1, 0, 0, 0, 0, 0, 0, 6])
    assert list(iter_frames(io.BytesIO(data).read)) == [(1, b"hello\n"), (2, b"oops")]


def test_big_payload_is_split_and_reassembled():
    payload = bytes(range(256)) * 5000
    frames = list(iter_frames(io.BytesIO(encode_frame(STDOUT, payload)).read))
    assert len(frames) == 2 and b"".join(f[1] for f in frames) == payload


def test_truncated_stream_is_an_error():
    data = encode_frame(STDOUT, b"hello")
    with pytest.raises(ValueError, match="truncated"):
        list(iter_frames(io.BytesIO(data[:-1]).read))
    with pytest.raises(ValueError, match="invalid stream"):
        list(iter_frames(io.BytesIO(HEADER.pack(7, 0)).read))


# -- create / inspect / list -------------------------------------------------------------


def test_run_and_inspect_is_docker_shaped(client, service):
    body = sh(
        "echo hi; sleep 30",
        Env=["A=1"],
        Hostname="box",
        HostConfig={"NetworkMode": "bridge", "PortBindings": {"80/tcp": [{"HostPort": ""}]}, "Memory": 64 << 20},
        NetworkingConfig={"EndpointsConfig": {"bridge": {"Aliases": ["web"]}}},
    )
    cid = run_ct(client, {**body, "Name": "web"})
    info = client.container_inspect("web")
    assert info["Id"] == cid and info["Name"] == "/web"
    assert info["State"]["Running"] is True and info["State"]["Pid"] > 0
    assert {k: info["Config"][k] for k in ("Hostname", "Env", "Cmd")} == {
        "Hostname": "box",
        "Env": ["A=1"],
        "Cmd": ["sh", "-c", "echo hi; sleep 30"],
    }
    assert info["HostConfig"]["Memory"] == 64 << 20
    assert info["NetworkSettings"]["Ports"] == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "32768"}]}
    bridge = info["NetworkSettings"]["Networks"]["bridge"]
    assert bridge["IPAddress"] == "172.17.0.2" and bridge["Aliases"] == ["web"]
    assert info["NetworkSettings"]["IPAddress"] == "172.17.0.2"
    assert client.container_inspect(cid[:10])["Id"] == cid


def test_create_answers_201_with_id_and_warnings(raw):
    status, _, data = raw.request("POST", "/containers/create?name=q1", sh("sleep 30"))
    body = json.loads(data)
    assert status == 201 and body["Warnings"] == [] and len(body["Id"]) == 64


@pytest.mark.parametrize(
    "body, message",
    [
        ({}, "no command given"),
        (
            {"Cmd": ["true"], "HostConfig": {"NetworkMode": "host", "PortBindings": {"80/tcp": [{}]}}},
            "published ports need a bridge or user network",
        ),
        ({"Cmd": ["true"], "Env": ["=x"]}, "invalid environment variable"),
    ],
)
def test_create_rejects_bad_bodies(client, body, message):
    with pytest.raises(InvalidParameter, match=message):
        run_ct(client, body)


def test_create_on_a_missing_network_is_not_found(client):
    with pytest.raises(NotFound, match="network nosuch not found"):
        run_ct(client, sh("true", HostConfig={"NetworkMode": "nosuch"}))


def test_duplicate_name_is_a_conflict(client):
    run_ct(client, sh("sleep 30", Name="dup"))
    with pytest.raises(Conflict, match="already in use"):
        run_ct(client, sh("sleep 30", Name="dup"))


def test_list_shows_running_only_unless_all(client):
    run_ct(client, sh("sleep 30", Name="up"))
    done = run_ct(client, sh("exit 0", Name="done"))
    assert client.container_wait(done) == 0
    assert [c["Names"] for c in client.containers()] == [["/up"]]
    everything = {c["Names"][0]: c for c in client.containers(all=True)}
    assert set(everything) == {"/up", "/done"}
    assert everything["/up"]["State"] == "running" and everything["/up"]["Status"].startswith("Up ")
    assert everything["/done"]["Status"].startswith("Exited (0) ")
    assert [c["Names"] for c in client.containers(filters={"status": ["exited"]})] == [["/done"]]
    assert [c["Names"] for c in client.containers(all=True, filters={"name": ["u"]})] == [["/up"]]


def test_list_rejects_unknown_filters(client):
    with pytest.raises(InvalidParameter, match="invalid filter 'colour'"):
        client.containers(filters={"colour": ["red"]})


def test_inspect_unknown_container_is_404(client):
    with pytest.raises(NotFound, match="no such container: ghost"):
        client.container_inspect("ghost")


# -- lifecycle ---------------------------------------------------------------------------


def test_wait_returns_the_exit_code(client):
    cid = run_ct(client, sh("sleep 0.2; exit 7"))
    assert client.container_wait(cid) == 7
    assert client.container_wait(cid) == 7  # already exited


def test_wait_without_exit_fd_polls(client, service):
    service.runtime.exit_fd = None  # a runtime without exit notification
    cid = run_ct(client, sh("sleep 0.1; exit 4"))
    assert client.container_wait(cid) == 4


def test_wait_on_auto_remove_container_still_gets_the_code(client, service):
    cid = run_ct(client, sh("sleep 0.3; exit 9", HostConfig={"AutoRemove": True}))
    assert client.container_wait(cid) == 9
    until(lambda: cid not in {c.id for c in service.list_containers()})


def test_stop_then_exit_code_is_from_sigterm(client, raw):
    cid = run_ct(client, sh("sleep 30", Name="s1"))
    status, _, _ = raw.request("POST", "/containers/s1/stop?t=5")
    assert status == 204
    info = client.container_inspect(cid)
    assert info["State"]["Status"] == "exited" and info["State"]["ExitCode"] == 143
    assert info["NetworkSettings"]["Networks"]["bridge"]["IPAddress"] == ""  # released at stop


def test_kill_with_a_signal_name(client):
    cid = run_ct(client, sh("sleep 30"))
    client.container_kill(cid, "USR1")  # not INT: background shells start children ignoring it
    assert client.container_wait(cid) == 128 + 10


def test_kill_rejects_bad_signals_and_stopped_containers(client):
    cid = run_ct(client, sh("exit 0"))
    with pytest.raises(InvalidParameter, match="invalid signal: NOPE"):
        client.container_kill(cid, "NOPE")
    client.container_wait(cid)
    with pytest.raises(Conflict, match="not running"):
        client.container_kill(cid, "9")


def test_create_does_not_run_and_start_stop_answer_304_when_nothing_changes(client, raw):
    cid = client.container_create(sh("sleep 30", Name="st"))
    info = client.container_inspect(cid)
    assert info["State"]["Status"] == "created" and info["State"]["Running"] is False
    assert raw.request("POST", "/containers/st/stop")[0] == 304  # not running: nothing to stop
    assert raw.request("POST", "/containers/st/start")[0] == 204
    assert raw.request("POST", "/containers/st/start")[0] == 304
    assert client.container_inspect(cid)["State"]["Running"] is True
    assert raw.request("POST", "/containers/st/stop?t=1")[0] == 204
    assert raw.request("POST", "/containers/st/stop")[0] == 304


def test_remove_running_needs_force(client, service):
    cid = run_ct(client, sh("sleep 30", Name="r1"))
    with pytest.raises(Conflict, match="stop it first"):
        client.container_remove("r1")
    client.container_remove("r1", force=True)
    assert cid not in {c.id for c in service.list_containers()}
    with pytest.raises(NotFound):
        client.container_inspect(cid)


# -- logs ----------------------------------------------------------------------------------


def test_logs_without_follow_returns_what_is_there(client):
    cid = run_ct(client, sh("echo out; echo err >&2; exit 0"))
    client.container_wait(cid)
    frames = list(client.container_logs(cid))
    assert (STDOUT, b"out\n") in frames and (STDERR, b"err\n") in frames
    assert list(client.container_logs(cid, stderr=False)) == [(STDOUT, b"out\n")]


def test_logs_follow_streams_until_exit_and_drains(client):
    cid = run_ct(client, sh("for i in 1 2 3; do echo line$i; sleep 0.1; done; echo bye >&2; exit 2"))
    got: dict[int, bytes] = {STDOUT: b"", STDERR: b""}
    arrivals = []
    for stream, data in client.container_logs(cid, follow=True):
        arrivals.append(time.monotonic())
        got[stream] += data
    assert got == {STDOUT: b"line1\nline2\nline3\n", STDERR: b"bye\n"}
    assert arrivals[-1] - arrivals[0] >= 0.15  # streamed as it came, not all at the end
    assert client.container_wait(cid) == 2


def test_logs_media_type_and_no_stream_chosen(raw, client):
    cid = run_ct(client, sh("echo x"))
    client.container_wait(cid)
    status, headers, data = raw.request("GET", f"/containers/{cid}/logs?stdout=1")
    assert status == 200 and headers["content-type"] == "application/vnd.docker.raw-stream"
    assert data == encode_frame(STDOUT, b"x\n")
    status, _, data = raw.request("GET", f"/containers/{cid}/logs?stdout=0&stderr=0")
    assert status == 400 and "at least one stream" in json.loads(data)["message"]


def test_follow_ends_when_the_client_goes_away(client, server, monkeypatch):
    closed = threading.Event()
    from cnm.api import logs

    real_attach = logs._attach

    def attach(service, cid, streams="oe"):
        session = real_attach(service, cid, streams)
        real_close = session.close
        session.close = lambda: (real_close(), closed.set())
        return session

    monkeypatch.setattr(logs, "_attach", attach)
    cid = run_ct(client, sh("sleep 30"))
    resp = UnixSocketTransport(str(server.path)).stream("GET", f"/containers/{cid}/logs?follow=1")
    assert resp.status == 200
    resp.close()
    assert closed.wait(5), "the follow handler kept running after its client left"
    assert client.container_inspect(cid)["State"]["Running"]


def test_logs_tail_timestamps_since_until(raw, client):
    cid = run_ct(client, sh("echo a; echo b; echo c; sleep 0.3; echo d"))
    client.container_wait(cid)
    status, _, data = raw.request("GET", f"/containers/{cid}/logs?stdout=1&tail=2")
    assert status == 200 and data == encode_frame(STDOUT, b"c\n") + encode_frame(STDOUT, b"d\n")
    status, _, data = raw.request("GET", f"/containers/{cid}/logs?stdout=1&tail=all&timestamps=1")
    frames = [f for _, f in iter_frames(io.BytesIO(data).read)]
    stamps = [f.split(b" ", 1)[0].decode() for f in frames]
    assert [f.split(b" ", 1)[1] for f in frames] == [b"a\n", b"b\n", b"c\n", b"d\n"]
    times = [datetime.fromisoformat(t[:26] + "+00:00") for t in stamps]  # RFC 3339, nanoseconds
    assert all(len(t) == 30 and t.endswith("Z") for t in stamps) and times == sorted(times)
    gap = (times[3] - times[2]).total_seconds()
    assert gap >= 0.25
    middle = times[2].timestamp() + gap / 2
    _, _, data = raw.request("GET", f"/containers/{cid}/logs?stdout=1&since={middle:.9f}")
    assert data == encode_frame(STDOUT, b"d\n")
    _, _, data = raw.request("GET", f"/containers/{cid}/logs?stdout=1&until={middle:.9f}")
    assert data == b"".join(encode_frame(STDOUT, x) for x in (b"a\n", b"b\n", b"c\n"))
    status, _, data = raw.request("GET", f"/containers/{cid}/logs?stdout=1&since=yesterday")
    assert status == 400 and "invalid since" in json.loads(data)["message"]


# -- connect / disconnect -----------------------------------------------------------------


def test_connect_and_disconnect(client, service):
    client.network_create({"Name": "back"})
    cid = run_ct(client, sh("sleep 30", Name="c1"))
    client.network_connect("back", "c1", {"IPAMConfig": {"IPv4Address": "172.18.0.50"}, "Aliases": ["db"]})
    nets = client.container_inspect(cid)["NetworkSettings"]["Networks"]
    assert set(nets) == {"bridge", "back"}
    assert nets["back"]["IPAddress"] == "172.18.0.50" and nets["back"]["Aliases"] == ["db"]
    assert cid in client.network_inspect("back")["Containers"]
    with pytest.raises(Conflict, match="already exists in network back"):
        client.network_connect("back", "c1")
    client.network_disconnect("back", "c1", force=True)
    assert set(client.container_inspect(cid)["NetworkSettings"]["Networks"]) == {"bridge"}
    with pytest.raises(NotFound, match="not connected to network back"):
        client.network_disconnect("back", "c1")


def test_connect_errors(client, raw):
    run_ct(client, sh("sleep 30", Name="h1", HostConfig={"NetworkMode": "host"}))
    with pytest.raises(Forbidden):
        client.network_connect("bridge", "h1")
    with pytest.raises(InvalidParameter, match="invalid --ip address"):
        client.network_connect("bridge", "h1", {"IPAMConfig": {"IPv4Address": "nope"}})
    status, _, data = raw.request("POST", "/networks/bridge/connect", {})
    assert status == 400 and "field Container is required" in json.loads(data)["message"]
    status, _, data = raw.request("POST", "/networks/bridge/disconnect", {"Container": "h1", "Force": "yes"})
    assert status == 400 and "Force must be a boolean" in json.loads(data)["message"]


def test_versioned_paths_work(raw, client):
    cid = run_ct(client, sh("sleep 30"))
    status, _, data = raw.request("GET", f"/v1.43/containers/{cid}/json")
    assert status == 200 and json.loads(data)["Id"] == cid


def test_an_attached_auto_remove_container_waits_for_its_attach(client, service):
    """docker run --rm attaches before the start; a run shorter than the attach's first
    look must not be removed (its log with it) before the attach has carried it."""
    cid = client.container_create(sh("echo carried; exit 3", HostConfig={"AutoRemove": True}))
    service.attach_begins(cid)  # as the attach route does before it waits for the start
    try:
        client.container_start(cid)
        until(lambda: service.state_of(cid) is not None and service.state_of(cid).status == "exited")
        service.handle_exit(cid)  # the exit watcher's call; it may already have run
        assert cid in {c.id for c in service.list_containers()}  # held while attached
    finally:
        service.attach_ends(cid)
    assert cid not in {c.id for c in service.list_containers()}  # removed when the attach ended
    assert service.exit_codes[cid] == 3  # kept for a late wait
