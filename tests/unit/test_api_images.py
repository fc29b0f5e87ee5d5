"""The image routes on a real unix socket over a real ImageService (no root needed),
driven by raw HTTP and by docker-py: streamed bodies, Docker's message shapes, API
versions, paths with slashes, late errors in-stream."""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import shutil
import socket
import tempfile
import threading
from pathlib import Path

import pytest

from cnm.api import images as image_routes
from cnm.api.server import make_app, start_server
from cnm.images.service import ImageService
from cnm.images.store import ImageStore
from tests.unit.image_fixtures import BASE, TOP, Img, docker_save, layer


class _Server:
    def __init__(self, app, path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.path = path
        self.server = asyncio.run_coroutine_threadsafe(start_server(app, path), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class _Conn(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.unix_path)


@pytest.fixture
def api():
    d = Path(tempfile.mkdtemp(prefix="cnm-img-", dir="/tmp"))
    svc = ImageService(ImageStore(str(d / "images")))
    server = _Server(make_app(object(), extra_routes=image_routes.routes(svc)), d / "s.sock")
    try:
        yield svc, str(d / "s.sock")
    finally:
        server.close()
        shutil.rmtree(d, ignore_errors=True)


def call(sock: str, method: str, path: str, body: bytes | None = None, chunked: bool = False):
    conn = _Conn(sock)
    headers = {"Content-Type": "application/x-tar"} if body is not None else {}
    if chunked and body is not None:
        conn.request(
            method,
            path,
            body=iter([body[i : i + 7000] for i in range(0, len(body), 7000)]),
            headers=headers,
            encode_chunked=True,
        )
    else:
        conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, resp.getheader("Content-Type"), data


def messages(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.split(b"\r\n") if line.strip()]


IMG = Img([BASE, TOP], tags=["reg.local:5000/team/app:v1"])


def test_load_streams_a_chunked_body(api):
    svc, sock = api
    status, ctype, data = call(sock, "POST", "/v1.43/images/load?quiet=1", docker_save(IMG), chunked=True)
    assert (status, ctype) == (200, "application/json")
    assert data.endswith(b"\r\n") and messages(data) == [{"stream": "Loaded image: reg.local:5000/team/app:v1\n"}]
    status, _, data = call(sock, "GET", "/images/reg.local:5000/team/app:v1/json")
    assert status == 200 and json.loads(data)["Id"] == IMG.id
    status, _, data = call(sock, "GET", "/images/reg.local:5000/team/app:v1/history")
    assert [r["CreatedBy"] for r in json.loads(data)] == ["layer 1", "layer 0"]


def test_bad_input_is_a_4xx_with_one_message(api):
    svc, sock = api
    status, ctype, data = call(sock, "POST", "/images/load", b"garbage" * 300)
    assert status == 400 and ctype == "application/json" and "not a tar archive" in json.loads(data)["message"]
    status, _, data = call(sock, "GET", "/images/nope/json")
    assert status == 404 and json.loads(data) == {"message": "No such image: nope:latest"}
    status, _, data = call(sock, "POST", "/images/create?fromImage=docker.io/library/alpine&tag=3.19")
    assert status == 503 and json.loads(data)["message"].startswith("cannot pull alpine:3.19: no registry is reachable")
    status, _, data = call(sock, "POST", "/images/create?fromSrc=http://example.com/x.tar")
    assert status == 400 and "URL is not supported" in json.loads(data)["message"]
    status, _, _ = call(sock, "GET", "/images/search?term=x")
    assert status == 503


def test_late_errors_are_reported_in_stream(api, monkeypatch):
    svc, sock = api
    monkeypatch.setattr(image_routes, "STREAM_AFTER", 0.0)
    status, _, data = call(sock, "POST", "/images/load?quiet=0", docker_save(IMG))
    assert status == 200
    msgs = messages(data)
    assert msgs[-1] == {"stream": "Loaded image: reg.local:5000/team/app:v1\n"}
    status, _, data = call(sock, "POST", "/images/load", b"garbage" * 300)
    assert status == 200
    (msg,) = messages(data)
    assert "not a tar archive" in msg["error"] and msg["errorDetail"]["message"] == msg["error"]


def test_import_answers_the_id(api):
    svc, sock = api
    rootfs = layer(("file", "hello", b"hi"))
    status, _, data = call(
        sock, "POST", "/images/create?fromSrc=-&repo=imp&tag=1&changes=CMD%20%5B%22%2Fhello%22%5D", rootfs, chunked=True
    )
    assert status == 200
    (msg,) = messages(data)
    image_id = msg["status"]
    assert svc.store.resolve("imp:1") == image_id and svc.store.config(image_id).cmd() == ["/hello"]


def test_versions_shape_the_answers(api):
    svc, sock = api
    svc.load(io.BytesIO(docker_save(Img([BASE]))))
    old = json.loads(call(sock, "GET", "/v1.41/images/json")[2])
    assert old[0]["RepoTags"] == ["<none>:<none>"] and "VirtualSize" in old[0]
    current = json.loads(call(sock, "GET", "/v1.43/images/json")[2])
    assert current[0]["RepoTags"] == [] and current[0]["VirtualSize"] == current[0]["Size"]
    status, _, data = call(sock, "GET", "/v1.99/images/json")
    assert status == 400 and "too new" in json.loads(data)["message"]
    filtered = json.loads(call(sock, "GET", '/images/json?filters={"dangling":["false"]}')[2])
    assert filtered == []
    svc.tag(svc.list()[0].id, "one", "a")
    svc.tag(svc.list()[0].id, "two", "b")
    (only,) = json.loads(call(sock, "GET", '/images/json?filters={"reference":["two"]}')[2])
    assert only["RepoTags"] == ["two:b"]  # only the names that matched, as moby lists them
    status, _, data = call(sock, "GET", '/images/json?filters={"colour":["red"]}')
    assert status == 400 and "invalid filter 'colour'" in json.loads(data)["message"]


def test_tag_delete_and_save(api):
    svc, sock = api
    svc.load(io.BytesIO(docker_save(IMG)))
    assert call(sock, "POST", "/images/reg.local:5000/team/app:v1/tag?repo=short&tag=x")[0] == 201
    status, _, data = call(sock, "DELETE", "/images/short:x")
    assert status == 200 and json.loads(data) == [{"Untagged": "short:x"}]
    status, ctype, data = call(sock, "GET", "/images/get?names=reg.local:5000/team/app:v1")
    assert status == 200 and ctype == "application/x-tar"
    status, _, data2 = call(sock, "GET", "/images/reg.local:5000/team/app/get")  # every tag of the repo
    assert data2 == data
    status, _, out = call(sock, "DELETE", f"/images/{IMG.id}")
    assert status == 200 and {"Deleted": IMG.id} in json.loads(out)
    status, _, back = call(sock, "POST", "/images/load", data)
    assert messages(back) == [{"stream": "Loaded image: reg.local:5000/team/app:v1\n"}]
    status, _, data = call(sock, "POST", '/images/prune?filters={"dangling":["false"]}')
    assert status == 200 and {"Deleted": IMG.id} in json.loads(data)["ImagesDeleted"]


def test_docker_py_without_root(api):
    docker_py = pytest.importorskip("docker", reason="docker-py is in the test extra: pip install -e '.[test]'")
    svc, sock = api
    client = docker_py.DockerClient(base_url=f"unix://{sock}", version="1.43")
    try:
        (img,) = client.images.load(docker_save(IMG))
        assert img.id == IMG.id and img.tags == ["reg.local:5000/team/app:v1"]
        assert [i.id for i in client.images.list()] == [IMG.id]
        client.images.remove(img.id, force=True)
        assert client.images.list() == []
        out = client.api.import_image_from_data(
            layer(("file", "hi", b"1")), repository="imp", tag="py", changes=['CMD ["/hi"]']
        )
        assert json.loads(out)["status"].startswith("sha256:")
        assert client.images.get("imp:py").attrs["Config"]["Cmd"] == ["/hi"]
    finally:
        client.close()
