"""Pure parts of the image store: references, digests, tar member rules, --change,
rendering and filters."""

from __future__ import annotations

import hashlib
import json
import tarfile

import pytest

from cnm.errors import InvalidParameter
from cnm.images import changes, config, digest, entries, reference, render
from tests.unit.image_fixtures import Img, layer, sha

# -- references ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,full,familiar",
    [
        ("busybox", "docker.io/library/busybox", "busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
        ("library/busybox", "docker.io/library/busybox", "busybox:latest"),
        ("docker.io/library/busybox:latest", "docker.io/library/busybox:latest", "busybox:latest"),
        ("index.docker.io/me/app:v2", "docker.io/me/app:v2", "me/app:v2"),
        ("me/app", "docker.io/me/app", "me/app:latest"),
        ("localhost/app", "localhost/app", "localhost/app:latest"),
        (
            "registry.example.com:5000/team/app:1",
            "registry.example.com:5000/team/app:1",
            "registry.example.com:5000/team/app:1",
        ),
        ("a-b__c.d/e", "a-b__c.d/e", "a-b__c.d/e:latest"),
    ],
)
def test_reference_normalized_and_familiar(text, full, familiar):
    ref = reference.parse(text)
    assert str(ref) == full
    assert ref.with_default_tag().familiar() == familiar


@pytest.mark.parametrize(
    "text,msg",
    [
        ("BusyBox", "must be lowercase"),
        ("a" * 64, "64-byte hexadecimal"),
        ("", "empty"),
        ("busy box", "not an image name"),
        ("busybox:", "not an image name"),
        ("-bad", "not an image name"),
        ("x/" + "y" * 300, "longer than 255"),
    ],
)
def test_reference_refused(text, msg):
    with pytest.raises(InvalidParameter, match=msg):
        reference.parse(text)


def test_reference_ids_and_tags():
    hexid = "a" * 64
    assert reference.is_full_id(hexid) and reference.is_full_id("sha256:" + hexid)
    assert not reference.is_full_id("sha256:abc")
    assert reference.is_id_prefix("abc123") and reference.is_id_prefix("sha256:abc")
    assert not reference.is_id_prefix("busybox")
    assert reference.parse_tagged("busybox").tag == "latest"
    with pytest.raises(InvalidParameter, match="digest"):
        reference.parse_tagged("busybox@sha256:" + hexid)
    with pytest.raises(InvalidParameter):
        reference.check_tag("-x")


# -- digests and chain IDs ----------------------------------------------------------------


def test_chain_ids_follow_docker_rule():
    a, b, c = (sha(x) for x in (b"a", b"b", b"c"))
    chain = digest.chain_ids([a, b, c])
    assert chain[0] == a
    assert chain[1] == "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    assert chain[2] == "sha256:" + hashlib.sha256(f"{chain[1]} {c}".encode()).hexdigest()
    # the same diff on a different parent is a different layer
    assert digest.chain_ids([b, c])[1] != chain[2]
    with pytest.raises(InvalidParameter):
        digest.chain_ids(["md5:abc"])


def test_hashing_reader_limit():
    import io

    r = digest.HashingReader(io.BytesIO(b"x" * 100), limit=50, what="thing")
    with pytest.raises(InvalidParameter, match="thing is larger than the limit of 50"):
        r.drain(10)


# -- tar member rules ---------------------------------------------------------------------


def _ti(name: str, t: bytes = tarfile.REGTYPE, linkname: str = "", major: int = 0, minor: int = 0) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = t
    ti.linkname = linkname
    ti.devmajor, ti.devminor = major, minor
    return ti


@pytest.mark.parametrize(
    "name,kind,path",
    [
        ("etc/passwd", entries.FILE, "etc/passwd"),
        ("./etc/passwd", entries.FILE, "etc/passwd"),
        ("/etc/passwd", entries.FILE, "etc/passwd"),  # absolute: relative to the layer, as Docker
        ("etc//x/./y", entries.FILE, "etc/x/y"),
        ("etc/.wh.motd", entries.WHITEOUT, "etc/motd"),
        (".wh.top", entries.WHITEOUT, "top"),
        ("data/.wh..wh..opq", entries.OPAQUE, "data"),
        ("data/.wh..wh.plnk", entries.SKIP, "data/.wh..wh.plnk"),
        ("./", entries.SKIP, ""),
    ],
)
def test_classify_paths(name, kind, path):
    e = entries.classify(_ti(name))
    assert (e.kind, e.path) == (kind, path)


@pytest.mark.parametrize(
    "ti",
    [
        _ti("../etc/passwd"),
        _ti("a/../../etc"),
        _ti("a/../b"),  # Docker would clean it; we refuse any '..'
        _ti("ok", tarfile.LNKTYPE, "../outside"),
        _ti("ok", tarfile.LNKTYPE, "/"),
        _ti("nul\0byte"),
        _ti("x" * 300),
        _ti(".wh.."),
    ],
)
def test_classify_refuses_escapes(ti):
    with pytest.raises(InvalidParameter):
        entries.classify(ti)


def test_classify_devices_and_links():
    assert entries.classify(_ti("dev/null", tarfile.CHRTYPE, major=1, minor=3)).kind == entries.DEVICE
    assert entries.classify(_ti("dev/sda", tarfile.BLKTYPE, major=8, minor=0)).kind == entries.DEVICE
    assert entries.classify(_ti("gone", tarfile.CHRTYPE)).kind == entries.WHITEOUT  # overlay form
    link = entries.classify(_ti("bin/sh", tarfile.SYMTYPE, "/bin/busybox"))
    assert (link.kind, link.target) == (entries.SYMLINK, "/bin/busybox")  # any target: never followed
    hard = entries.classify(_ti("bin/ls", tarfile.LNKTYPE, "./bin/busybox"))
    assert (hard.kind, hard.target) == (entries.HARDLINK, "bin/busybox")


# -- --change -------------------------------------------------------------------------------


def test_changes_apply_docker_forms():
    cfg = changes.apply(
        [
            'CMD ["/bin/sh", "-c", "echo hi"]',
            "ENTRYPOINT /init --flag",
            'ENV A=1 B="two words"',
            "ENV LEGACY some value",
            "ENV A=3",
            "WORKDIR /srv",
            "WORKDIR app",
            "USER 1000:1000",
            "EXPOSE 80 53/udp 8000-8001",
            "LABEL org.x=y",
            "VOLUME /data /cache",
            "STOPSIGNAL SIGINT",
            "onbuild RUN true",
        ]
    )
    assert cfg["Cmd"] == ["/bin/sh", "-c", "echo hi"]
    assert cfg["Entrypoint"] == ["/bin/sh", "-c", "/init --flag"]
    assert cfg["Env"] == ["B=two words", "LEGACY=some value", "A=3"]
    assert cfg["WorkingDir"] == "/srv/app"
    assert cfg["User"] == "1000:1000"
    assert cfg["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}, "8000/tcp": {}, "8001/tcp": {}}
    assert cfg["Labels"] == {"org.x": "y"} and cfg["Volumes"] == {"/data": {}, "/cache": {}}
    assert cfg["StopSignal"] == "SIGINT" and cfg["OnBuild"] == ["RUN true"]


@pytest.mark.parametrize(
    "change,msg",
    [
        ("RUN apt-get install", "RUN is not a valid change command"),
        ("HEALTHCHECK CMD true", "not supported"),
        ("EXPOSE http", "EXPOSE"),
        ("EXPOSE 70000", "1-65535"),
        ("CMD", "requires at least one argument"),
        ("LABEL novalue", "KEY=VALUE"),
    ],
)
def test_changes_refused(change, msg):
    with pytest.raises(InvalidParameter, match=msg):
        changes.apply([change])


# -- config and rendering -----------------------------------------------------------------


def test_config_checks():
    with pytest.raises(InvalidParameter, match="cannot load windows image"):
        config.parse(json.dumps({"os": "windows", "rootfs": {"type": "layers", "diff_ids": []}}).encode())
    with pytest.raises(InvalidParameter, match="rootfs.type"):
        config.parse(b'{"os": "linux"}')
    with pytest.raises(InvalidParameter, match="diff ID"):
        config.parse(b'{"rootfs": {"type": "layers", "diff_ids": ["nope"]}}')
    with pytest.raises(InvalidParameter, match="not JSON"):
        config.parse(b"{")
    assert config.unix_time("2024-01-02T03:04:05.123456789Z") == 1704164645
    assert config.unix_time("2024-01-02T04:04:05+01:00") == 1704164645
    assert config.unix_time(None) == 0


def _view(tags: list[str], **cfg: object) -> render.ImageView:
    img = Img([layer(("file", "a", b"1")), layer(("file", "b", b"22"))], cfg=cfg)
    return render.ImageView(
        img.id,
        config.parse(img.config),
        [reference.parse_tagged(t) for t in tags],
        [1, 2],
        ["/s/l/a", "/s/l/b"],
        containers=1,
    )


def test_inspect_and_summary_shapes_by_version():
    view = _view(["busybox", "me/app:2"], Env=["PATH=/bin"], Cmd=["sh"], Labels={"k": "v"})
    doc = render.inspect_json(view, (1, 43))
    assert doc["Id"] == view.id and doc["RepoTags"] == ["busybox:latest", "me/app:2"]
    assert doc["Size"] == 3 and doc["VirtualSize"] == 3 and doc["Os"] == "linux"
    assert doc["Config"]["Env"] == ["PATH=/bin"] and doc["Config"]["Tty"] is False  # legacy full shape
    assert (
        doc["RootFS"]["Layers"]
        == config.parse(
            Img(
                [layer(("file", "a", b"1")), layer(("file", "b", b"22"))],
                cfg={"Env": ["PATH=/bin"], "Cmd": ["sh"], "Labels": {"k": "v"}},
            ).config
        ).diff_ids
    )
    assert doc["GraphDriver"]["Data"] == {"UpperDir": "/s/l/b", "LowerDir": "/s/l/a"}
    assert "ContainerConfig" in doc and "Container" in doc
    new = render.inspect_json(view, (1, 51))
    assert "VirtualSize" not in new and "ContainerConfig" not in new and "Tty" not in new["Config"]
    s = render.summary_json(view, (1, 43))
    assert s["Labels"] == {"k": "v"} and s["Created"] == 1704164645 and s["Containers"] == 1
    untagged = _view([])
    assert render.summary_json(untagged, (1, 41))["RepoTags"] == ["<none>:<none>"]
    assert render.summary_json(untagged, (1, 43))["RepoTags"] == []


def test_history_rows_newest_first():
    view = _view(["busybox"])
    rows = render.history_json(view)
    assert [r["CreatedBy"] for r in rows] == ["layer 1", "layer 0"]
    assert rows[0]["Id"] == view.id and rows[0]["Tags"] == ["busybox:latest"]
    assert rows[1]["Id"] == "<missing>" and rows[1]["Tags"] is None
    assert [r["Size"] for r in rows] == [2, 1]


def test_filters():
    view = _view(["busybox:1.36", "reg.io:5000/team/app:v1"], Labels={"tier": "web"})
    m = render.image_matches
    assert m(view, {"reference": ["busybox"]}, {})
    assert m(view, {"reference": ["busy*:1.*"]}, {})
    assert m(view, {"reference": ["*"]}, {})  # matches busybox:1.36
    assert not m(view, {"reference": ["alpine"]}, {})
    assert m(view, {"reference": ["reg.io:5000/team/*"]}, {})
    assert not m(view, {"reference": ["reg.io:5000/*"]}, {})  # '*' does not cross '/', as Go's path.Match
    assert m(view, {"label": ["tier=web"]}, {}) and not m(view, {"label": ["tier=db"]}, {})
    assert m(view, {"dangling": ["false"]}, {}) and not m(view, {"dangling": ["true"]}, {})
    assert m(view, {"until": ["2030-01-01"]}, {}) and not m(view, {"until": ["2020-01-01T00:00:00Z"]}, {})
    assert m(view, {"before": ["x"]}, {"x": view.created + 1}) and not m(view, {"since": ["x"]}, {"x": view.created})
    with pytest.raises(InvalidParameter):
        m(view, {"dangling": ["maybe"]}, {})
    assert render.parse_until("1h", now=10_000) == 10_000 - 3600
    assert render.parse_until("1700000000.5") == 1700000000.5


# -- run configuration (request + image) ------------------------------------------------


def _cfg(**c: object) -> config.ImageConfig:
    return config.parse(Img([layer(("file", "a", b"1"))], cfg=c).config)


def test_merge_follows_docker():
    from cnm.images.runconfig import merge

    img = _cfg(
        Entrypoint=["/init"],
        Cmd=["serve", "--port", "80"],
        Env=["PATH=/opt/bin:/bin", "MODE=prod"],
        WorkingDir="/srv",
        User="app",
        Labels={"a": "1"},
        ExposedPorts={"80/tcp": {}},
        StopSignal="SIGQUIT",
    )
    rc = merge(img, cmd=None, entrypoint=None)
    assert rc.argv == ["/init", "serve", "--port", "80"] and rc.workdir == "/srv" and rc.user == "app"
    assert rc.env == {"PATH": "/opt/bin:/bin", "MODE": "prod"} and rc.stop_signal == "SIGQUIT"
    assert merge(img, cmd=["debug"], entrypoint=None).argv == ["/init", "debug"]  # CMD replaced
    assert merge(img, cmd=None, entrypoint=["/bin/sh"]).argv == ["/bin/sh"]  # image CMD dropped
    assert merge(img, cmd=["-c", "x"], entrypoint=["/bin/sh"]).argv == ["/bin/sh", "-c", "x"]
    assert merge(img, cmd=["ls"], entrypoint=[""]).argv == ["ls"]  # [""] resets it
    assert merge(img, cmd=None, entrypoint=[]).argv == ["serve", "--port", "80"]
    over = merge(
        img,
        cmd=None,
        entrypoint=None,
        env={"MODE": "dev", "X": "1"},
        workdir="/tmp",
        user="0:0",
        labels={"b": "2"},
        exposed_ports=["53/udp"],
    )
    assert over.env == {"PATH": "/opt/bin:/bin", "MODE": "dev", "X": "1"}
    assert (over.workdir, over.user) == ("/tmp", "0:0") and over.labels == {"a": "1", "b": "2"}
    assert over.exposed_ports == ["80/tcp", "53/udp"]
    with pytest.raises(InvalidParameter, match="no command specified"):
        merge(_cfg(), cmd=None, entrypoint=None, image_name="scratch:1")
    with pytest.raises(InvalidParameter, match="needs to be an absolute path"):
        merge(img, cmd=None, entrypoint=None, workdir="rel")


def test_overlay_options_stay_within_a_page():
    from cnm.runtime.overlay import overlay_options

    few = ["/var/lib/cnm/images/l/aaa", "/var/lib/cnm/images/l/bbb"]
    assert overlay_options(few, "/run/c/upper", "/run/c/work") == (
        "/",
        "lowerdir=/var/lib/cnm/images/l/aaa:/var/lib/cnm/images/l/bbb,upperdir=/run/c/upper,workdir=/run/c/work",
    )
    deep = [f"/var/lib/cnm-lab/some-lab/host-1/root/images/l/{i:012x}" for i in range(125)]
    cwd, data = overlay_options(deep, "/run/c/upper", "/run/c/work")
    assert cwd == "/var/lib/cnm-lab/some-lab/host-1/root/images/l"
    assert data.startswith("lowerdir=000000000000:000000000001:") and len(data) < 4096
    with pytest.raises(ValueError, match="too many layers"):
        overlay_options([f"/{i:0200x}/x" for i in range(40)], "/u", "/w")
