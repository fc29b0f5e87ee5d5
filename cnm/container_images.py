"""A container's root filesystem and run configuration: from an image in the store
(its layers as overlayfs lower directories, its Env/Cmd/Entrypoint/WorkingDir/User
merged with the request as Docker does), or the host's filesystem (`Image` empty:
the command is the request's own) or a `--rootfs` directory.

The container service calls these at create (record + the store's mount, which keeps
the layers while the container exists, even past an `rmi -f`), at start (the lower
directories) and at removal (the mount goes, and with it any layer nothing else uses).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from cnm.container_record import Container
from cnm.container_requests import ContainerCreate
from cnm.errors import CNMError, InvalidParameter
from cnm.images.config import ImageConfig
from cnm.images.runconfig import merge

log = logging.getLogger(__name__)


class ImageMounts(Protocol):
    """The image store's side of a container (cnm.images.store.ImageStore)."""

    def resolve(self, text: str) -> str:
        """The image ID a reference or ID names; NotFound ("No such image: NAME")."""

    def config(self, image_id: str) -> ImageConfig:
        """The image's config."""

    def mount(self, container_id: str, image_id: str) -> list[str]:
        """Record that the container uses the image's layers; its lower dirs. Idempotent."""

    def lowers_of(self, container_id: str) -> list[str]:
        """The lower dirs of a recorded mount (also after the image was removed)."""

    def unmount(self, container_id: str) -> list[str]:
        """Forget the container's mount; idempotent."""

    def reconcile(self, containers: set[str]) -> list[str]:
        """Forget the mounts of containers not in `containers`."""


def configure(ct: Container, req: ContainerCreate, images: ImageMounts | None) -> None:
    """Fill the record's command, environment, working directory, user and labels:
    from the request alone, or merged with its image's config."""
    if not req.image:
        ct.entrypoint, ct.cmd = list(req.entrypoint or []), list(req.argv)
        ct.argv = ct.entrypoint + ct.cmd
        ct.workdir, ct.user = req.workdir, req.user
        return
    if images is None:
        raise InvalidParameter(
            "this daemon has no image store: run on the host's filesystem (an absolute "
            "command path) or with --rootfs DIR"
        )
    image_id = images.resolve(req.image)
    rc = merge(
        images.config(image_id),
        cmd=req.argv or None,
        entrypoint=req.entrypoint,
        env=req.env,
        workdir=req.workdir,
        user=req.user,
        labels=req.labels,
        image_name=req.image,
    )
    ct.image, ct.image_id = req.image, image_id
    ct.entrypoint, ct.cmd, ct.argv = rc.entrypoint, rc.cmd, rc.argv
    ct.env, ct.workdir, ct.user, ct.labels = rc.env, rc.workdir, rc.user, rc.labels


@contextmanager
def mounted(ct: Container, images: ImageMounts | None) -> Iterator[None]:
    """The store records the container's use of its image's layers; undone if the
    block fails (the record could not be saved)."""
    if ct.image_id and images is not None:
        images.mount(ct.id, ct.image_id)
    try:
        yield
    except BaseException:
        release(ct, images)
        raise


def reconcile(images: ImageMounts | None, containers: set[str]) -> None:
    """After a restart: mounts of containers a crash removed half-way go."""
    if images is not None:
        gone = images.reconcile(containers)
        if gone:
            log.info("released the image layers of %d removed container(s)", len(gone))


def lower_dirs(ct: Container, images: ImageMounts | None) -> list[str] | None:
    """The overlay's lower directories for a start (None: the host's filesystem)."""
    if ct.image_id and images is not None:
        return images.lowers_of(ct.id)
    return [ct.rootfs] if ct.rootfs else None


def release(ct: Container, images: ImageMounts | None) -> None:
    """At removal: the container's mount goes (best effort: logged, never raised)."""
    if not ct.image_id or images is None:
        return
    try:
        images.unmount(ct.id)
    except (CNMError, OSError) as exc:
        log.warning("container %s: releasing its image layers: %s", ct.name, exc)
