"""Which images a spooled archive holds: docker-save's manifest.json, or an OCI layout.

Pure planning over a `Spool`: nothing is extracted here. `plan()` answers a list of
`ImageToLoad` (config, layer blobs in order, names), after the archive's own
structure is checked: types, digests of every manifest and index it reads, and the
host's platform for multi-platform indexes.

- docker save (all versions): `manifest.json` = [{"Config", "RepoTags", "Layers"}];
  Docker 25+ writes an OCI layout next to it, with Layers under blobs/sha256/.
- OCI image layout (skopeo, buildah, `docker buildx --output type=oci`): `oci-layout`,
  `index.json` -> manifests (or nested indexes) -> config and layer descriptors; names
  come from the `io.containerd.image.name` or `org.opencontainers.image.ref.name`
  annotations. With both present, manifest.json wins (as in Docker's classic store).
"""

from __future__ import annotations

import platform as _platform
from dataclasses import dataclass, field
from typing import Any

from cnm.errors import InvalidParameter
from cnm.images import digest as D
from cnm.images.spool import Spool

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
INDEXES = (OCI_INDEX, DOCKER_LIST)
MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
NAME_ANNOTATION = "io.containerd.image.name"
REF_ANNOTATION = "org.opencontainers.image.ref.name"
_MAX_DEPTH = 4

_ARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def host_arch() -> str:
    m = _platform.machine()
    return _ARCH.get(m, m)


@dataclass
class LayerSource:
    name: str  # path in the archive
    digest: str | None = None  # expected blob digest (OCI descriptors)
    media_type: str | None = None


@dataclass
class ImageToLoad:
    config_name: str
    config_digest: str | None
    layers: list[LayerSource]
    repo_tags: list[str] = field(default_factory=list)
    manifest: bytes | None = None  # the OCI manifest bytes, kept as the image's manifest


def plan(spool: Spool) -> list[ImageToLoad]:
    if spool.has("manifest.json"):
        return _docker_save(spool)
    if spool.has("index.json"):
        return _oci_layout(spool)
    if spool.has("repositories"):
        raise InvalidParameter(
            "this is a pre-1.10 docker-save archive (no manifest.json): not supported; "
            "save it again with a newer Docker"
        )
    raise InvalidParameter(
        "invalid image archive: no manifest.json or index.json (expected `docker save` output or an OCI image layout)"
    )


def _strings(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidParameter(f"invalid image archive: {what} must be a list of strings")
    return value


def _docker_save(spool: Spool) -> list[ImageToLoad]:
    manifest, _ = spool.read_json("manifest.json", "manifest")
    if not isinstance(manifest, list):
        raise InvalidParameter("invalid manifest, manifest.json must be a list (may be [])")
    out = []
    for item in manifest:
        if not isinstance(item, dict) or not isinstance(item.get("Config"), str):
            raise InvalidParameter("invalid manifest: every entry needs a Config path")
        layers = [LayerSource(name) for name in _strings(item.get("Layers"), "Layers")]
        out.append(ImageToLoad(item["Config"], None, layers, _strings(item.get("RepoTags"), "RepoTags")))
    return out


def _blob_name(desc: dict) -> str:
    digest = D.check(desc.get("digest"), "descriptor digest")
    return "blobs/sha256/" + digest.split(":", 1)[1]


def _read_blob_json(spool: Spool, desc: dict, what: str) -> dict:
    data, raw = spool.read_json(_blob_name(desc), what)
    if D.of_bytes(raw) != desc["digest"]:
        raise InvalidParameter(f"invalid image archive: {what} {desc['digest']} does not match its content")
    if not isinstance(data, dict):
        raise InvalidParameter(f"invalid image archive: {what} {desc['digest']} is not a JSON object")
    data["__raw__"] = raw
    return data


def _names(desc: dict) -> list[str]:
    notes = desc.get("annotations") or {}
    if not isinstance(notes, dict):
        return []
    full = notes.get(NAME_ANNOTATION)
    if isinstance(full, str) and full:
        return [full]
    ref = notes.get(REF_ANNOTATION)
    # A bare tag ("latest") names no repository: such an image loads untagged.
    if isinstance(ref, str) and ("/" in ref or ":" in ref):
        return [ref]
    return []


def _is_attestation(desc: dict) -> bool:
    notes = desc.get("annotations") or {}
    plat = desc.get("platform") or {}
    return (isinstance(notes, dict) and notes.get("vnd.docker.reference.type") == "attestation-manifest") or (
        isinstance(plat, dict) and plat.get("os") == "unknown"
    )


def _platform_ok(desc: dict) -> bool:
    plat = desc.get("platform")
    if not isinstance(plat, dict):
        return True
    return plat.get("os", "linux") == "linux" and plat.get("architecture", host_arch()) == host_arch()


def _oci_layout(spool: Spool) -> list[ImageToLoad]:
    if spool.has("oci-layout"):
        layout, _ = spool.read_json("oci-layout", "oci-layout")
        if not isinstance(layout, dict) or not str(layout.get("imageLayoutVersion", "")).startswith("1."):
            raise InvalidParameter("invalid OCI layout: unsupported imageLayoutVersion in oci-layout")
    index, _ = spool.read_json("index.json", "index")
    out: list[ImageToLoad] = []
    _walk_index(spool, index, [], out, 0)
    return out


def _walk_index(spool: Spool, index: Any, names: list[str], out: list[ImageToLoad], depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise InvalidParameter("invalid OCI layout: indexes nested too deep")
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise InvalidParameter("invalid OCI layout: an index needs a manifests list")
    descs = [d for d in index["manifests"] if isinstance(d, dict) and not _is_attestation(d)]
    nested = depth > 0
    if nested:  # a multi-platform image: take the host's platform only
        chosen = [d for d in descs if _platform_ok(d)][:1]
        if descs and not chosen:
            plats = sorted(
                {
                    f"{(d.get('platform') or {}).get('os')}/{(d.get('platform') or {}).get('architecture')}"
                    for d in descs
                }
            )
            raise InvalidParameter(f"no linux/{host_arch()} image in the archive's index (it has {', '.join(plats)})")
        descs = chosen
    elif any(_platform_ok(d) and isinstance(d.get("platform"), dict) for d in descs):
        descs = [d for d in descs if _platform_ok(d)]  # platform manifests listed at the top
    for desc in descs:
        here = names or _names(desc)
        kind = desc.get("mediaType")
        doc = _read_blob_json(spool, desc, "manifest")
        kind = kind or doc.get("mediaType") or (OCI_INDEX if "manifests" in doc else OCI_MANIFEST)
        if kind in INDEXES:
            _walk_index(spool, doc, here, out, depth + 1)
        elif kind in MANIFESTS:
            out.append(_manifest(doc, here))
        # other artifacts in an index (signatures, SBOMs) are not images: skipped


def _manifest(doc: dict, names: list[str]) -> ImageToLoad:
    config = doc.get("config")
    layers = doc.get("layers")
    if not isinstance(config, dict) or not isinstance(layers, list):
        raise InvalidParameter("invalid OCI manifest: it needs a config and a layers list")
    cfg_digest = D.check(config.get("digest"), "config digest")
    sources = []
    for layer in layers:
        if not isinstance(layer, dict):
            raise InvalidParameter("invalid OCI manifest: a layer descriptor is not an object")
        media = str(layer.get("mediaType", ""))
        if ("foreign" in media or "nondistributable" in media) and layer.get("urls"):
            raise InvalidParameter("the image has foreign layers (downloaded from URLs): not supported offline")
        sources.append(LayerSource(_blob_name(layer), layer["digest"], layer.get("mediaType")))
    return ImageToLoad(_blob_name(config), cfg_digest, sources, names, doc["__raw__"])
