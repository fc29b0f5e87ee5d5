"""Image operations as Docker's engine has them, on top of the store: load, import,
tag, remove (with Docker's conflict rules), prune. Synchronous and thread-safe; the
API runs them in its worker threads.

Every operation validates what it can before it writes anything, and a load or import
that fails leaves nothing behind: its spooled files and extracted layers are collected
when its lease ends.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cnm.errors import CNMError, Conflict, InvalidParameter
from cnm.images import changes as CH
from cnm.images import config as C
from cnm.images import formats as F
from cnm.images import reference as R
from cnm.images.digest import Reader
from cnm.images.render import ImageView
from cnm.images.spool import Spool
from cnm.images.store import ImageRecord, ImageStore
from cnm.rmtree import remove_tree

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
List = list  # the class below has a method named `list`


def _quiet(_msg: str) -> None:
    pass


def short(image_id: str) -> str:
    """Docker's TruncateID: 12 hex digits, no algorithm."""
    return image_id.split(":", 1)[-1][:12]


@dataclass(frozen=True)
class User:
    """A container using an image."""

    id: str
    running: bool


class EventPublisher(Protocol):
    """Docker's event stream (cnm.events.EventBus)."""

    def publish(self, type_: str, action: str, actor_id: str, attributes: dict[str, str] | None = None) -> object: ...


class ImageService:
    """`running(container_id)` says whether a container that mounted an image runs
    (rmi refuses, even forced, for a running one); the daemon gives it. `events` gets
    Docker's image events: load, import, tag, untag, delete."""

    def __init__(
        self, store: ImageStore, running: Callable[[str], bool] | None = None, events: EventPublisher | None = None
    ) -> None:
        self.store = store
        self.running = running or (lambda _cid: False)
        self.events = events

    def _event(self, action: str, image_id: str, name: str = "") -> None:
        """As moby's LogImageEvent: the image's ID, `name` (a reference or the ID) and
        the image's labels as attributes."""
        if self.events is None:
            return
        attrs: dict[str, str] = {}
        try:
            attrs.update(self.store.config(image_id).labels())
        except CNMError:
            pass  # deleted already: its labels went with it
        attrs["name"] = name or image_id
        self.events.publish("image", action, image_id, attrs)

    def _record_events(self, records: List[dict], image_id: str) -> None:
        for rec in records:
            if "Untagged" in rec:
                self._event("untag", image_id, image_id)
            elif rec.get("Deleted") == image_id:
                self._event("delete", image_id)

    # -- load ---------------------------------------------------------------------

    def load(self, stream: Reader, progress: Progress = _quiet) -> list[str]:
        """Load every image of a docker-save tarball or OCI layout (tar). Returns the
        lines Docker prints: `Loaded image: NAME:TAG` per tag, or `Loaded image ID: ID`
        for an untagged image."""
        store = self.store
        work = store.tempdir("load-")
        try:
            spool = Spool(work, store.limits)
            spool.read_from(stream)
            plans = F.plan(spool)
            checked = [self._check(spool, p) for p in plans]
            lines: list[str] = []
            with store.leased() as lease:
                staged = []
                for cfg, sources, tags in checked:
                    parent: str | None = None
                    chain = []
                    for i, (src, diff) in enumerate(zip(sources, cfg.diff_ids, strict=True)):
                        progress(f"Loading layer {i + 1}/{len(sources)} {diff[7:19]}")
                        info = store.register_layer(
                            lease, parent, diff, blob_path=spool.path(src.name, "layer"), blob_digest=src.digest
                        )
                        parent = info.chain_id
                        chain.append(info.chain_id)
                    staged.append((cfg, chain, tags))
                for cfg, chain, tags in staged:
                    for ref, old in store.commit(cfg, chain, tags):
                        lines.append(
                            f"The image {ref.familiar()} already exists, renaming the old one "
                            f"with ID {old} to empty string"
                        )
                    for ref in tags:
                        self._event("tag", cfg.id, ref.familiar())
                    self._event("load", cfg.id)
                    if tags:
                        lines.extend(f"Loaded image: {ref.familiar()}" for ref in tags)
                    else:
                        lines.append(f"Loaded image ID: {cfg.id}")
            return lines
        finally:
            _rm(work)

    def _check(self, spool: Spool, plan: F.ImageToLoad) -> tuple[C.ImageConfig, list[F.LayerSource], list[R.Reference]]:
        """Everything about one image that can be checked before extracting a layer."""
        path = spool.path(plan.config_name, "image config")
        if os.path.getsize(path) > self.store.limits.max_json:
            raise InvalidParameter(f"invalid image archive: config {plan.config_name} is too large")
        with open(path, "rb") as f:
            cfg = C.parse(f.read())
        if plan.config_digest and cfg.id != plan.config_digest:
            raise InvalidParameter(f"invalid image archive: config {plan.config_digest} does not match its content")
        if len(plan.layers) != len(cfg.diff_ids):
            raise InvalidParameter(
                f"invalid manifest, layers length mismatch: expected {len(plan.layers)}, got {len(cfg.diff_ids)}"
            )
        if len(cfg.diff_ids) > self.store.limits.max_layers:
            raise InvalidParameter(
                f"the image has {len(cfg.diff_ids)} layers: at most {self.store.limits.max_layers} are supported"
            )
        for src in plan.layers:
            spool.path(src.name, "layer")
        tags = []
        for text in plan.repo_tags:
            ref = R.parse(text)
            if ref.tag is None or ref.digest:
                raise InvalidParameter(f"invalid tag {text!r} in the archive: expected NAME:TAG")
            tags.append(ref)
        return cfg, plan.layers, tags

    # -- import -------------------------------------------------------------------

    def import_image(
        self,
        stream: Reader,
        repo: str = "",
        tag: str = "",
        message: str = "",
        changes: list[str] | None = None,
        source: str = "-",
    ) -> str:
        """`docker import`: the tar in `stream` (maybe compressed) becomes a one-layer
        image, named `repo[:tag]` when given. Returns the image ID."""
        ref = repo_tag(repo, tag)
        cfg_obj = CH.apply(changes or [])
        message = message or f"Imported from {source}"
        with self.store.leased() as lease:
            info = self.store.register_layer(lease, None, None, stream=stream)
            created = C.now_rfc3339()
            doc = {
                "architecture": F.host_arch(),
                "os": "linux",
                "created": created,
                "comment": message,
                "config": cfg_obj,
                "rootfs": {"type": "layers", "diff_ids": [info.diff_id]},
                "history": [{"created": created, "comment": message}],
            }
            cfg = C.parse(json.dumps(doc, separators=(",", ":")).encode())
            self.store.commit(cfg, [info.chain_id], [ref] if ref else [])
        if ref:
            self._event("tag", cfg.id, ref.familiar())
        self._event("import", cfg.id)
        return cfg.id

    # -- reading ------------------------------------------------------------------

    def list(self) -> List[ImageRecord]:  # `list`: what dockerapi's /info reads
        return self.store.images()

    def view(self, image_id: str) -> ImageView:
        store = self.store
        with store.lock:
            rec = store.get(image_id)
            infos = [store.layer(c) for c in rec.chain]
            return ImageView(
                rec.id,
                store.config(rec.id),
                store.refs_of(rec.id),
                [i.size if i else 0 for i in infos],
                [store.diff_dir(c) for c in rec.chain],
                containers=sum(1 for img in store.mounts().values() if img == rec.id),
                last_tag_time=rec.last_tag_time,
            )

    def inspect(self, text: str) -> ImageView:
        return self.view(self.store.resolve(text))

    def views(self) -> List[ImageView]:
        """Every image, newest first (as `docker images` lists them)."""
        with self.store.lock:
            views = [self.view(rec.id) for rec in self.store.images()]
        return sorted(views, key=lambda v: (v.created, v.id), reverse=True)

    def shared_sizes(self) -> dict[str, int]:
        """image id -> bytes of its layers that another image uses too."""
        with self.store.lock:
            users: dict[str, int] = {}
            for rec in self.store.images():
                for c in rec.chain:
                    users[c] = users.get(c, 0) + 1
            out = {}
            for rec in self.store.images():
                out[rec.id] = sum(i.size for c in rec.chain if users[c] > 1 and (i := self.store.layer(c)))
            return out

    # -- names --------------------------------------------------------------------

    def tag(self, source: str, repo: str, tag: str = "") -> R.Reference:
        ref = repo_tag(repo, tag)
        if ref is None:
            raise InvalidParameter("repository name must have at least one component")
        if ref.familiar_name == "sha256":
            raise InvalidParameter("refusing to create an ambiguous tag using digest algorithm as name")
        image_id = self.store.resolve(source)
        self.store.tag(image_id, ref)
        self._event("tag", image_id, ref.familiar())
        return ref

    def users(self, image_id: str) -> List[User]:
        return [User(cid, self.running(cid)) for cid, img in sorted(self.store.mounts().items()) if img == image_id]

    # -- remove -------------------------------------------------------------------

    def delete(self, text: str, force: bool = False, prune: bool = True) -> List[dict]:
        """`docker rmi` with moby's rules (daemon/images/image_delete.go): by name it
        untags, and removes the image once no name is left; by ID it removes the image
        with all its names. A running container's image is never removed; a stopped
        container's or a multi-named one only with `force`."""
        del prune  # no parent images here: nothing else to prune
        image_id, records = self._delete(text, force)
        self._record_events(records, image_id)
        return records

    def _delete(self, text: str, force: bool) -> tuple[str, List[dict]]:
        with self.store.lock:
            image_id = self.store.resolve(text)
            refs = self.store.refs_of(image_id)
            records: list[dict] = []
            by_name = not _is_id_prefix(image_id, text)
            if by_name:
                ref = R.parse(text).with_default_tag()
                users = self.users(image_id)
                if not force and len(refs) == 1 and users:
                    raise Conflict(
                        f'conflict: unable to remove repository reference "{text}" (must force) - '
                        f"container {users[0].id[:12]} is using its referenced image {short(image_id)}"
                    )
                self.store.untag(ref)
                records.append({"Untagged": ref.familiar()})
                if len(refs) > 1:
                    return image_id, records
            elif len(refs) == 1:
                conflict = self._conflict(image_id, soft=not force, refs=0)
                if conflict:
                    raise Conflict(conflict)
                self.store.untag(refs[0])
                records.append({"Untagged": refs[0].familiar()})
            conflict = self._conflict(image_id, soft=not force, refs=len(self.store.refs_of(image_id)))
            if conflict:
                if by_name:  # the name is gone; the image stays for its users (Docker's quiet case)
                    return image_id, records
                raise Conflict(conflict)
            records += [{"Untagged": r.familiar()} for r in self.store.refs_of(image_id)]
            removed = self.store.delete(image_id)
            records.append({"Deleted": image_id})
            records += [{"Deleted": c} for c in removed]
            return image_id, records

    def _conflict(self, image_id: str, soft: bool, refs: int) -> str | None:
        """moby's checkImageDeleteConflict: hard conflicts always, soft ones unless forced."""
        head = f"conflict: unable to delete {short(image_id)}"
        users = self.users(image_id)
        running = [u for u in users if u.running]
        if running:
            return f"{head} (cannot be forced) - image is being used by running container {running[0].id[:12]}"
        if soft and refs > 0:
            return f"{head} (must be forced) - image is referenced in multiple repositories"
        if soft and users:
            return f"{head} (must be forced) - image is being used by stopped container {users[0].id[:12]}"
        return None

    def prune(self, dangling_only: bool = True, keep: Callable[[str], bool] = lambda _i: False) -> dict:
        """`docker image prune`: unused images (dangling ones only by default), except
        those `keep(image_id)` protects (filters). Docker's response shape."""
        deleted: list[dict] = []
        done: list[tuple[str, List[dict]]] = []
        reclaimed = 0
        with self.store.lock:
            used = set(self.store.mounts().values())
            sizes = {
                c: i.size + i.blob_size
                for c, i in ((c, self.store.layer(c)) for c in self.store.layer_refs())
                if i is not None
            }
            for rec in sorted(self.store.images(), key=lambda r: r.id):
                if rec.id in used or keep(rec.id):
                    continue
                refs = self.store.refs_of(rec.id)
                if refs and dangling_only:
                    continue
                records = [{"Untagged": r.familiar()} for r in refs]
                removed = self.store.delete(rec.id)
                records.append({"Deleted": rec.id})
                records += [{"Deleted": c} for c in removed]
                reclaimed += sum(sizes.get(c, 0) for c in removed)
                done.append((rec.id, records))
                deleted += records
        for image_id, records in done:
            self._record_events(records, image_id)
        return {"ImagesDeleted": deleted or None, "SpaceReclaimed": reclaimed}


def repo_tag(repo: str, tag: str) -> R.Reference | None:
    """Docker's RepoTagReference: `repo` may carry its own tag; `tag` overrides; no
    digests. None when repo is empty."""
    if not repo:
        if tag:
            raise InvalidParameter("a tag needs a repository name")
        return None
    ref = R.parse(repo)
    if ref.digest:
        raise InvalidParameter(f"cannot import or tag a digest reference: {repo}")
    if tag:
        R.check_tag(tag)
        ref = R.Reference(ref.domain, ref.path, tag)
    return ref.with_default_tag()


def _is_id_prefix(image_id: str, text: str) -> bool:
    """moby's isImageIDPrefix: did the user name the image by (a prefix of) its ID?"""
    return image_id.startswith(text) or image_id.split(":", 1)[1].startswith(text)


def _rm(path: str) -> None:
    remove_tree(path)  # best effort; not shutil.rmtree (see cnm.rmtree)
