"""`docker save`: images out as one tarball in Docker 25+'s format, which every loader
reads: an OCI image layout (oci-layout, index.json, blobs/sha256/…) plus docker-save's
manifest.json and repositories. Streamed: layer blobs are copied in chunks, straight
from the store, exactly as they were loaded (so diff IDs and image IDs survive).
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from typing import Any, BinaryIO

from cnm.errors import InvalidParameter
from cnm.images import digest as D
from cnm.images import formats as F
from cnm.images import reference as R
from cnm.images.store import ImageStore

# bzip2 and xz blobs have no OCI media type; Docker's loaders and ours go by magic bytes.
_MEDIA = {None: F.OCI_LAYER, "gzip": F.OCI_LAYER_GZIP}


@dataclass
class Export:
    image_id: str
    tags: list[R.Reference]


def select(store: ImageStore, names: list[str]) -> list[Export]:
    """What `docker save NAME…` writes: a `repo:tag` or an ID names one image; a bare
    repository name (`busybox`) every tag of it. Images named twice are written once."""
    by_id: dict[str, Export] = {}
    for name in names:
        picked: list[tuple[str, R.Reference | None]] = []
        try:
            ref = R.parse(name)
        except InvalidParameter:
            ref = None  # an ID prefix such as `0b1f`: resolved below
        if ref is not None and ref.tag is None and ref.digest is None and not R.is_full_id(name):
            for image in store.images():
                for r in store.refs_of(image.id):
                    if r.name == ref.name:
                        picked.append((image.id, r))
        if not picked:
            image_id = store.resolve(name)
            by_ref = (
                ref is not None and not image_id.split(":", 1)[1].startswith(name) and not image_id.startswith(name)
            )
            picked.append((image_id, ref.with_default_tag() if by_ref and ref is not None else None))
        for image_id, tag in picked:
            export = by_id.setdefault(image_id, Export(image_id, []))
            if tag is not None and tag not in export.tags:
                export.tags.append(tag)
    return list(by_id.values())


def write(store: ImageStore, exports: list[Export], out: BinaryIO) -> None:
    tf = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)
    written: set[str] = set()
    index: list[dict] = []
    manifest_json: list[dict] = []
    repositories: dict[str, dict[str, str]] = {}

    def blob_bytes(data: bytes) -> str:
        digest = D.of_bytes(data)
        if digest not in written:
            _add(tf, "blobs/sha256/" + D.hex_of(digest), io.BytesIO(data), len(data))
            written.add(digest)
        return digest

    with store.leased() as lease:  # layers stay while they are written, even if an rmi races
        with store.lock:
            planned = []
            for export in exports:
                rec = store.get(export.image_id)
                lease.chains.update(rec.chain)
                infos = [store.layer(c) for c in rec.chain]
                planned.append((export, store.config(export.image_id), infos))
        for export, cfg, infos in planned:
            blob_bytes(cfg.raw)
            layers: list[dict[str, Any]] = []
            for info in infos:
                assert info is not None
                if info.blob not in written:
                    with open(store.blob_path(info.chain_id), "rb") as f:
                        _add(tf, "blobs/sha256/" + D.hex_of(info.blob), f, info.blob_size)
                    written.add(info.blob)
                layers.append(
                    {
                        "mediaType": _MEDIA.get(info.compression, F.OCI_LAYER),
                        "digest": info.blob,
                        "size": info.blob_size,
                    }
                )
            manifest = json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": F.OCI_MANIFEST,
                    "config": {"mediaType": F.OCI_CONFIG, "digest": export.image_id, "size": len(cfg.raw)},
                    "layers": layers,
                },
                separators=(",", ":"),
            ).encode()
            mdigest = blob_bytes(manifest)
            desc = {"mediaType": F.OCI_MANIFEST, "digest": mdigest, "size": len(manifest)}
            for tag in export.tags:
                index.append({**desc, "annotations": {F.NAME_ANNOTATION: str(tag), F.REF_ANNOTATION: tag.tag or ""}})
                repositories.setdefault(tag.familiar_name, {})[tag.tag or ""] = D.hex_of(export.image_id)
            if not export.tags:
                index.append(desc)
            manifest_json.append(
                {
                    "Config": "blobs/sha256/" + D.hex_of(export.image_id),
                    "RepoTags": [t.familiar() for t in export.tags] or None,
                    "Layers": ["blobs/sha256/" + D.hex_of(layer["digest"]) for layer in layers],
                }
            )
    for name, doc in (
        ("index.json", {"schemaVersion": 2, "mediaType": F.OCI_INDEX, "manifests": index}),
        ("manifest.json", manifest_json),
        ("oci-layout", {"imageLayoutVersion": "1.0.0"}),
    ):
        data = json.dumps(doc, separators=(",", ":")).encode()
        _add(tf, name, io.BytesIO(data), len(data))
    if repositories:
        data = json.dumps(repositories, separators=(",", ":")).encode()
        _add(tf, "repositories", io.BytesIO(data), len(data))
    tf.close()


def _add(tf: tarfile.TarFile, name: str, src: BinaryIO, size: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o444
    tf.addfile(info, src)
