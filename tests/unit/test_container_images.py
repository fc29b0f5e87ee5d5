"""Containers from images, through the real ContainerService over a FakeHost with a
real image store (no root): what the runtime is asked to run (lower dirs, merged
Env/Cmd/Entrypoint/WorkingDir/User), the store's mounts, Docker's rmi rules with a
container, removal releasing the layers, and the host-filesystem mode kept."""

from __future__ import annotations

import io
import os

import pytest

from cnm.container_requests import ContainerCreate
from cnm.errors import Conflict, InvalidParameter, NotFound
from cnm.images.service import ImageService
from cnm.images.store import ImageStore
from tests.unit.fakehost import FakeHost
from tests.unit.image_fixtures import BASE, TOP, Img, docker_save

APP = Img(
    [BASE, TOP],
    tags=["app:1"],
    cfg={
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ["sleep 30"],
        "Env": ["PATH=/usr/bin:/bin", "MODE=prod"],
        "WorkingDir": "/srv",
        "User": "nobody",
        "Labels": {"tier": "web"},
    },
)


@pytest.fixture
def host(tmp_path):
    store = ImageStore(str(tmp_path / "images"))
    h = FakeHost(images=store)
    h.image_service = ImageService(store, running=lambda cid: h.containers.is_running(h.containers.get(cid)))
    h.image_service.load(io.BytesIO(docker_save(APP)))
    yield h
    h.close()


def create(host: FakeHost, name: str, **kw) -> object:
    return host.containers.run(ContainerCreate(argv=kw.pop("argv", []), name=name, network_mode="none", **kw))


def test_a_container_runs_on_its_image(host):
    ct = create(host, "web", image="app:1", env={"MODE": "dev"})
    spec = host.runtime.specs[ct.id]
    store: ImageStore = host.containers.images
    assert spec.rootfs == store.lowers_of(ct.id) and len(spec.rootfs) == 2
    assert all(os.path.isdir(d) for d in spec.rootfs)
    assert spec.argv == ["/bin/sh", "-c", "sleep 30"]
    assert spec.env == {"PATH": "/usr/bin:/bin", "MODE": "dev"}
    assert (spec.workdir, spec.user) == ("/srv", "nobody")
    assert (ct.image, ct.image_id, ct.labels) == ("app:1", APP.id, {"tier": "web"})
    assert store.mounts() == {ct.id: APP.id}


def test_the_request_overrides_the_image(host):
    ct = create(host, "ov", image="app:1", argv=["echo hi"], workdir="/tmp", user="0")
    spec = host.runtime.specs[ct.id]
    assert spec.argv == ["/bin/sh", "-c", "echo hi"] and (spec.workdir, spec.user) == ("/tmp", "0")
    ct2 = create(host, "ep", image=APP.id[7:19], argv=["30"], entrypoint=["sleep"])
    assert host.runtime.specs[ct2.id].argv == ["sleep", "30"]


def test_a_missing_image_is_a_404_and_leaves_nothing(host):
    with pytest.raises(NotFound, match="No such image: nope:latest"):
        create(host, "x1", image="nope")
    assert host.containers.list_containers() == [] and host.containers.images.mounts() == {}


def test_rmi_with_containers_follows_docker(host):
    ct = create(host, "web", image="app:1")
    images = host.image_service
    with pytest.raises(Conflict, match=f"container {ct.id[:12]} is using its referenced image"):
        images.delete("app:1")
    with pytest.raises(Conflict, match="cannot be forced.*running container"):
        images.delete(APP.id, force=True)
    host.containers.stop(ct.id, 1)
    assert images.delete(APP.id, force=True)[-1] == {"Deleted": APP.id}  # a stopped one: with -f
    layers = host.containers.images.lowers_of(ct.id)
    assert all(os.path.isdir(d) for d in layers)  # its layers stay for it
    host.containers.start(ct.id)  # and it starts again
    assert host.runtime.specs[ct.id].rootfs == layers
    host.containers.remove(ct.id, force=True)
    assert host.containers.images.mounts() == {}
    assert not any(os.path.isdir(d) for d in layers)  # gone with its last user


def test_remove_releases_the_mount_and_restart_reconciles(host):
    ct = create(host, "gone", image="app:1")
    host.containers.remove(ct.id, force=True)
    assert host.containers.images.mounts() == {}
    ct2 = create(host, "kept", image="app:1")
    host.containers.images.mount("crashed-half-way", APP.id)
    again = host.restarted()
    assert set(again.containers.images.mounts()) == {ct2.id}


def test_host_filesystem_mode_stays(host):
    ct = create(host, "hostfs", argv=["/bin/sh", "-c", "sleep 30"])
    spec = host.runtime.specs[ct.id]
    assert spec.rootfs is None and spec.argv == ["/bin/sh", "-c", "sleep 30"] and ct.image_id == ""
    host.image_service.import_image(io.BytesIO(BASE), "bare", "1")  # no CMD, no ENTRYPOINT
    with pytest.raises(InvalidParameter, match="no command specified"):
        create(host, "bare", image="bare:1")
    assert [c.name for c in host.containers.list_containers()] == ["hostfs"]
