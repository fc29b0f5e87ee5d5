"""Build layer tars, image configs and docker-save / OCI archives in memory, for tests."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer(*entries: tuple, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """A layer tar from entries:
    ("file", name, data[, mode]), ("dir", name[, mode]), ("symlink", name, target),
    ("hardlink", name, target), ("whiteout", "dir/name") (AUFS form), ("opaque", "dir"),
    ("chardev", name, major, minor), ("fifo", name), ("raw", TarInfo, data|None)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for e in entries:
            kind, name = e[0], e[1]
            if kind == "raw":
                tf.addfile(name, io.BytesIO(e[2]) if e[2] is not None else None)
                continue
            ti = tarfile.TarInfo(name)
            ti.mtime = 1_700_000_000
            data = None
            if kind == "file":
                data = e[2]
                ti.size = len(data)
                ti.mode = e[3] if len(e) > 3 else 0o644
            elif kind == "dir":
                ti.type = tarfile.DIRTYPE
                ti.mode = e[2] if len(e) > 2 else 0o755
            elif kind == "symlink":
                ti.type = tarfile.SYMTYPE
                ti.linkname = e[2]
            elif kind == "hardlink":
                ti.type = tarfile.LNKTYPE
                ti.linkname = e[2]
            elif kind == "whiteout":
                parent, _, base = name.rpartition("/")
                ti.name = f"{parent}/.wh.{base}" if parent else f".wh.{base}"
            elif kind == "opaque":
                ti.name = f"{name}/.wh..wh..opq"
            elif kind == "chardev":
                ti.type = tarfile.CHRTYPE
                ti.devmajor, ti.devminor = e[2], e[3]
            elif kind == "fifo":
                ti.type = tarfile.FIFOTYPE
            else:
                raise ValueError(kind)
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def config(diff_ids: list[str], **cfg: object) -> bytes:
    doc = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-02T03:04:05.123456789Z",
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2024-01-02T03:04:05Z", "created_by": f"layer {i}"} for i in range(len(diff_ids))],
    }
    return json.dumps(doc).encode()


@dataclass
class Img:
    layers: list[bytes]  # uncompressed layer tars, bottom first
    tags: list[str] = field(default_factory=list)
    cfg: dict = field(default_factory=dict)
    gzip_layers: bool = False

    @property
    def diff_ids(self) -> list[str]:
        return [sha(x) for x in self.layers]

    @property
    def config(self) -> bytes:
        return config(self.diff_ids, **self.cfg)

    @property
    def id(self) -> str:
        return sha(self.config)

    def blobs(self) -> list[bytes]:
        return [gzip.compress(x, mtime=0) if self.gzip_layers else x for x in self.layers]


def _tar(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        for name, target in (links or {}).items():
            ti = tarfile.TarInfo(name)
            ti.type = tarfile.SYMTYPE
            ti.linkname = target
            tf.addfile(ti)
    return buf.getvalue()


def docker_save(*images: Img, legacy_links: bool = False) -> bytes:
    """Old (pre-25) docker save: <id>/layer.tar per layer, <hex>.json configs,
    manifest.json. With legacy_links, a repeated layer is a symlink to the first."""
    files: dict[str, bytes] = {}
    links: dict[str, str] = {}
    manifest = []
    seen: dict[str, str] = {}
    for img in images:
        paths = []
        for i, blob in enumerate(img.blobs()):
            key = sha(blob)[7:]
            d = hashlib.sha256(f"{img.id}{i}".encode()).hexdigest()
            if legacy_links and key in seen:
                links[f"{d}/layer.tar"] = f"../{seen[key]}/layer.tar"
            else:
                files[f"{d}/layer.tar"] = blob
                seen.setdefault(key, d)
            files[f"{d}/VERSION"] = b"1.0"
            paths.append(f"{d}/layer.tar")
        files[f"{img.id[7:]}.json"] = img.config
        manifest.append({"Config": f"{img.id[7:]}.json", "RepoTags": img.tags or None, "Layers": paths})
    files["manifest.json"] = json.dumps(manifest).encode()
    return _tar(files, links)


def oci_layout(*images: Img, with_manifest_json: bool = False, nested_index: bool = False) -> bytes:
    """An OCI image layout as a tar (Docker 25+ save when with_manifest_json)."""
    files: dict[str, bytes] = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}'}
    index = []
    manifest_json = []
    for img in images:
        cfg = img.config
        files[f"blobs/sha256/{img.id[7:]}"] = cfg
        descs = []
        for blob in img.blobs():
            files[f"blobs/sha256/{sha(blob)[7:]}"] = blob
            media = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if img.gzip_layers else "")
            descs.append({"mediaType": media, "digest": sha(blob), "size": len(blob)})
        man = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": img.id, "size": len(cfg)},
                "layers": descs,
            }
        ).encode()
        files[f"blobs/sha256/{sha(man)[7:]}"] = man
        desc = {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha(man),
            "size": len(man),
            "platform": {"os": "linux", "architecture": "amd64"},
        }
        if nested_index:
            inner = json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.index.v1+json",
                    "manifests": [
                        desc,
                        {**desc, "digest": sha(b"x"), "platform": {"os": "linux", "architecture": "arm64"}},
                    ],
                }
            ).encode()
            files[f"blobs/sha256/{sha(inner)[7:]}"] = inner
            desc = {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": sha(inner), "size": len(inner)}
        for tag in img.tags or [None]:
            d = dict(desc)
            if tag:
                d["annotations"] = {"io.containerd.image.name": tag, "org.opencontainers.image.ref.name": "latest"}
            index.append(d)
        manifest_json.append(
            {
                "Config": f"blobs/sha256/{img.id[7:]}",
                "RepoTags": img.tags or None,
                "Layers": [f"blobs/sha256/{sha(b)[7:]}" for b in img.blobs()],
            }
        )
    files["index.json"] = json.dumps({"schemaVersion": 2, "manifests": index}).encode()
    if with_manifest_json:
        files["manifest.json"] = json.dumps(manifest_json).encode()
    return _tar(files)


BASE = layer(
    ("dir", "bin"),
    ("file", "bin/tool", b"#!/bin/sh\necho base\n", 0o755),
    ("dir", "etc"),
    ("file", "etc/motd", b"base motd\n"),
    ("dir", "data"),
    ("file", "data/old", b"old\n"),
)
TOP = layer(
    ("file", "etc/app.conf", b"x=1\n"), ("whiteout", "etc/motd"), ("opaque", "data"), ("file", "data/new", b"new\n")
)
OTHER_TOP = layer(("file", "srv/index.html", b"<h1>hi</h1>\n"))
