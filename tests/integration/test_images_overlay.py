"""The store's layers stacked by the kernel's overlayfs, as a container's root will be:
whiteouts hide lower files, opaque directories hide lower directories' content, a
layer shared by two images serves both. Mounts happen in a private mount namespace
(`unshare --mount`), so nothing is left mounted on the host."""

from __future__ import annotations

import io
import os
import subprocess

import pytest

from cnm.images.service import ImageService
from cnm.images.store import ImageStore
from cnm.runtime.overlay import overlay_lowerdir
from tests.unit.image_fixtures import BASE, OTHER_TOP, TOP, Img, docker_save, layer

pytestmark = pytest.mark.integration


def overlay_listing(lowers: list[str], *paths: str) -> dict[str, str]:
    """Mount the lower dirs read-only in a throwaway mount namespace; report each path
    as `absent`, `dir:<entries>` or `file:<first line>`. Long lowerdir lists are given
    relative to their common parent (the mount runs there), as the runtime does."""
    script = ['set -e; m=$(mktemp -d); cd "$1"; mount -t overlay overlay -o "lowerdir=$2" "$m"; shift 2']
    script.append(
        'for p in "$@"; do if [ -d "$m/$p" ]; then echo "$p=dir:$(ls -A "$m/$p" | tr "\\n" ,)"; '
        'elif [ -e "$m/$p" ]; then echo "$p=file:$(head -n1 "$m/$p")"; else echo "$p=absent"; fi; done'
    )
    cwd, lowerdir = overlay_lowerdir(lowers)
    r = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(script), "sh", cwd, lowerdir, *paths],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    return dict(line.split("=", 1) for line in r.stdout.splitlines())


def test_whiteouts_and_opaque_dirs_in_overlayfs(tmp_path):
    svc = ImageService(ImageStore(str(tmp_path / "images")))
    img = Img([BASE, TOP], tags=["ov:1"])
    svc.load(io.BytesIO(docker_save(img)))
    lowers = svc.store.mount("ctr1", img.id)
    seen = overlay_listing(lowers, "etc/motd", "etc/app.conf", "data", "data/old", "data/new", "bin/tool")
    assert seen["etc/motd"] == "absent"  # whited out by the upper layer
    assert seen["etc/app.conf"] == "file:x=1"
    assert seen["data"] == "dir:new,"  # opaque: the lower data/old is hidden
    assert seen["data/old"] == "absent"
    assert seen["bin/tool"].startswith("file:#!/bin/sh")  # from the shared base layer
    # the base layer itself still has what the upper layer hides
    assert open(f"{lowers[1]}/etc/motd").read() == "base motd\n"
    assert os.listdir(f"{lowers[1]}/data") == ["old"]


def test_shared_layer_serves_two_images(tmp_path):
    svc = ImageService(ImageStore(str(tmp_path / "images")))
    a, b = Img([BASE, TOP], tags=["a:1"]), Img([BASE, OTHER_TOP], tags=["b:1"])
    svc.load(io.BytesIO(docker_save(a, b)))
    la, lb = svc.store.mount("ca", a.id), svc.store.mount("cb", b.id)
    assert la[1] == lb[1]  # one directory for the shared base
    assert overlay_listing(lb, "etc/motd", "srv/index.html") == {
        "etc/motd": "file:base motd",
        "srv/index.html": "file:<h1>hi</h1>",
    }


def test_a_deep_chain_fits_the_mount_options(tmp_path):
    """125 layers (Docker's limit): short l/ links, given relative to their directory,
    keep lowerdir within one page (4096 bytes of mount options) whatever the store's path."""
    svc = ImageService(ImageStore(str(tmp_path / "images")))
    layers = [layer(("file", f"f{i}", b"%d" % i)) for i in range(125)]
    deep = Img(layers, tags=["deep:1"])
    svc.load(io.BytesIO(docker_save(deep)))
    lowers = svc.store.mount("cdeep", deep.id)
    assert len(overlay_lowerdir(lowers)[1]) < 4096 - 600  # room for upperdir= and workdir=
    seen = overlay_listing(lowers, "f0", "f124")
    assert seen == {"f0": "file:0", "f124": "file:124"}
