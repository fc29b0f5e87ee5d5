"""The mounts under a directory in our mount namespace, found by mount id (statx(2),
listmount(2), statmount(2); Linux 6.8+) instead of reading /proc/self/mountinfo.

Why: the daemon's namespace holds a mount per sandbox. Generating that whole table as
text for every container removal made each removal cost O(containers) (~3 ms of
kernel time at 2,000). Here one listmount() gives the ids of the mounts below the
directory's mount (u64s, no text), and only ids not seen before are asked for their
mount point — unique mount ids are never reused, so what was learnt stays true for
as long as the id is listed.

`MountIds.under()` answers None where it cannot tell (an older kernel, no
CAP_SYS_ADMIN, an odd reply): the caller then reads the mountinfo table as before.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import threading

# x86_64 and aarch64 share the numbers of syscalls added since 4.x (asm-generic).
_SYS = {"x86_64": (332, 457, 458), "aarch64": (291, 457, 458)}
STATX_MNT_ID_UNIQUE = 0x4000
STATX_ATTR_MOUNT_ROOT = 0x2000
STATMOUNT_MNT_POINT = 0x10
_AT_FDCWD = -100
_AT_SYMLINK_NOFOLLOW = 0x100
_MNT_ID_REQ = struct.Struct("IIQQ")  # size, spare, mnt_id, param (MNT_ID_REQ_SIZE_VER0)
_STATMOUNT_HEAD = 512  # struct statmount's fixed part; its strings follow
_STATX_SIZE = 256

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class Unsupported(Exception):
    """The kernel (or our rights) cannot answer by mount id."""


def _numbers() -> tuple[int, int, int]:
    try:
        return _SYS[os.uname().machine]
    except KeyError:
        raise Unsupported(f"no syscall numbers for {os.uname().machine}") from None


def _fail(what: str) -> Exception:
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.EOPNOTSUPP):
        return Unsupported(f"{what}: {os.strerror(err)}")
    return OSError(err, f"{what}: {os.strerror(err)}")  # ENOENT: FileNotFoundError


def mount_of(path: str) -> tuple[int, bool]:
    """(unique id of the mount `path` is on, whether `path` is that mount's root);
    the last component is not followed if it is a symlink."""
    sys_statx = _numbers()[0]
    buf = ctypes.create_string_buffer(_STATX_SIZE)
    if _libc.syscall(sys_statx, _AT_FDCWD, os.fsencode(path), _AT_SYMLINK_NOFOLLOW, STATX_MNT_ID_UNIQUE, buf) < 0:
        raise _fail(f"statx {path}")
    mask, attributes = struct.unpack_from("I4xQ", buf, 0)  # stx_mask, stx_attributes
    known = struct.unpack_from("Q", buf, 0x38)[0]  # stx_attributes_mask
    mnt_id = struct.unpack_from("Q", buf, 0x90)[0]  # stx_mnt_id
    if not mask & STATX_MNT_ID_UNIQUE:
        raise Unsupported("statx gives no unique mount id (Linux < 6.8)")
    return mnt_id, bool(known & attributes & STATX_ATTR_MOUNT_ROOT)


def descendants(mnt_id: int) -> list[int]:
    """Unique ids of every mount below mount `mnt_id` (listmount(2) lists the whole
    subtree, not only children)."""
    sys_listmount = _numbers()[2]
    out: list[int] = []
    last = 0
    n = 4096
    ids = (ctypes.c_uint64 * n)()
    while True:
        req = _MNT_ID_REQ.pack(_MNT_ID_REQ.size, 0, mnt_id, last)
        got = _libc.syscall(sys_listmount, req, ids, ctypes.c_size_t(n), ctypes.c_ulong(0))
        if got < 0:
            raise _fail("listmount")
        out += ids[:got]
        if got < n:
            return out
        last = out[-1]


def mount_point(mnt_id: int) -> str | None:
    """Where mount `mnt_id` is mounted (relative to our root); None if it is gone."""
    sys_statmount = _numbers()[1]
    size = 4096
    while True:
        buf = ctypes.create_string_buffer(size)
        req = _MNT_ID_REQ.pack(_MNT_ID_REQ.size, 0, mnt_id, STATMOUNT_MNT_POINT)
        if _libc.syscall(sys_statmount, req, buf, ctypes.c_size_t(size), ctypes.c_ulong(0)) >= 0:
            break
        if ctypes.get_errno() == errno.ENOENT:
            return None
        if ctypes.get_errno() != errno.EOVERFLOW or size >= 1 << 20:
            raise _fail("statmount")
        size *= 4  # a mount point longer than the buffer
    mask = struct.unpack_from("Q", buf, 8)[0]
    if not mask & STATMOUNT_MNT_POINT:
        raise Unsupported("statmount gave no mount point")
    offset = struct.unpack_from("I", buf, 108)[0]
    raw = buf.raw[_STATMOUNT_HEAD + offset :]
    return os.fsdecode(raw[: raw.index(b"\0")])


class MountIds:
    """Mount points by unique mount id, learnt once per mount. Thread-safe."""

    def __init__(self) -> None:
        self._points: dict[int, str | None] = {}
        self._lock = threading.Lock()
        self.unsupported: str | None = None  # why the kernel cannot answer, once known

    def under(self, path: str) -> list[str] | None:
        """Mount points of our namespace below the directory `path`, parents before
        children; None if this cannot tell (an older kernel; `path` itself a mount
        point): read the mountinfo table instead."""
        if self.unsupported is not None:
            return None
        path = os.path.realpath(path)  # the kernel names mount points by real path
        prefix = path.rstrip("/") + "/"
        try:
            mnt_id, is_root = mount_of(path)
            if is_root:
                return None  # mounted on itself (perhaps more than once): the table tells all
            below = descendants(mnt_id)
            with self._lock:
                known = self._points
                new = [i for i in below if i not in known]
            learnt = {i: mount_point(i) for i in new}
            with self._lock:
                known.update(learnt)
                if len(known) > 2 * len(below) + 64:  # ids never come back: forget the gone
                    listed = set(below)
                    self._points = known = {i: p for i, p in known.items() if i in listed}
                points = [p for i in below if (p := known.get(i)) is not None and p.startswith(prefix)]
        except FileNotFoundError:
            return []
        except Unsupported as exc:
            self.unsupported = str(exc)
            return None
        return sorted(points, key=len)  # twice the same point: one mount over another
