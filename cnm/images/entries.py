"""What one member of a layer tar asks for, decided without touching the filesystem.

A layer tarball is untrusted input. `classify` turns a member's header into an `Entry`
with a clean relative path (no `..` escape, no absolute path, no NUL) and a kind, and
translates Docker's AUFS-style whiteouts into what overlayfs understands:

    dir/.wh.NAME         -> WHITEOUT at dir/NAME (a 0/0 character device on disk)
    dir/.wh..wh..opq     -> OPAQUE: dir hides everything below it (an xattr on disk)
    dir/.wh..wh.*        -> SKIP (AUFS bookkeeping: .wh..wh.plnk, .wh..wh.aufs)
    a 0/0 char device    -> WHITEOUT (the overlay form, as tars of overlay dirs carry it)
    other devices        -> DEVICE (not created: containers get /dev from the runtime)

Hard-link targets get the same path checks; symlink targets may point anywhere,
because extraction never follows a symlink (see cnm.images.extract).
"""

from __future__ import annotations

import posixpath
import tarfile
from dataclasses import dataclass

from cnm.errors import InvalidParameter

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
AUFS_META_PREFIX = ".wh..wh."

DIR, FILE, SYMLINK, HARDLINK, FIFO = "dir", "file", "symlink", "hardlink", "fifo"
WHITEOUT, OPAQUE, DEVICE, SKIP = "whiteout", "opaque", "device", "skip"

MAX_PATH = 4096  # PATH_MAX
MAX_COMPONENT = 255  # NAME_MAX

_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE, tarfile.GNUTYPE_SPARSE)


@dataclass(frozen=True)
class Entry:
    """One thing to do in a layer directory. `path` is relative and normalized ("" is
    the layer's root); `target` is the symlink text or the hard link's clean path."""

    kind: str
    path: str
    target: str = ""


def clean_path(name: str, what: str = "path") -> str:
    """Docker's rule (archive.go): strip leading `/` and `./`, collapse, and refuse
    what still climbs out. Returns "" for the root itself."""
    if not isinstance(name, str) or "\0" in name:
        raise InvalidParameter(f"invalid {what} in layer: contains a NUL byte")
    if len(name) > MAX_PATH:
        raise InvalidParameter(f"invalid {what} in layer: longer than {MAX_PATH} bytes")
    # Docker cleans "a/../b" to "b"; a `..` component has no business in a layer, so it
    # is refused outright, whether it would climb out or not.
    if ".." in name.split("/"):
        raise InvalidParameter(f"invalid {what} {name!r} in layer: '..' is not allowed")
    path = posixpath.normpath("/" + name).lstrip("/")
    if path in ("", "."):
        return ""
    if any(len(part.encode(errors="surrogateescape")) > MAX_COMPONENT for part in path.split("/")):
        raise InvalidParameter(f"invalid {what} {name[:80]!r} in layer: a name is longer than {MAX_COMPONENT} bytes")
    return path


def classify(member: tarfile.TarInfo) -> Entry:
    """The action for one tar member; InvalidParameter for a malicious or broken one."""
    path = clean_path(member.name)
    parent, base = posixpath.split(path)
    if base.startswith(WHITEOUT_PREFIX):
        if base == OPAQUE_MARKER:
            return Entry(OPAQUE, parent)
        if base.startswith(AUFS_META_PREFIX):
            return Entry(SKIP, path)
        hidden = base[len(WHITEOUT_PREFIX) :]
        if hidden in ("", ".", ".."):
            raise InvalidParameter(f"invalid whiteout {member.name!r} in layer")
        return Entry(WHITEOUT, posixpath.join(parent, hidden))
    if path == "":
        return Entry(SKIP, "")  # the layer root: its mode is the container's /
    t = member.type
    if t == tarfile.DIRTYPE:
        return Entry(DIR, path)
    if t in _FILE_TYPES:
        return Entry(FILE, path)
    if t == tarfile.SYMTYPE:
        if not member.linkname or "\0" in member.linkname:
            raise InvalidParameter(f"invalid symlink {member.name!r} in layer: empty target")
        return Entry(SYMLINK, path, member.linkname)
    if t == tarfile.LNKTYPE:
        target = clean_path(member.linkname, "hard link target")
        if not target:
            raise InvalidParameter(f"invalid hard link {member.name!r} in layer: it points at the layer root")
        return Entry(HARDLINK, path, target)
    if t == tarfile.FIFOTYPE:
        return Entry(FIFO, path)
    if t == tarfile.CHRTYPE and member.devmajor == 0 and member.devminor == 0:
        return Entry(WHITEOUT, path)
    if t in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        return Entry(DEVICE, path)
    return Entry(SKIP, path)
