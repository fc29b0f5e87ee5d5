"""The members of a docker-save tarball, spooled to disk from a non-seekable stream.

A docker-save tarball names its manifest.json or index.json after the layers, so the
layers cannot be used as they stream past (Docker also unpacks to a temp dir first).
Each regular member is copied to `<dir>/<n>` in chunks; nothing is created under the
member's own name, so a hostile name can never place a file anywhere. Symlinks and hard
links (old `docker save` links identical layer.tar files) are kept as a map and resolved
on lookup, inside the archive only.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import tarfile
from typing import Any, cast

from cnm.errors import InvalidParameter
from cnm.images.digest import HashingReader, Reader
from cnm.images.entries import clean_path
from cnm.images.limits import DEFAULT_LIMITS, Limits

_CHUNK = 1 << 20
_MAX_LINK_DEPTH = 16


class Spool:
    """Regular members by clean name -> spooled file; links by name -> clean target."""

    def __init__(self, directory: str, limits: Limits = DEFAULT_LIMITS) -> None:
        self.dir = directory
        self.limits = limits
        self.files: dict[str, str] = {}
        self.links: dict[str, str] = {}
        self.read_bytes = 0

    def read_from(self, stream: Reader) -> None:
        """Spool every member of the tarball in `stream` (plain, gzip, bzip2 or xz)."""
        counted = HashingReader(stream, limit=self.limits.max_archive, what="the image archive")
        try:
            tf = tarfile.open(fileobj=cast(Any, counted), mode="r|*")
        except tarfile.TarError as exc:
            if counted.count == 0:
                raise InvalidParameter("the image archive is empty: expected a docker-save tarball") from exc
            raise InvalidParameter(f"not a tar archive (expected a docker-save tarball): {exc}") from exc
        count = 0
        try:
            while True:
                member = tf.next()
                if member is None:
                    break
                tf.members.clear()  # type: ignore[attr-defined]
                count += 1
                if count > self.limits.max_archive_members:
                    raise InvalidParameter(f"the image archive has more than {self.limits.max_archive_members} entries")
                self._take(member, tf)
        except (tarfile.TarError, EOFError) as exc:
            raise InvalidParameter(f"the image archive is truncated or corrupt: {exc}") from exc
        except OSError as exc:
            if exc.errno is None:  # gzip/bz2/xz format errors carry no errno
                raise InvalidParameter(f"the image archive is corrupt: {exc}") from exc
            raise
        self.read_bytes = counted.count

    def _take(self, member: tarfile.TarInfo, tf: tarfile.TarFile) -> None:
        name = clean_path(member.name, "archive path")
        if not name:
            return
        if member.isfile():
            path = os.path.join(self.dir, str(len(self.files)))
            src = tf.extractfile(member)
            with open(path, "xb") as out:
                if src is not None:
                    shutil.copyfileobj(src, out, _CHUNK)
            self.files[name] = path
            self.links.pop(name, None)
        elif member.issym():
            # Old `docker save` writes `<id>/layer.tar -> ../<other id>/layer.tar`.
            if member.linkname.startswith("/"):
                raise InvalidParameter(f"invalid image archive: symlink {name!r} is absolute")
            target = posixpath.normpath(posixpath.join(posixpath.dirname(name), member.linkname))
            if target == ".." or target.startswith("../"):
                raise InvalidParameter(f"invalid image archive: symlink {name!r} points outside the archive")
            self.links[name] = clean_path(target, "archive symlink target")
        elif member.islnk():
            self.links[name] = clean_path(member.linkname, "archive hard link target")

    def resolve(self, name: str) -> str | None:
        """The spooled file behind archive path `name`, following links; None if absent."""
        try:
            name = clean_path(name, "archive path")
        except InvalidParameter:
            return None
        for _ in range(_MAX_LINK_DEPTH):
            if name in self.files:
                return self.files[name]
            if name not in self.links:
                return None
            name = self.links[name]
        raise InvalidParameter(f"too many levels of links in the image archive at {name!r}")

    def has(self, name: str) -> bool:
        return self.resolve(name) is not None

    def path(self, name: str, what: str) -> str:
        path = self.resolve(name)
        if path is None:
            raise InvalidParameter(f"invalid image archive: {what} {name!r} is missing")
        return path

    def read_json(self, name: str, what: str) -> tuple[Any, bytes]:
        """(parsed, raw bytes) of a JSON member, at most limits.max_json bytes."""
        path = self.path(name, what)
        size = os.path.getsize(path)
        if size > self.limits.max_json:
            raise InvalidParameter(
                f"invalid image archive: {what} {name!r} is larger than {self.limits.max_json} bytes"
            )
        with open(path, "rb") as f:
            raw = f.read()
        try:
            return json.loads(raw), raw
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidParameter(f"invalid image archive: {what} {name!r} is not valid JSON: {exc}") from exc
