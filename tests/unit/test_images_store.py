"""The image store and service on a real directory (no root needed except where said):
load formats, shared layers stored once, reference counts, Docker's rmi rules, tags,
import, save round trips, failed loads leaving nothing, crash recovery, concurrency."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
import threading

import pytest

from cnm.errors import Conflict, InvalidParameter, NotFound
from cnm.images import save as S
from cnm.images.limits import Limits
from cnm.images.service import ImageService
from cnm.images.store import ImageStore
from tests.unit.image_fixtures import BASE, OTHER_TOP, TOP, Img, docker_save, layer, oci_layout, sha


@pytest.fixture
def store(tmp_path):
    return ImageStore(str(tmp_path / "images"))


@pytest.fixture
def svc(store):
    return ImageService(store)


def load(svc: ImageService, data: bytes) -> list[str]:
    return svc.load(io.BytesIO(data))


def layer_dirs(store: ImageStore) -> list[str]:
    return sorted(os.listdir(os.path.join(store.root, "layers")))


def leftovers(store: ImageStore) -> list[str]:
    return os.listdir(os.path.join(store.root, "tmp"))


A = Img([BASE, TOP], tags=["app:1"], cfg={"Cmd": ["/bin/tool"], "Env": ["A=1"]})
B = Img([BASE, OTHER_TOP], tags=["web:latest", "web:2"])


def test_shared_layer_stored_once_and_counted(svc, store):
    assert load(svc, docker_save(A)) == ["Loaded image: app:1"]
    assert load(svc, docker_save(B)) == ["Loaded image: web:latest", "Loaded image: web:2"]
    base_chain = sha(BASE)
    assert len(layer_dirs(store)) == 3  # BASE once, two tops
    refs = store.layer_refs()
    assert refs[base_chain] == 2 and sum(refs.values()) == 4
    assert store.resolve("app:1") == A.id and store.resolve("web") == B.id
    assert store.resolve(A.id[7:19]) == A.id and store.resolve(A.id) == A.id
    # removing one image keeps the shared layer for the other
    assert svc.delete("app:1")[0] == {"Untagged": "app:1"}
    assert base_chain in store.layer_refs() and len(layer_dirs(store)) == 2
    assert store.layer_refs()[base_chain] == 1
    with pytest.raises(Conflict, match="referenced in multiple repositories"):
        svc.delete(B.id)
    out = svc.delete(B.id, force=True)
    assert {"Untagged": "web:latest"} in out and {"Untagged": "web:2"} in out and {"Deleted": B.id} in out
    assert {"Deleted": base_chain} in out
    assert layer_dirs(store) == [] and os.listdir(os.path.join(store.root, "l")) == []


@pytest.mark.parametrize(
    "archive",
    [
        lambda: docker_save(A),
        lambda: docker_save(Img(A.layers, A.tags, A.cfg, gzip_layers=True)),
        lambda: oci_layout(A),
        lambda: oci_layout(Img(A.layers, A.tags, A.cfg, gzip_layers=True)),
        lambda: oci_layout(A, with_manifest_json=True),  # Docker 25+ save
        lambda: oci_layout(A, nested_index=True),  # multi-platform index
        lambda: gzip.compress(docker_save(A)),  # docker load < x.tar.gz
    ],
    ids=["save", "save-gzip", "oci", "oci-gzip", "docker25", "oci-index", "tar.gz"],
)
def test_every_format_gives_the_same_image(svc, store, archive):
    assert load(svc, archive()) == ["Loaded image: app:1"]
    assert store.resolve("app:1") == A.id
    cfg = store.config(A.id)
    assert cfg.cmd() == ["/bin/tool"] and cfg.env() == ["A=1"]
    top = store.lower_dirs(store.get(A.id).chain)[0]
    assert open(os.path.join(top, "etc/app.conf"), "rb").read() == b"x=1\n"


def test_legacy_save_with_linked_layers(svc, store):
    twice = Img([BASE, layer(("file", "x", b"1")), BASE], tags=["dup:1"])
    assert load(svc, docker_save(twice, legacy_links=True)) == ["Loaded image: dup:1"]
    assert len(store.get(twice.id).chain) == 3


def test_untagged_image_and_idempotent_reload(svc, store):
    plain = Img([BASE])
    assert load(svc, docker_save(plain)) == [f"Loaded image ID: {plain.id}"]
    assert load(svc, docker_save(plain)) == [f"Loaded image ID: {plain.id}"]
    assert len(store.images()) == 1 and len(layer_dirs(store)) == 1


def test_tag_moves_with_dockers_message(svc, store):
    load(svc, docker_save(A))
    other = Img([BASE], tags=["app:1"])
    lines = load(svc, docker_save(other))
    assert lines == [
        f"The image app:1 already exists, renaming the old one with ID {A.id} to empty string",
        "Loaded image: app:1",
    ]
    assert store.resolve("app:1") == other.id and store.refs_of(A.id) == []


@pytest.mark.parametrize(
    "bad,msg",
    [
        (lambda: _half(docker_save(Img([BASE, TOP], tags=["t:1"]))), "truncated|corrupt"),
        (lambda: b"not a tarball" * 100, "not a tar archive"),
        (lambda: b"", "empty"),
        (lambda: _swap_layer(), "does not match the image config"),
        (lambda: _archive({"manifest.json": b"{}"}), "must be a list"),
        (lambda: _archive({"manifest.json": b'[{"Config": "c.json", "Layers": ["l.tar"]}]'}), "missing"),
        (lambda: _archive({"repositories": b"{}"}), "pre-1.10"),
        (lambda: _archive({"hello.txt": b"hi"}), "no manifest.json or index.json"),
        (
            lambda: _archive({"manifest.json": b'[{"Config": "../../etc/passwd", "Layers": []}]'}),
            "'..' is not allowed|missing",
        ),
        (lambda: _mismatch_count(), "layers length mismatch"),
        (lambda: _bad_tag(), "invalid reference format"),
        (lambda: _evil_layer(), "symlink or a file"),
        (lambda: _bad_oci_digest(), "does not match"),
    ],
    ids=[
        "truncated",
        "not-tar",
        "empty",
        "wrong-diff",
        "manifest-type",
        "missing-member",
        "v1",
        "no-manifest",
        "config-traversal",
        "count",
        "tag",
        "evil-layer",
        "oci-digest",
    ],
)
def test_bad_archives_change_nothing(svc, store, bad, msg):
    load(svc, docker_save(B))
    before = (layer_dirs(store), sorted(i.id for i in store.images()))
    with pytest.raises(InvalidParameter, match=msg):
        load(svc, bad())
    assert (layer_dirs(store), sorted(i.id for i in store.images())) == before
    assert leftovers(store) == []


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _archive(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _swap_layer() -> bytes:
    img = Img([BASE, TOP], tags=["x:1"])
    data = docker_save(img)
    return data.replace(b"x=1\n", b"y=2\n")  # same size, different content: diff ID mismatch


def _mismatch_count() -> bytes:
    img = Img([BASE, TOP])
    cfg = json.loads(img.config)
    cfg["rootfs"]["diff_ids"] = cfg["rootfs"]["diff_ids"][:1]
    raw = json.dumps(cfg).encode()
    return _archive(
        {
            "c.json": raw,
            "a.tar": BASE,
            "b.tar": TOP,
            "manifest.json": b'[{"Config": "c.json", "Layers": ["a.tar", "b.tar"]}]',
        }
    )


def _bad_tag() -> bytes:
    return docker_save(Img([BASE], tags=["Not Valid!"]))


def _evil_layer() -> bytes:
    return docker_save(Img([layer(("symlink", "x", "/tmp"), ("file", "x/evil", b"1"))], tags=["evil:1"]))


def _bad_oci_digest() -> bytes:
    data = oci_layout(Img([BASE, TOP], tags=["o:1"]))
    return data.replace(b"x=1\n", b"y=2\n")


def test_layer_blob_is_kept_and_saved_byte_for_byte(svc, store, tmp_path):
    gz = Img(A.layers, A.tags, A.cfg, gzip_layers=True)
    load(svc, oci_layout(gz))
    load(svc, docker_save(B))
    out = io.BytesIO()
    S.write(store, S.select(store, ["app:1", "web"]), out)
    other = ImageService(ImageStore(str(tmp_path / "second")))
    lines = other.load(io.BytesIO(out.getvalue()))
    assert sorted(lines) == ["Loaded image: app:1", "Loaded image: web:2", "Loaded image: web:latest"]
    assert other.store.resolve("app:1") == A.id and other.store.resolve("web:2") == B.id
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tf:
        names = tf.getnames()
        index = json.load(tf.extractfile("index.json"))
        assert gz.blobs()[1] == tf.extractfile(f"blobs/sha256/{sha(gz.blobs()[1])[7:]}").read()
    assert {"index.json", "manifest.json", "oci-layout", "repositories"} <= set(names)
    assert {m["annotations"]["io.containerd.image.name"] for m in index["manifests"]} == {
        "docker.io/library/app:1",
        "docker.io/library/web:latest",
        "docker.io/library/web:2",
    }


def test_save_by_id_has_no_names(svc, store, tmp_path):
    load(svc, docker_save(A))
    out = io.BytesIO()
    S.write(store, S.select(store, [A.id[7:19]]), out)
    other = ImageService(ImageStore(str(tmp_path / "second")))
    assert other.load(io.BytesIO(out.getvalue())) == [f"Loaded image ID: {A.id}"]


def test_import_with_changes(svc, store):
    rootfs = layer(("dir", "bin"), ("file", "bin/hello", b"hi", 0o755))
    image_id = svc.import_image(
        io.BytesIO(gzip.compress(rootfs)), "me/rootfs", "v1", "", ['CMD ["/bin/hello"]', "ENV X=1", "WORKDIR /bin"]
    )
    assert store.resolve("me/rootfs:v1") == image_id
    cfg = store.config(image_id)
    assert cfg.cmd() == ["/bin/hello"] and cfg.env() == ["X=1"] and cfg.workdir() == "/bin"
    assert cfg.diff_ids == [sha(rootfs)] and cfg.doc["comment"] == "Imported from -"
    assert cfg.history[0]["comment"] == "Imported from -"
    untagged = svc.import_image(io.BytesIO(rootfs), message="from a test")
    assert store.refs_of(untagged) == [] and store.config(untagged).doc["comment"] == "from a test"
    assert len(layer_dirs(store)) == 1  # the same layer both times


def test_import_refuses_bad_input_first(svc, store):
    with pytest.raises(InvalidParameter, match="RUN is not a valid change"):
        svc.import_image(io.BytesIO(BASE), "x", "", "", ["RUN true"])
    with pytest.raises(InvalidParameter, match="lowercase"):
        svc.import_image(io.BytesIO(BASE), "UPPER")
    with pytest.raises(InvalidParameter):
        svc.import_image(io.BytesIO(b"garbage" * 500), "x")
    assert layer_dirs(store) == [] and store.images() == [] and leftovers(store) == []


def test_tag_and_resolve(svc, store):
    load(svc, docker_save(A))
    svc.tag("app:1", "registry.local:5000/team/app", "prod")
    svc.tag(A.id[7:15], "shortcut")
    assert store.resolve("registry.local:5000/team/app:prod") == A.id
    assert store.resolve("shortcut") == A.id
    assert [r.familiar() for r in store.refs_of(A.id)] == [
        "app:1",
        "shortcut:latest",
        "registry.local:5000/team/app:prod",
    ]
    with pytest.raises(NotFound, match="No such image: nope:latest"):
        svc.tag("nope", "x")
    with pytest.raises(InvalidParameter):
        svc.tag("app:1", "Bad Name")
    with pytest.raises(InvalidParameter, match="ambiguous tag"):
        svc.tag("app:1", "sha256")
    with pytest.raises(NotFound, match="No such image: missing:latest"):
        store.resolve("missing")


def test_rmi_rules_with_containers(store):
    running: set[str] = set()
    svc = ImageService(store, running=lambda cid: cid in running)
    load(svc, docker_save(A))
    svc.tag("app:1", "app", "alias")
    lowers = store.mount("c1", A.id)
    assert len(lowers) == 2 and lowers[0].startswith(os.path.join(store.root, "l"))
    # by ID, two names, not forced
    with pytest.raises(Conflict, match=r"unable to delete \w{12} \(must be forced\) - image is referenced in multiple"):
        svc.delete(A.id)
    running.add("c1")
    # by ID while a container runs: never, not even forced
    with pytest.raises(Conflict, match="cannot be forced.*running container c1"):
        svc.delete(A.id, force=True)
    assert svc.delete("app:alias") == [{"Untagged": "app:alias"}]
    # last name of a running container's image: needs force, then only untags
    with pytest.raises(Conflict, match='unable to remove repository reference "app:1" \\(must force\\)'):
        svc.delete("app:1")
    assert svc.delete("app:1", force=True) == [{"Untagged": "app:1"}]
    assert store.get(A.id) and store.refs_of(A.id) == []
    running.clear()
    with pytest.raises(Conflict, match="being used by stopped container c1"):
        svc.delete(A.id)
    out = svc.delete(A.id, force=True)
    assert out[0] == {"Deleted": A.id} and len(out) == 1  # layers stay: c1 still mounts them
    assert all(os.path.isdir(p) for p in lowers)
    assert len(store.unmount("c1")) == 2 and store.unmount("c1") == []
    assert layer_dirs(store) == []


def test_unmount_collects_layers_of_a_deleted_image(svc, store):
    load(svc, docker_save(A))
    store.mount("c2", A.id)
    svc.delete(A.id, force=True)
    assert len(layer_dirs(store)) == 2
    removed = store.unmount("c2")
    assert len(removed) == 2 and layer_dirs(store) == []


def test_prune(svc, store):
    load(svc, docker_save(A, B))
    dangling = Img([OTHER_TOP])
    load(svc, docker_save(dangling))
    out = svc.prune(dangling_only=True)
    assert out["ImagesDeleted"][0] == {"Deleted": dangling.id} and out["SpaceReclaimed"] > 0
    store.mount("c3", B.id)
    out = svc.prune(dangling_only=False)
    deleted = {d.get("Deleted") for d in out["ImagesDeleted"]}
    assert A.id in deleted and B.id not in deleted
    assert svc.prune()["ImagesDeleted"] is None


def test_recovery_after_crash(tmp_path, svc, store):
    load(svc, docker_save(A))
    root = store.root
    # a half-extracted layer, a leftover spool, an unreferenced layer and a stale link
    os.makedirs(os.path.join(root, "tmp", "layer-x", "diff", "etc"))
    orphan = os.path.join(root, "layers", "f" * 64)
    os.makedirs(os.path.join(orphan, "diff"))
    with open(os.path.join(orphan, "layer.json"), "w") as f:
        json.dump(
            {
                "chain_id": "sha256:" + "f" * 64,
                "diff_id": "sha256:" + "f" * 64,
                "parent": None,
                "size": 0,
                "blob": "sha256:" + "f" * 64,
                "blob_size": 0,
                "compression": None,
                "link": "ffffffffffff",
            },
            f,
        )
    os.unlink(os.path.join(root, "l", store.layer(sha(BASE)).link))
    again = ImageStore(root)
    assert os.listdir(os.path.join(root, "tmp")) == []
    assert not os.path.exists(orphan)
    assert again.resolve("app:1") == A.id
    assert all(os.path.isdir(p) for p in again.lower_dirs(again.get(A.id).chain))


def test_two_loads_at_once_share_layers(tmp_path, store, svc):
    archives = [docker_save(Img([BASE, layer(("file", f"f{i}", b"%d" % i))], tags=[f"par:{i}"])) for i in range(6)]
    errors: list[BaseException] = []

    def go(data: bytes) -> None:
        try:
            load(svc, data)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(a,)) for a in archives]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.images()) == 6 and len(layer_dirs(store)) == 7
    assert store.layer_refs()[sha(BASE)] == 6 and leftovers(store) == []
    again = ImageStore(store.root)
    assert len(again.images()) == 6 and len(layer_dirs(again)) == 7


def test_limits_refuse_big_archives(tmp_path):
    svc = ImageService(ImageStore(str(tmp_path / "s"), Limits(max_archive=40_000, max_layers=1)))
    with pytest.raises(InvalidParameter, match="larger than the limit"):
        svc.load(io.BytesIO(docker_save(Img([layer(("file", "big", b"x" * 50_000))]))))
    with pytest.raises(InvalidParameter, match="at most 1 are supported"):
        svc.load(io.BytesIO(docker_save(Img([BASE, TOP]))))
    assert os.listdir(os.path.join(tmp_path, "s", "tmp")) == []


def test_store_path_with_colon_refused(tmp_path):
    with pytest.raises(InvalidParameter, match="cannot hold"):
        ImageStore(str(tmp_path / "a:b"))


def test_zero_layer_image_gets_an_empty_lower(svc, store):
    empty = Img([], tags=["scratch:1"])
    load(svc, docker_save(empty))
    lowers = store.mount("c4", empty.id)
    assert len(lowers) == 1 and os.listdir(lowers[0]) == []


def test_lowers_of_and_reconcile(svc, store):
    load(svc, docker_save(A))
    lowers = store.mount("c5", A.id)
    store.mount("c6", A.id)
    svc.delete(A.id, force=True)
    assert store.lowers_of("c5") == lowers  # the mount outlives the image
    with pytest.raises(NotFound):
        store.lowers_of("nope")
    assert store.reconcile({"c5"}) == ["c6"] and set(store.mounts()) == {"c5"}
    assert len(layer_dirs(store)) == 2
    assert store.reconcile(set()) == ["c5"] and layer_dirs(store) == []


def test_docker_image_events(store):
    from cnm.events import EventBus

    bus = EventBus()
    svc = ImageService(store, events=bus)
    svc.load(io.BytesIO(docker_save(Img([BASE], tags=["ev:1"], cfg={"Labels": {"team": "net"}}))))
    image_id = store.resolve("ev:1")
    svc.tag("ev:1", "ev", "2")
    svc.delete(image_id, force=True)
    svc.import_image(io.BytesIO(TOP), "imp", "1")
    history, _ = bus.subscribe(lambda ev: None, since=0)
    seen = [(e.type, e.action, e.attributes.get("name")) for e in history]
    assert seen[:7] == [
        ("image", "tag", "ev:1"),
        ("image", "load", image_id),
        ("image", "tag", "ev:2"),
        ("image", "untag", image_id),
        ("image", "untag", image_id),
        ("image", "delete", image_id),
        ("image", "tag", "imp:1"),
    ]
    assert seen[7][:2] == ("image", "import")
    assert history[0].actor_id == image_id and history[0].attributes["team"] == "net"


def test_an_image_nested_deeper_than_the_recursion_limit_is_removed(svc, store):
    """An image's author chooses its depth: 1,500 nested directories made `rmi` (and a
    failed load's clean-up) raise RecursionError in shutil.rmtree; the layer stayed."""
    deep = "/".join(["d"] * 1500)
    img = Img([layer(("file", f"{deep}/f", b"bottom\n"), ("symlink", f"{deep}/up", "/etc"))], tags=["deep:1"])
    assert load(svc, docker_save(img)) == ["Loaded image: deep:1"]
    assert len(layer_dirs(store)) == 1
    out = svc.delete("deep:1")
    assert {"Deleted": img.id} in out
    assert layer_dirs(store) == [] and leftovers(store) == []
    assert os.path.isdir("/etc")
