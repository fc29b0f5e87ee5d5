"""Docker's own clients drive our image API: the docker CLI (Debian's 20.10 and, where
installed, a newer one) and docker-py, against one daemon in a throwaway namespace."""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT, Daemon, sh
from tests.unit.image_fixtures import BASE, OTHER_TOP, TOP, Img, docker_save, layer, oci_layout

BUSYBOX_TAR = ROOT / "build" / "images" / "busybox.tar"
CLIS = [p for p in ("/usr/bin/docker", "/usr/local/bin/docker") if os.path.exists(p)]


def busybox_tar() -> Path:
    """The set-up's image (scripts/setup.sh builds it; built here if a test runs first)."""
    if not BUSYBOX_TAR.exists():
        sh(str(Path(os.sys.executable)), "-m", "cnm.images.busybox", str(BUSYBOX_TAR))
    return BUSYBOX_TAR


@pytest.fixture(scope="module")
def dmn(tmp_path_factory):
    ns = f"cnmt-{secrets.token_hex(4)}"
    sh("ip", "netns", "add", ns)
    base = tmp_path_factory.mktemp("images")
    d = Daemon(ns=ns, root=base / "root", run_dir=base / "run", sock=base / "run" / "cnm.sock", log=base / "daemon.log")
    try:
        yield d.start()
    finally:
        d.teardown()
        sh("ip", "netns", "del", ns, check=False)


def docker(
    d: Daemon, cli: str, *args: str, input: bytes | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "HOME": str(d.root.parent), "DOCKER_CONFIG": str(d.root.parent / "dockercfg")}
    r = subprocess.run([cli, "-H", d.host, *args], capture_output=True, input=input, timeout=120, env=env)
    if check and r.returncode != 0:
        raise AssertionError(f"{cli} {' '.join(args)} failed ({r.returncode}): {r.stderr.decode()}{r.stdout.decode()}")
    return r


def out(r: subprocess.CompletedProcess) -> str:
    return r.stdout.decode()


def err(r: subprocess.CompletedProcess) -> str:
    return r.stderr.decode()


def layers_on_disk(d: Daemon) -> int:
    return len(os.listdir(d.root / "images" / "layers"))


@pytest.mark.parametrize("cli", CLIS)
def test_docker_cli_load_inspect_history_tag_rmi(dmn, cli):
    r = docker(dmn, cli, "load", "-i", str(busybox_tar()))
    assert out(r).strip() == "Loaded image: busybox:latest"
    ls = docker(dmn, cli, "images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}")
    assert "busybox:latest " in out(ls)
    inspect = json.loads(out(docker(dmn, cli, "image", "inspect", "busybox")))[0]
    assert inspect["Id"].startswith("sha256:") and inspect["RepoTags"] == ["busybox:latest"]
    assert inspect["Config"]["Cmd"] == ["sh"] and inspect["Os"] == "linux" and inspect["Size"] > 1_000_000
    assert inspect["RootFS"]["Type"] == "layers" and len(inspect["RootFS"]["Layers"]) == 1
    hist = out(docker(dmn, cli, "history", "--no-trunc", "--format", "{{.ID}}|{{.CreatedBy}}", "busybox"))
    rows = hist.strip().splitlines()
    assert rows[0] == f'{inspect["Id"]}|CMD ["sh"]' and rows[1].startswith("<missing>|cnm.images.busybox")
    docker(dmn, cli, "tag", "busybox", "localhost:5000/team/bb:v1")
    assert json.loads(out(docker(dmn, cli, "image", "inspect", "localhost:5000/team/bb:v1")))[0]["Id"] == inspect["Id"]
    assert out(docker(dmn, cli, "rmi", "localhost:5000/team/bb:v1")).strip() == "Untagged: localhost:5000/team/bb:v1"
    missing = docker(dmn, cli, "rmi", "nosuchimage", check=False)
    assert missing.returncode != 0 and "No such image: nosuchimage" in err(missing)  # 20.10 rewrites 404s
    assert "{" not in err(missing)  # one line, not raw JSON


@pytest.mark.parametrize("cli", CLIS)
def test_docker_cli_pull_says_no_registry(dmn, cli):
    r = docker(dmn, cli, "pull", "alpine:3.19", check=False)
    assert r.returncode != 0
    lines = [line for line in err(r).splitlines() if line.strip()]
    assert lines[-1].startswith("Error response from daemon: cannot pull alpine:3.19: no registry is reachable")
    assert "docker load -i FILE" in lines[-1]


@pytest.mark.parametrize("cli", CLIS)
def test_docker_cli_import_with_changes(dmn, cli):
    rootfs = layer(("dir", "app"), ("file", "app/run", b"#!/bin/sh\necho hi\n", 0o755))
    r = docker(
        dmn,
        cli,
        "import",
        "-c",
        'CMD ["/app/run"]',
        "-c",
        "ENV MODE=test",
        "-c",
        "WORKDIR /app",
        "-m",
        "a test import",
        "-",
        "imported:v1",
        input=rootfs,
    )
    image_id = out(r).strip()
    assert image_id.startswith("sha256:")
    cfg = json.loads(out(docker(dmn, cli, "image", "inspect", "imported:v1")))[0]
    assert cfg["Id"] == image_id and cfg["Comment"] == "a test import"
    assert cfg["Config"]["Cmd"] == ["/app/run"] and cfg["Config"]["Env"] == ["MODE=test"]
    assert cfg["Config"]["WorkingDir"] == "/app"
    bad = docker(dmn, cli, "import", "-c", "RUN rm -rf /", "-", "bad:1", input=rootfs, check=False)
    assert bad.returncode != 0 and "RUN is not a valid change command" in err(bad)
    docker(dmn, cli, "rmi", "imported:v1")


@pytest.mark.parametrize("cli", CLIS)
def test_docker_cli_save_and_load_round_trip(dmn, cli, tmp_path):
    docker(dmn, cli, "load", "-i", str(busybox_tar()))
    image_id = json.loads(out(docker(dmn, cli, "image", "inspect", "busybox")))[0]["Id"]
    saved = tmp_path / "saved.tar"
    docker(dmn, cli, "save", "-o", str(saved), "busybox")
    with tarfile.open(saved) as tf:
        names = set(tf.getnames())
    assert {"index.json", "manifest.json", "oci-layout"} <= names
    docker(dmn, cli, "tag", "busybox", "keep:1")  # keeps the layer; the reload must not re-extract
    docker(dmn, cli, "rmi", "busybox")
    assert out(docker(dmn, cli, "load", "-i", str(saved))).strip() == "Loaded image: busybox:latest"
    assert json.loads(out(docker(dmn, cli, "image", "inspect", "busybox")))[0]["Id"] == image_id
    docker(dmn, cli, "rmi", "keep:1")


def test_shared_layers_through_the_cli(dmn):
    cli = CLIS[0]
    before = layers_on_disk(dmn)
    a, b = Img([BASE, TOP], tags=["shared-a:1"]), Img([BASE, OTHER_TOP], tags=["shared-b:1"])
    docker(dmn, cli, "load", input=docker_save(a))
    docker(dmn, cli, "load", input=oci_layout(b))
    assert layers_on_disk(dmn) == before + 3  # BASE stored once
    out_a = out(docker(dmn, cli, "rmi", "shared-a:1"))
    assert "Deleted: " + a.id in out_a
    assert layers_on_disk(dmn) == before + 2  # BASE stays for shared-b
    docker(dmn, cli, "rmi", "shared-b:1")
    assert layers_on_disk(dmn) == before


def test_bad_archive_is_one_line_and_leaves_nothing(dmn):
    cli = CLIS[0]
    before = (layers_on_disk(dmn), out(docker(dmn, cli, "images", "-q")))
    evil = docker_save(Img([layer(("symlink", "x", "/etc"), ("file", "x/pwned", b"1"))], tags=["evil:1"]))
    r = docker(dmn, cli, "load", input=evil, check=False)
    assert r.returncode != 0
    assert "symlink or a file" in err(r) and len(err(r).strip().splitlines()) == 1
    r = docker(dmn, cli, "load", input=b"definitely not a tarball" * 50, check=False)
    assert r.returncode != 0 and "not a tar archive" in err(r)
    assert (layers_on_disk(dmn), out(docker(dmn, cli, "images", "-q"))) == before
    assert os.listdir(dmn.root / "images" / "tmp") == []
    assert not os.path.exists("/etc/pwned")


def test_docker_py(dmn, tmp_path):
    docker_py = pytest.importorskip("docker", reason="docker-py is in the test extra: pip install -e '.[test]'")
    client = docker_py.DockerClient(base_url=dmn.host, version="auto")
    try:
        loaded = client.images.load(busybox_tar().read_bytes())
        assert [i.tags for i in loaded] == [["busybox:latest"]]
        img = client.images.get("busybox")
        assert img.id == loaded[0].id and img.attrs["Config"]["Cmd"] == ["sh"]
        assert img.short_id == "sha256:" + img.id[7:19]
        assert any(i.id == img.id for i in client.images.list())
        assert client.images.list(name="busybox")[0].id == img.id
        assert img.tag("pyclient/bb", "t1") is True
        assert "pyclient/bb:t1" in client.images.get(img.id).tags
        assert [h["CreatedBy"] for h in img.history()][0] == 'CMD ["sh"]'
        data = b"".join(img.save(named=True))
        client.images.remove("pyclient/bb:t1")
        with pytest.raises(docker_py.errors.ImageNotFound):
            client.images.get("pyclient/bb:t1")
        with pytest.raises(docker_py.errors.APIError, match="no registry is reachable"):
            client.images.pull("alpine", tag="3.19")
        client.images.remove("busybox")
        assert client.images.load(data)[0].id == img.id
        pruned = client.images.prune(filters={"dangling": False})
        assert isinstance(pruned, dict) and "SpaceReclaimed" in pruned
    finally:
        client.close()


def test_store_survives_daemon_restart(dmn):
    cli = CLIS[0]
    docker(dmn, cli, "load", "-i", str(busybox_tar()))
    image_id = json.loads(out(docker(dmn, cli, "image", "inspect", "busybox")))[0]["Id"]
    dmn.stop()
    dmn.start()
    assert json.loads(out(docker(dmn, cli, "image", "inspect", "busybox")))[0]["Id"] == image_id


def test_busybox_builder_is_reproducible(tmp_path):
    first, second = tmp_path / "a.tar", tmp_path / "b.tar"
    for p in (first, second):
        sh(os.sys.executable, "-m", "cnm.images.busybox", str(p))
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(first) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))
        layer_tar = tarfile.open(fileobj=io.BytesIO(tf.extractfile(manifest[0]["Layers"][0]).read()))
        names = set(layer_tar.getnames())
    assert {"bin/busybox", "bin/sh", "etc/passwd", "etc/group", "tmp"} <= names
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_net_image_commands(dmn, tmp_path):
    r = dmn.net("image", "load", "-i", str(busybox_tar()))
    assert r.stdout.strip() == "Loaded image: busybox:latest"
    assert dmn.net("load", input="", check=False).returncode == 2  # stdin empty: one line
    image_id = json.loads(dmn.net("image", "inspect", "busybox").stdout)[0]["Id"]
    dmn.net("tag", "busybox", "me/bb:1")
    rows = dmn.net("images", "me/bb").stdout.splitlines()
    assert rows[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert len(rows) == 2 and rows[1].split()[:3] == ["me/bb", "1", image_id[7:19]]
    assert dmn.net("images", "-q").stdout.split() == [image_id[7:19]]
    hist = dmn.net("history", "--no-trunc", "-q", "busybox").stdout.split()
    assert hist == [image_id, "<missing>"]
    saved = tmp_path / "bb.tar"
    dmn.net("save", "-o", str(saved), "busybox")
    r = dmn.net("rmi", "me/bb:1", "busybox", "nope", check=False)
    assert r.returncode == 3 and "Untagged: me/bb:1" in r.stdout and f"Deleted: {image_id}" in r.stdout
    assert r.stderr.strip() == "Error: No such image: nope:latest"
    assert dmn.net("load", "-q", "-i", str(saved)).stdout.strip() == "Loaded image: busybox:latest"
    rootfs = tmp_path / "rootfs.tar"
    rootfs.write_bytes(layer(("file", "hello", b"hi")))
    new_id = dmn.net("import", "-c", 'CMD ["/hello"]', "-m", "from net", str(rootfs), "imp:1").stdout.strip()
    cfg = json.loads(dmn.net("image", "inspect", "imp:1").stdout)[0]
    assert cfg["Id"] == new_id and cfg["Config"]["Cmd"] == ["/hello"] and cfg["Comment"] == "from net"
    r = dmn.net("pull", "alpine", check=False)
    assert r.returncode == 6 and r.stderr.startswith("Error: cannot pull alpine:latest: no registry is reachable")
    r = dmn.net("image", "prune", "-a", "-f")
    assert f"deleted: {new_id}" in r.stdout and "Total reclaimed space:" in r.stdout
    assert dmn.net("images", "-q").stdout == ""


def test_docker_events_show_image_actions(dmn):
    import time

    cli = CLIS[0]
    since = str(int(time.time()) - 1)
    docker(dmn, cli, "load", "-i", str(busybox_tar()))
    docker(dmn, cli, "tag", "busybox", "evented:1")
    docker(dmn, cli, "rmi", "evented:1")
    until = str(int(time.time()) + 1)
    time.sleep(1.1)
    r = docker(
        dmn,
        cli,
        "events",
        "--since",
        since,
        "--until",
        until,
        "--filter",
        "type=image",
        "--format",
        "{{.Action}} {{.Actor.Attributes.name}}",
    )
    lines = out(r).splitlines()
    assert "load" in " ".join(lines) and "tag evented:1" in lines and any(ln.startswith("untag") for ln in lines)
