"""Extract one layer tar into an empty directory, ready to be an overlayfs lower dir.

Streaming: members are read one at a time from a non-seekable stream and file data is
copied in 1 MiB chunks, so memory does not grow with the layer. The digest of the
uncompressed stream (the layer's diff ID) is computed on the way through.

Safety (the tar is untrusted): every path is cleaned by `entries.classify`; parents are
walked with O_NOFOLLOW from a directory descriptor of the layer root, so a symlink in
the layer can never redirect a write outside it; hard links resolve the same way and
must point at something earlier in the same layer; device nodes other than whiteouts
are not created; only `user.*` and `security.capability` xattrs are applied (a layer
must not set `trusted.overlay.*` and steer overlayfs). Whiteouts become 0/0 character
devices and opaque directories get `trusted.overlay.opaque=y`, overlayfs's own forms.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import tarfile
import zlib
from dataclasses import dataclass, field
from typing import Any, cast

from cnm.errors import InvalidParameter
from cnm.images import entries as E
from cnm.images.digest import HashingReader, Reader
from cnm.images.limits import DEFAULT_LIMITS, Limits, decompressed
from cnm.rmtree import remove_tree

log = logging.getLogger(__name__)

OPAQUE_XATTR = "trusted.overlay.opaque"
_ALLOWED_XATTR_PREFIXES = ("user.", "security.capability")
_PAX_XATTR = "SCHILY.xattr."
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20
_DECOMPRESS_ERRORS = (OSError, EOFError, zlib.error)


@dataclass
class Extracted:
    diff_id: str  # sha256 of the uncompressed tar
    blob_digest: str  # sha256 of the bytes as given (compressed or not)
    compression: str | None
    size: int  # bytes of regular file content (hard links counted once)
    devices_skipped: list[str] = field(default_factory=list)


def extract_layer(blob: Reader, dest: str, limits: Limits = DEFAULT_LIMITS) -> Extracted:
    """Extract `blob` (a layer tar, maybe gzip/bzip2/xz) into the existing empty `dest`.
    InvalidParameter for bad input; the caller removes `dest` on any failure."""
    raw = HashingReader(blob, limit=limits.max_archive, what="the layer blob")
    try:
        inner, compression = decompressed(raw)
        # A plain tar's diff ID is its blob digest: hash it once (sha256 is most of the CPU)
        tar_stream = HashingReader(
            inner, limit=limits.max_layer, what="an uncompressed layer", hashing=compression is not None
        )
        applier = _Applier(dest, limits)
        try:
            applier.run(tar_stream)
        finally:
            applier.close()
        tar_stream.drain()
        raw.drain()
    except _DECOMPRESS_ERRORS as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # a real I/O error (disk full, …), not bad input
        raise InvalidParameter(f"layer data is corrupt: {exc}") from exc
    blob_digest = raw.digest()
    diff_id = tar_stream.digest() if compression is not None else blob_digest
    return Extracted(diff_id, blob_digest, compression, applier.size, applier.devices)


class _Applier:
    def __init__(self, dest: str, limits: Limits) -> None:
        self.root = os.open(dest, _DIR_FLAGS)
        self.limits = limits
        self.size = 0
        self.devices: list[str] = []
        self.dirs: list[tuple[str, tarfile.TarInfo]] = []  # metadata applied last
        self.as_root = os.geteuid() == 0
        self._cached: tuple[str, int] | None = None  # (parent path, fd)

    def close(self) -> None:
        self._drop_cache()
        os.close(self.root)

    def run(self, stream: Reader) -> None:
        try:
            tf = tarfile.open(fileobj=cast(Any, stream), mode="r|")
        except tarfile.ReadError as exc:
            if getattr(stream, "count", 1) == 0:
                return  # an empty blob: an empty layer
            raise InvalidParameter(f"layer is not a tar archive: {exc}") from exc
        count = 0
        while True:
            try:
                member = tf.next()
            except tarfile.TarError as exc:
                raise InvalidParameter(f"layer is not a valid tar archive: {exc}") from exc
            if member is None:
                break
            tf.members.clear()  # type: ignore[attr-defined]  # stream mode keeps every header otherwise
            count += 1
            if count > self.limits.max_members:
                raise InvalidParameter(f"layer has more than {self.limits.max_members} entries")
            self.apply(E.classify(member), member, tf)
        for path, member in reversed(self.dirs):  # children first: their mtimes stay put
            self._finish_dir(path, member)

    # -- walking ------------------------------------------------------------------

    def _drop_cache(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    def parent_fd(self, path: str, create: bool = True) -> tuple[int, str]:
        """(fd of path's parent directory, base name), never following a symlink."""
        parent, _, base = path.rpartition("/")
        if self._cached is not None and self._cached[0] == parent:
            return self._cached[1], base
        self._drop_cache()
        fd = self.open_dir(parent, create)
        self._cached = (parent, fd)
        return fd, base

    def open_dir(self, path: str, create: bool) -> int:
        fd = os.dup(self.root)
        try:
            for part in path.split("/") if path else ():
                try:
                    nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(part, 0o755, dir_fd=fd)
                    nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise InvalidParameter(
                            f"invalid layer: a parent of {path!r} is a symlink or a file, not a directory"
                        ) from exc
                    raise
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _clear(self, pfd: int, base: str, keep_dir: bool = False) -> None:
        """Remove what is at base (a later entry replaces an earlier one)."""
        try:
            st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return
            # The cached fd is always base's parent, outside the tree removed here.
            errs = remove_tree(base, dir_fd=pfd)  # not shutil.rmtree: see cnm.rmtree
            if errs:
                raise OSError(errs[0])
        else:
            os.unlink(base, dir_fd=pfd)

    # -- members ------------------------------------------------------------------

    def apply(self, entry: E.Entry, member: tarfile.TarInfo, tf: tarfile.TarFile) -> None:
        kind = entry.kind
        if kind == E.SKIP:
            return
        if kind == E.DEVICE:
            self.devices.append(entry.path)
            return
        if kind == E.OPAQUE:
            fd = self.open_dir(entry.path, create=True)
            try:
                os.setxattr(fd, OPAQUE_XATTR, b"y")
            finally:
                os.close(fd)
            return
        if kind == E.DIR:
            pfd, base = self.parent_fd(entry.path)
            self._clear(pfd, base, keep_dir=True)
            try:
                os.mkdir(base, 0o700, dir_fd=pfd)
            except FileExistsError:
                pass
            self.dirs.append((entry.path, member))
            return
        pfd, base = self.parent_fd(entry.path)
        self._clear(pfd, base)
        if kind == E.FILE:
            self._file(pfd, base, member, tf)
        elif kind == E.SYMLINK:
            os.symlink(entry.target, base, dir_fd=pfd)
            self._owner_times(pfd, base, member)
        elif kind == E.HARDLINK:
            self._hardlink(pfd, base, entry)
        elif kind == E.FIFO:
            os.mkfifo(base, member.mode & 0o7777, dir_fd=pfd)
            self._owner_times(pfd, base, member, mode=True)
        elif kind == E.WHITEOUT:
            os.mknod(base, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)

    def _file(self, pfd: int, base: str, member: tarfile.TarInfo, tf: tarfile.TarFile) -> None:
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=pfd)
        with os.fdopen(fd, "wb", closefd=True) as out:
            src = tf.extractfile(member)
            if src is not None:
                try:
                    shutil.copyfileobj(src, out, _CHUNK)
                except tarfile.TarError as exc:
                    raise InvalidParameter(f"layer is truncated or corrupt at {member.name!r}: {exc}") from exc
            out.flush()
            self._metadata(out.fileno(), member)
        self.size += member.size

    def _metadata(self, fd: int, member: tarfile.TarInfo) -> None:
        if self.as_root:
            os.fchown(fd, member.uid, member.gid)  # before chmod: chown clears setuid
        os.fchmod(fd, member.mode & 0o7777)
        self._xattrs(fd, member)
        os.utime(fd, ns=(int(member.mtime * 1e9),) * 2)

    def _xattrs(self, fd: int, member: tarfile.TarInfo) -> None:
        for key, value in member.pax_headers.items():
            if not key.startswith(_PAX_XATTR):
                continue
            name = key[len(_PAX_XATTR) :]
            if not name.startswith(_ALLOWED_XATTR_PREFIXES):
                continue
            raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
            try:
                os.setxattr(fd, name, raw)
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise

    def _owner_times(self, pfd: int, base: str, member: tarfile.TarInfo, mode: bool = False) -> None:
        if self.as_root:
            os.chown(base, member.uid, member.gid, dir_fd=pfd, follow_symlinks=False)
        if mode:
            os.chmod(base, member.mode & 0o7777, dir_fd=pfd)
        os.utime(base, ns=(int(member.mtime * 1e9),) * 2, dir_fd=pfd, follow_symlinks=False)

    def _hardlink(self, pfd: int, base: str, entry: E.Entry) -> None:
        tparent, _, tbase = entry.target.rpartition("/")
        try:
            tfd = self.open_dir(tparent, create=False)
        except FileNotFoundError:
            tfd = -1
        try:
            if tfd < 0:
                raise FileNotFoundError
            os.link(tbase, base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError as exc:
            raise InvalidParameter(
                f"invalid layer: hard link {entry.path!r} points at {entry.target!r}, "
                "which is not earlier in the same layer"
            ) from exc
        except (PermissionError, IsADirectoryError) as exc:
            raise InvalidParameter(
                f"invalid layer: hard link {entry.path!r} points at {entry.target!r}, "
                "which cannot be linked (a directory?)"
            ) from exc
        finally:
            if tfd >= 0:
                os.close(tfd)

    def _finish_dir(self, path: str, member: tarfile.TarInfo) -> None:
        self._drop_cache()
        try:
            fd = self.open_dir(path, create=False)
        except (FileNotFoundError, InvalidParameter):
            return  # replaced by a later entry (a file or a whiteout)
        try:
            self._metadata(fd, member)
        finally:
            os.close(fd)
