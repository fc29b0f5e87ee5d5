"""Containers on images, for real: overlayfs lower dirs from the store plus a writable
upper layer per container, whiteouts and opaque directories honoured, the image's Env,
Cmd, Entrypoint, WorkingDir and User, `rmi` refused while a container runs — through
`net`, Docker's CLI and docker-py, against a daemon in a throwaway namespace."""

from __future__ import annotations

import io
import json
import os
import secrets
import subprocess
import tarfile

import pytest

from tests.integration.conftest import ROOT, Daemon, sh
from tests.unit.image_fixtures import Img, docker_save, layer

BUSYBOX_TAR = ROOT / "build" / "images" / "busybox.tar"
CLIS = [p for p in ("/usr/bin/docker", "/usr/local/bin/docker") if os.path.exists(p)]


def busybox_layer() -> bytes:
    with tarfile.open(BUSYBOX_TAR) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))
        return tf.extractfile(manifest[0]["Layers"][0]).read()


@pytest.fixture(scope="module")
def dmn(tmp_path_factory):
    if not BUSYBOX_TAR.exists():
        pytest.fail(f"{BUSYBOX_TAR} is missing: scripts/setup.sh builds it")
    ns = f"cnmt-{secrets.token_hex(4)}"
    sh("ip", "netns", "add", ns)
    sh("ip", "-n", ns, "link", "set", "lo", "up")
    base = tmp_path_factory.mktemp("imgct")
    d = Daemon(ns=ns, root=base / "root", run_dir=base / "run", sock=base / "run" / "cnm.sock", log=base / "daemon.log")
    try:
        d.start()
        d.net("image", "load", "-q", "-i", str(BUSYBOX_TAR))
        yield d
    finally:
        d.teardown()
        sh("ip", "netns", "del", ns, check=False)


def _load(d: Daemon, data: bytes) -> None:
    from tests.integration.conftest import NET

    r = subprocess.run([NET, "-H", d.host, "image", "load", "-q"], input=data, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_whiteouts_and_opaque_dirs_in_a_container(dmn):
    lower = layer(
        ("dir", "etc"),
        ("file", "etc/motd", b"from the lower layer\n"),
        ("dir", "data"),
        ("file", "data/old", b"old\n"),
        ("file", "data/keep-not", b"x\n"),
    )
    upper = layer(("whiteout", "etc/motd"), ("opaque", "data"), ("file", "data/new", b"new\n"))
    img = Img([busybox_layer(), lower, upper], tags=["wh:1"], cfg={"Env": ["PATH=/bin"], "Cmd": ["sh"]})
    _load(dmn, docker_save(img))
    out = dmn.net(
        "run",
        "--rm",
        "wh:1",
        "sh",
        "-c",
        "test -e /etc/motd && echo motd-present; ls /data | tr '\\n' ' '; cat /data/new",
    ).stdout
    # no motd (whited out), only data/new (the opaque dir hides data/old and data/keep-not)
    assert out == "new new\n"


def test_writes_go_to_the_container_s_own_layer(dmn):
    cid = dmn.net(
        "run", "-d", "busybox", "sh", "-c", "echo mine > /etc/written; rm /etc/group; sleep 60"
    ).stdout.strip()
    try:
        seen = dmn.net("exec", cid, "--", "sh", "-c", "sleep 0.3; cat /etc/written; test -e /etc/group || echo gone")
        assert seen.stdout.split() == ["mine", "gone"]
        other = dmn.net("run", "--rm", "busybox", "sh", "-c", "test -e /etc/written || echo clean; cat /etc/group")
        assert other.stdout.startswith("clean\nroot:x:0:")  # the image itself never changed
        layers = dmn.root / "images" / "layers"
        assert not any((d / "diff" / "etc" / "written").exists() for d in layers.iterdir())
    finally:
        dmn.net("container", "rm", "-f", cid)


def test_the_image_s_config_runs(dmn):
    cfg = {
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ['echo "$GREETING from $(pwd) as $(id -un)"'],
        "Env": ["PATH=/bin", "GREETING=hello"],
        "WorkingDir": "/srv/app",
        "User": "nobody",
    }
    img = Img([busybox_layer()], tags=["cfg:1"], cfg=cfg)
    _load(dmn, docker_save(img))
    assert dmn.net("run", "--rm", "cfg:1").stdout == "hello from /srv/app as nobody\n"
    over = dmn.net("run", "--rm", "-e", "GREETING=hi", "-w", "/tmp", "-u", "root", "cfg:1").stdout
    assert over == "hi from /tmp as root\n"
    assert dmn.net("run", "--rm", "--entrypoint", "", "cfg:1", "echo", "plain").stdout == "plain\n"
    r = dmn.net("run", "--rm", "-u", "ghost", "cfg:1", check=False)
    assert r.returncode == 125 and "unable to find user ghost" in r.stderr


def test_a_missing_image_says_how_to_load_one(dmn):
    r = dmn.net("run", "--rm", "nosuch:1", "true", check=False)
    assert r.returncode == 125
    assert r.stderr.strip() == (
        "Error: No such image: nosuch:1 (load it first: net image load -i FILE, or net image import FILE NAME)"
    )
    assert dmn.net("run", "--rm", "/bin/busybox", "echo", "host").stdout == "host\n"  # host filesystem


@pytest.mark.parametrize("cli", CLIS)
def test_docker_cli_runs_on_the_image_and_rmi_refuses(dmn, cli):
    env = {"PATH": os.environ["PATH"], "DOCKER_CONFIG": str(dmn.root.parent / f"cfg-{os.path.basename(cli)}")}

    def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run([cli, "-H", dmn.host, *args], capture_output=True, text=True, timeout=120, env=env)
        if check:
            assert r.returncode == 0, r.stderr
        return r

    assert (
        docker("run", "--rm", "busybox", "sh", "-c", "cat /etc/passwd | head -1").stdout
        == "root:x:0:0:root:/root:/bin/sh\n"
    )
    name = f"bg-{secrets.token_hex(3)}"
    docker("run", "-d", "--name", name, "busybox", "sleep", "60")
    try:
        inspect = json.loads(docker("inspect", name).stdout)[0]
        image_id = json.loads(docker("image", "inspect", "busybox").stdout)[0]["Id"]
        assert inspect["Image"] == image_id and inspect["Config"]["Image"] == "busybox"
        assert inspect["Config"]["Cmd"] == ["sleep", "60"]
        r = docker("rmi", image_id, "-f", check=False)
        assert r.returncode != 0 and "image is being used by running container" in r.stderr
    finally:
        docker("rm", "-f", name)


def test_docker_py_runs_on_the_image(dmn):
    docker_py = pytest.importorskip("docker", reason="docker-py is in the test extra: pip install -e '.[test]'")
    client = docker_py.DockerClient(base_url=dmn.host, version="auto")
    try:
        out = client.containers.run("busybox", ["sh", "-c", "echo $HOME; ls /bin/busybox"], remove=True)
        assert out == b"/root\n/bin/busybox\n"
        # docker-py pulls a missing image: the pull says, in one line, what to do
        with pytest.raises(docker_py.errors.APIError, match="no registry is reachable.*docker load -i FILE"):
            client.containers.run("never-loaded:1", "true", remove=True)
    finally:
        client.close()


def test_layers_stay_for_a_stopped_container_after_rmi_f(dmn):
    img = Img(
        [busybox_layer(), layer(("file", "marker", b"kept\n"))],
        tags=["kept:1"],
        cfg={"Env": ["PATH=/bin"], "Cmd": ["cat", "/marker"]},
    )
    _load(dmn, docker_save(img))
    cid = dmn.net("run", "-d", "kept:1").stdout.strip()
    dmn.net("container", "inspect", cid)
    out = dmn.net("rmi", "-f", "kept:1").stdout
    assert f"Deleted: {img.id}" in out or "Untagged: kept:1" in out
    assert dmn.net("logs", cid).stdout == "kept\n"
    dmn.net("container", "rm", "-f", cid)
    assert dmn.net("images", "-q", "--no-trunc").stdout.find(img.id) == -1


def test_import_then_run(dmn, tmp_path):
    rootfs = io.BytesIO(busybox_layer())
    path = tmp_path / "rootfs.tar"
    path.write_bytes(rootfs.getvalue())
    dmn.net("import", "-c", 'CMD ["echo", "imported"]', "-c", "ENV PATH=/bin", str(path), "imp:1")
    assert dmn.net("run", "--rm", "imp:1").stdout == "imported\n"
