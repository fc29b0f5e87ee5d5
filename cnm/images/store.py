"""The content-addressed image store under `<daemon root>/images/`.

    configs/<id hex>/config.json   an image's config, byte for byte (its sha256 is the ID)
    configs/<id hex>/meta.json     {"chain": [...], "loaded", "last_tag_time"}: local facts
    layers/<chain hex>/diff/       the layer, extracted in overlayfs form (read-only use)
    layers/<chain hex>/blob        the blob it came from, as given (for `save`)
    layers/<chain hex>/layer.json  {"chain_id", "diff_id", "parent", "size", "blob", ...}
    l/<short> -> ../layers/<chain hex>/diff   short names keep overlayfs's lowerdir
                                   option (one page) within reach for 125 layers
    repositories.json              {"docker.io/library/busybox:latest": "sha256:…"}
    mounts/<container id>.json     layers a container runs on (they outlive an rmi -f)
    tmp/                           work in progress; emptied at start-up

Layers are keyed by chain ID (cnm.images.digest), so a layer two images share is stored
and extracted once. A layer's reference count is the number of images and container
mounts whose chain holds it; `gc()` removes those at zero, never one that an in-flight
load holds in a `Lease`.

Crash safety: everything appears by rename(2) of a finished directory or file written
in tmp/, and goes by rename into tmp/ before it is deleted; a half-extracted layer is
never under layers/. Start-up empties tmp/, drops references to missing images and
collects layers nothing uses. Thread safety: one lock around the metadata; extraction
runs outside it, so two loads proceed at once (the first to finish a shared layer keeps
it, the other discards its copy).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from cnm.errors import InvalidParameter, NotFound
from cnm.images import config as C
from cnm.images import digest as D
from cnm.images import reference as R
from cnm.images.digest import Reader
from cnm.images.extract import extract_layer
from cnm.images.files import Tee, json_bytes, remove, write_atomic
from cnm.images.limits import DEFAULT_LIMITS, Limits

log = logging.getLogger(__name__)

_LINK_LEN = 12
_CID = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")


@dataclass
class LayerInfo:
    chain_id: str
    diff_id: str
    parent: str | None
    size: int
    blob: str  # digest of layers/<hex>/blob
    blob_size: int
    compression: str | None  # of the blob: None (plain tar), gzip, bzip2, xz
    link: str  # name under l/


@dataclass
class ImageRecord:
    id: str
    chain: list[str]
    loaded: str
    last_tag_time: str | None = None


@dataclass
class Lease:
    """Layers an unfinished load or import relies on: gc() keeps them."""

    chains: set[str] = field(default_factory=set)


class ImageStore:
    def __init__(self, root: str, limits: Limits = DEFAULT_LIMITS) -> None:
        self.root = os.path.abspath(root)
        if any(c in self.root for c in ",:\\"):
            raise InvalidParameter(
                f"the image store path {self.root} cannot hold ',', ':' or '\\' (overlayfs options are split on them)"
            )
        self.limits = limits
        self.lock = threading.RLock()
        for sub in ("configs", "layers", "l", "mounts", "tmp", "empty"):
            os.makedirs(os.path.join(self.root, sub), mode=0o700 if sub == "tmp" else 0o755, exist_ok=True)
        os.chmod(self.root, 0o711)
        self._leases: list[Lease] = []
        self._images: dict[str, ImageRecord] = {}
        self._configs: dict[str, C.ImageConfig] = {}
        self._layers: dict[str, LayerInfo] = {}
        self._refs: dict[str, str] = {}
        self._mounts: dict[str, list[str]] = {}
        self._mount_images: dict[str, str] = {}
        self._recover()

    # -- paths ------------------------------------------------------------------------

    def _p(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def layer_dir(self, chain: str) -> str:
        return self._p("layers", D.hex_of(chain))

    def diff_dir(self, chain: str) -> str:
        return os.path.join(self.layer_dir(chain), "diff")

    def blob_path(self, chain: str) -> str:
        return os.path.join(self.layer_dir(chain), "blob")

    def tempdir(self, prefix: str) -> str:
        return tempfile.mkdtemp(prefix=prefix, dir=self._p("tmp"))

    # -- start-up ---------------------------------------------------------------------

    def _recover(self) -> None:
        for name in os.listdir(self._p("tmp")):
            remove(self._p("tmp", name))
        for name in os.listdir(self._p("layers")):
            try:
                with open(self._p("layers", name, "layer.json"), "rb") as f:
                    info = LayerInfo(**json.load(f))
                self._layers[info.chain_id] = info
            except (OSError, ValueError, TypeError) as exc:
                log.warning("image store: dropping unreadable layer %s: %s", name, exc)
                self._discard(self._p("layers", name))
        for info in self._layers.values():
            self._ensure_link(info)
        for name in os.listdir(self._p("configs")):
            try:
                with open(self._p("configs", name, "meta.json"), "rb") as f:
                    rec = ImageRecord(**json.load(f))
                if any(c not in self._layers for c in rec.chain):
                    raise ValueError("a layer is missing")
                self._images[rec.id] = rec
            except (OSError, ValueError, TypeError) as exc:
                log.warning("image store: dropping unreadable image %s: %s", name, exc)
                self._discard(self._p("configs", name))
        try:
            with open(self._p("repositories.json"), "rb") as f:
                refs = json.load(f).get("Repositories", {})
        except FileNotFoundError:
            refs = {}
        self._refs = {r: i for r, i in refs.items() if i in self._images}
        for name in os.listdir(self._p("mounts")):
            if name.endswith(".json"):
                try:
                    with open(self._p("mounts", name), "rb") as f:
                        m = json.load(f)
                    self._mounts[name[:-5]] = list(m["chain"])
                    self._mount_images[name[:-5]] = m["image"]
                except (OSError, ValueError, KeyError) as exc:
                    log.warning("image store: dropping unreadable mount %s: %s", name, exc)
                    os.unlink(self._p("mounts", name))
        self.gc()

    def _ensure_link(self, info: LayerInfo) -> None:
        link = self._p("l", info.link)
        want = os.path.join("..", "layers", D.hex_of(info.chain_id), "diff")
        try:
            if os.readlink(link) == want:
                return
        except OSError:
            pass
        tmp = self._p("tmp", f"link-{info.link}")
        os.symlink(want, tmp)
        os.replace(tmp, link)

    def _new_link(self, chain: str) -> str:
        hexed = D.hex_of(chain)
        used = {i.link: c for c, i in self._layers.items()}
        for n in range(_LINK_LEN, len(hexed) + 1, 4):
            if used.get(hexed[:n], chain) == chain:
                return hexed[:n]
        return hexed

    # -- layers -----------------------------------------------------------------------

    def layer(self, chain: str) -> LayerInfo | None:
        with self.lock:
            return self._layers.get(chain)

    def register_layer(
        self,
        lease: Lease,
        parent: str | None,
        diff_id: str | None,
        blob_path: str | None = None,
        stream: Reader | None = None,
        blob_digest: str | None = None,
    ) -> LayerInfo:
        """The layer `diff_id` on top of `parent`: found, or extracted from the blob at
        `blob_path` (hard-linked into the store) or read once from `stream` (teed into
        the store). `diff_id` None (an import) takes whatever the content hashes to;
        `blob_digest`, when given, must match the blob (an OCI descriptor's digest).
        A layer already stored is taken as it is, without reading the blob (as Docker
        does). The layer is added to `lease` before this returns."""
        if diff_id is not None:
            chain = diff_id if parent is None else D.of_bytes(f"{parent} {diff_id}".encode())
            with self.lock:
                if chain in self._layers:
                    lease.chains.add(chain)
                    return self._layers[chain]
        work = self.tempdir("layer-")
        try:
            os.mkdir(os.path.join(work, "diff"), 0o755)
            blob = os.path.join(work, "blob")
            if blob_path is not None:
                with open(blob_path, "rb") as src:
                    ex = extract_layer(src, os.path.join(work, "diff"), self.limits)
                os.link(blob_path, blob)
            else:
                assert stream is not None
                with open(blob, "xb") as copy:
                    ex = extract_layer(Tee(stream, copy), os.path.join(work, "diff"), self.limits)
            if blob_digest is not None and ex.blob_digest != blob_digest:
                raise InvalidParameter(
                    f"layer blob does not match its descriptor: expected {blob_digest}, "
                    f"the blob hashes to {ex.blob_digest}"
                )
            if diff_id is not None and ex.diff_id != diff_id:
                raise InvalidParameter(
                    f"layer content does not match the image config: expected diff ID "
                    f"{diff_id}, the layer hashes to {ex.diff_id}"
                )
            if ex.devices_skipped:
                log.warning(
                    "layer %s: %d device node(s) not created (e.g. %s)",
                    ex.diff_id[:19],
                    len(ex.devices_skipped),
                    ex.devices_skipped[0],
                )
            chain = ex.diff_id if parent is None else D.of_bytes(f"{parent} {ex.diff_id}".encode())
            with self.lock:
                if chain in self._layers:  # a concurrent load finished it first
                    lease.chains.add(chain)
                    return self._layers[chain]
                info = LayerInfo(
                    chain,
                    ex.diff_id,
                    parent,
                    ex.size,
                    ex.blob_digest,
                    os.path.getsize(blob),
                    ex.compression,
                    self._new_link(chain),
                )
                write_atomic(os.path.join(work, "layer.json"), json_bytes(asdict(info)))
                os.rename(work, self.layer_dir(chain))
                self._layers[chain] = info
                lease.chains.add(chain)
                self._ensure_link(info)
                return info
        finally:
            if os.path.exists(work):
                remove(work)

    def lower_dirs(self, chain: list[str]) -> list[str]:
        """overlayfs lower directories for a layer chain, topmost first."""
        with self.lock:
            if not chain:
                return [self._p("empty")]
            return [self._p("l", self._layers[c].link) for c in reversed(chain)]

    # -- images -----------------------------------------------------------------------

    @contextmanager
    def leased(self) -> Iterator[Lease]:
        lease = Lease()
        with self.lock:
            self._leases.append(lease)
        try:
            yield lease
        finally:
            with self.lock:
                self._leases.remove(lease)
            self.gc()

    def commit(self, cfg: C.ImageConfig, chain: list[str], tags: list[R.Reference]) -> list[tuple[R.Reference, str]]:
        """Keep the image (if new) and point `tags` at it. Returns the tags that moved
        away from another image, with that image's ID."""
        with self.lock:
            if any(c not in self._layers for c in chain):
                raise InvalidParameter("internal: committing an image whose layers are missing")
            if cfg.id not in self._images:
                rec = ImageRecord(cfg.id, list(chain), C.now_rfc3339())
                work = self.tempdir("image-")
                try:
                    with open(os.path.join(work, "config.json"), "wb") as f:
                        f.write(cfg.raw)
                    write_atomic(os.path.join(work, "meta.json"), json_bytes(asdict(rec)))
                    os.rename(work, self._p("configs", D.hex_of(cfg.id)))
                except BaseException:
                    remove(work)
                    raise
                self._images[cfg.id] = rec
                self._configs[cfg.id] = cfg
            moved = []
            for ref in tags:
                old = self._refs.get(str(ref))
                if old is not None and old != cfg.id:
                    moved.append((ref, old))
                self._refs[str(ref)] = cfg.id
            if tags:
                self._touch_tag_time(cfg.id)
                self._save_refs()
            return moved

    def _touch_tag_time(self, image_id: str) -> None:
        rec = self._images[image_id]
        rec.last_tag_time = C.now_rfc3339()
        write_atomic(self._p("configs", D.hex_of(image_id), "meta.json"), json_bytes(asdict(rec)))

    def _save_refs(self) -> None:
        write_atomic(self._p("repositories.json"), json_bytes({"Repositories": self._refs}))

    def images(self) -> list[ImageRecord]:
        with self.lock:
            return list(self._images.values())

    def get(self, image_id: str) -> ImageRecord:
        with self.lock:
            rec = self._images.get(image_id)
        if rec is None:
            raise NotFound(f"No such image: {image_id}")
        return rec

    def config(self, image_id: str) -> C.ImageConfig:
        with self.lock:
            cfg = self._configs.get(image_id)
            if cfg is None:
                self.get(image_id)
                with open(self._p("configs", D.hex_of(image_id), "config.json"), "rb") as f:
                    cfg = C.parse(f.read())
                self._configs[image_id] = cfg
            return cfg

    def size(self, image_id: str) -> int:
        with self.lock:
            return sum(self._layers[c].size for c in self.get(image_id).chain)

    def resolve(self, text: str) -> str:
        """The image ID `text` names, Docker's way: a full ID; else a reference
        (`busybox` = `busybox:latest`); else a unique ID prefix. NotFound otherwise."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidParameter("image name cannot be blank")
        with self.lock:
            if R.is_full_id(text):
                image_id = R.full_id(text)
                if image_id in self._images:
                    return image_id
                raise NotFound(f"No such image: {image_id}")
            ref: R.Reference | None = None
            try:
                ref = R.parse(text).with_default_tag()
            except InvalidParameter:
                if not R.is_id_prefix(text):
                    raise
            if ref is not None and str(ref) in self._refs:
                return self._refs[str(ref)]
            if R.is_id_prefix(text):
                prefix = R.full_id(text)
                found = [i for i in self._images if i.startswith(prefix)]
                if len(found) == 1:
                    return found[0]
                if len(found) > 1:
                    raise NotFound(f"No such image: {text} (the ID prefix is ambiguous: give more digits)")
            raise NotFound(f"No such image: {ref.familiar() if ref else text}")

    def refs_of(self, image_id: str) -> list[R.Reference]:
        with self.lock:
            return sorted((R.parse(r) for r, i in self._refs.items() if i == image_id), key=str)

    def tag(self, image_id: str, ref: R.Reference) -> str | None:
        """Point `ref` at the image; returns the image it pointed at before, if another."""
        with self.lock:
            self.get(image_id)
            old = self._refs.get(str(ref))
            self._refs[str(ref)] = image_id
            self._touch_tag_time(image_id)
            self._save_refs()
            return old if old != image_id else None

    def untag(self, ref: R.Reference) -> str:
        with self.lock:
            image_id = self._refs.pop(str(ref), None)
            if image_id is None:
                raise NotFound(f"No such image: {ref.familiar()}")
            self._save_refs()
            return image_id

    def delete(self, image_id: str) -> list[str]:
        """Forget the image and every reference to it; returns the chain IDs of layers
        that went with it (those no other image or container uses)."""
        with self.lock:
            self.get(image_id)
            if any(i == image_id for i in self._refs.values()):
                self._refs = {r: i for r, i in self._refs.items() if i != image_id}
                self._save_refs()
            del self._images[image_id]
            self._configs.pop(image_id, None)
            self._discard(self._p("configs", D.hex_of(image_id)))
            return self.gc()

    # -- containers -------------------------------------------------------------------

    def mount(self, container_id: str, image_id: str) -> list[str]:
        """Record that a container runs on the image's layers; returns its overlayfs
        lower directories, topmost first. Idempotent."""
        if not _CID.match(container_id or ""):
            raise InvalidParameter(f"invalid container id {container_id!r}")
        with self.lock:
            chain = self.get(image_id).chain
            if self._mounts.get(container_id) != chain:
                write_atomic(self._p("mounts", f"{container_id}.json"), json_bytes({"image": image_id, "chain": chain}))
                self._mounts[container_id] = list(chain)
                self._mount_images[container_id] = image_id
            return self.lower_dirs(chain)

    def unmount(self, container_id: str) -> list[str]:
        """Forget a container's mount (idempotent); returns the layers that went."""
        with self.lock:
            if self._mounts.pop(container_id, None) is None:
                return []
            self._mount_images.pop(container_id, None)
            try:
                os.unlink(self._p("mounts", f"{container_id}.json"))
            except FileNotFoundError:
                pass
            return self.gc()

    def lowers_of(self, container_id: str) -> list[str]:
        """The lower directories of a recorded mount (also after its image was removed
        with `rmi -f`: the mount keeps the layers). NotFound if there is no mount."""
        with self.lock:
            chain = self._mounts.get(container_id)
            if chain is None:
                raise NotFound(f"container {container_id[:12]} has no image mount")
            return self.lower_dirs(chain)

    def reconcile(self, containers: set[str]) -> list[str]:
        """Forget the mounts of containers that no longer exist (a crash between a
        container's removal and its unmount); returns their ids."""
        with self.lock:
            gone = [cid for cid in self._mounts if cid not in containers]
        for cid in gone:
            self.unmount(cid)
        return gone

    def mounts(self) -> dict[str, str]:
        """container id -> image id, for every recorded mount."""
        with self.lock:
            return dict(self._mount_images)

    # -- reference counts and collection ----------------------------------------------

    def layer_refs(self) -> Counter[str]:
        """How many images and container mounts use each stored layer (0 included)."""
        with self.lock:
            refs: Counter[str] = Counter({c: 0 for c in self._layers})
            for rec in self._images.values():
                refs.update(rec.chain)
            for chain in self._mounts.values():
                refs.update(chain)
            return refs

    def gc(self) -> list[str]:
        """Remove layers no image, mount or lease uses; returns their chain IDs."""
        with self.lock:
            held = set().union(*(lease.chains for lease in self._leases)) if self._leases else set()
            dead = [c for c, n in self.layer_refs().items() if n == 0 and c not in held]
            for chain in dead:
                info = self._layers.pop(chain)
                try:
                    os.unlink(self._p("l", info.link))
                except FileNotFoundError:
                    pass
                self._discard(self.layer_dir(chain))
            return dead

    def _discard(self, path: str) -> None:
        """Rename into tmp/ (atomic: gone from its place), then delete."""
        grave = self.tempdir("rm-")
        try:
            os.rename(path, os.path.join(grave, "x"))
        except FileNotFoundError:
            pass
        remove(grave)
