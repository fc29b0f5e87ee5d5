"""The runtime's only syscall seam: namespaces, mounts and process identity.

Python 3.11 has no os.unshare/os.setns, so they come from libc through ctypes. This
module is imported by the supervisor (shim) too, so it imports only what is cheap:
every millisecond of shim start-up is a millisecond of `start()` latency.

Everything raises OSError with the errno and the call that failed; callers translate
to cnm.errors where the error means something to a user.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20

MNT_DETACH = 2

_PR_SET_PDEATHSIG = 1

# glibc has no pivot_root() wrapper; syscall numbers per architecture.
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
# Nor seccomp() (glibc 2.36), mount_setattr() or close_range() before 2.34.
_SYS_SECCOMP = {"x86_64": 317, "aarch64": 277, "riscv64": 277, "ppc64le": 358, "s390x": 348}
_SYS_MOUNT_SETATTR = 442  # the same on every architecture (added in 5.12)
_SYS_OPEN_TREE = 428  # likewise (5.2)
_SYS_MOVE_MOUNT = 429
_SYS_CLOSE_RANGE = 436  # likewise (5.9)
_SYS_OPENAT2 = 437  # likewise (5.6)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
_libc.sethostname.argtypes = (ctypes.c_char_p, ctypes.c_size_t)
_libc.unshare.argtypes = (ctypes.c_int,)
_libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
_libc.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
# Resolved now, not at first use: a container's first call after fork would pay the lookup.
_libc.syscall.restype = ctypes.c_long
_libc.capset.restype = ctypes.c_int


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _b(s: str | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def mount(source: str | None, target: str, fstype: str | None = None, flags: int = 0, data: str | None = None) -> None:
    _check(
        _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)),
        f"mount {fstype or ''} {target}".replace("  ", " "),
    )


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), flags), f"umount {target}")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), "sethostname")


def pivot_root(new_root: str, put_old: str) -> None:
    nr = _SYS_PIVOT_ROOT.get(os.uname().machine)
    if nr is None:
        raise OSError(38, f"pivot_root: unknown syscall number on {os.uname().machine}")
    _check(_libc.syscall(ctypes.c_long(nr), _b(new_root), _b(put_old)), "pivot_root")


def set_pdeathsig(sig: int) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies."""
    _check(_libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")


def set_comm(name: str) -> None:
    """Set this process's name as shown by ps/top (15 bytes at most). Through /proc,
    not prctl: a ctypes call allocates, and in a supervisor every allocation is memory
    no longer shared with the template."""
    fd = os.open("/proc/self/comm", os.O_WRONLY)
    try:
        os.write(fd, name.encode()[:15])
    finally:
        os.close(fd)


# --- confinement: mount attributes, capabilities, no_new_privs, seccomp --------------

AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MS_REMOUNT = 32
MS_STRICTATIME = 1 << 24
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_CAPABILITY_VERSION_3 = 0x20080522
_SECCOMP_SET_MODE_FILTER = 1
_CLOSE_RANGE_CLOEXEC = 4


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_CapDataPair = _CapData * 2  # made at import: a type built after fork costs page faults


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


AT_EMPTY_PATH = 0x1000
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOVE_MOUNT_T_EMPTY_PATH = 0x40


# With RESOLVE_IN_ROOT a ".." fails with EAGAIN if any mount or rename happened on the
# machine during the lookup (the kernel cannot then prove it stayed inside): retry, as
# filepath-securejoin (runc's) does. Seen under load: other tests' mounts.
OPENAT2_TRIES = 32


def openat2(dirfd: int, path: str, flags: int, resolve: int) -> int:
    """openat2(2): open `path` relative to `dirfd` under the RESOLVE_* rules (with
    RESOLVE_IN_ROOT the kernel resolves "/", ".." and every symlink as if `dirfd` were
    the root, with no window between checking and using a path). Close-on-exec."""
    how = _OpenHow(flags | os.O_CLOEXEC, 0, resolve)
    for _ in range(OPENAT2_TRIES):
        fd = _libc.syscall(
            ctypes.c_long(_SYS_OPENAT2),
            ctypes.c_int(dirfd),
            _b(path),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
        if fd >= 0:
            return fd
        err = ctypes.get_errno()
        if err != errno.EAGAIN:
            break
    raise OSError(err, f"openat2 {path}: {os.strerror(err)}")


def fd_path(fd: int) -> str:
    """A path naming exactly what `fd` is open on, for calls that take only paths
    (mount(2)): the kernel follows the /proc magic link to that very file, whatever
    happens to the names leading to it (runc mounts on fds this way)."""
    return f"/proc/self/fd/{fd}"


def mount_setattr_fd(fd: int, attr_set: int, attr_clr: int = 0, recursive: bool = True) -> None:
    """mount_setattr() on the mount `fd` is the root of (an O_PATH fd, or a tree from
    clone_tree())."""
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    _check(
        _libc.syscall(
            ctypes.c_long(_SYS_MOUNT_SETATTR),
            ctypes.c_int(fd),
            b"",
            ctypes.c_uint(AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)),
            ctypes.byref(attr),
            ctypes.c_size_t(ctypes.sizeof(attr)),
        ),
        "mount_setattr",
    )


def clone_tree_fd(fd: int, recursive: bool) -> int:
    """clone_tree() of the mount at an open fd (open_tree(AT_EMPTY_PATH))."""
    flags = 1 | os.O_CLOEXEC | AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    tree = _libc.syscall(ctypes.c_long(_SYS_OPEN_TREE), ctypes.c_int(fd), b"", ctypes.c_uint(flags))
    if tree < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"open_tree: {os.strerror(err)}")
    return tree


def attach_tree_at(tree: int, target_fd: int) -> None:
    """Mount a tree from clone_tree() on the directory or file `target_fd` is open on
    (move_mount with both ends as fds: no path is looked up)."""
    _check(
        _libc.syscall(
            ctypes.c_long(_SYS_MOVE_MOUNT),
            ctypes.c_int(tree),
            b"",
            ctypes.c_int(target_fd),
            b"",
            ctypes.c_uint(_MOVE_MOUNT_F_EMPTY_PATH | _MOVE_MOUNT_T_EMPTY_PATH),
        ),
        "move_mount",
    )


def mount_setattr(path: str, attr_set: int, attr_clr: int = 0, recursive: bool = True) -> None:
    """Set mount attributes (MOUNT_ATTR_*) on the mount at `path`, and on every mount
    below it with `recursive` — one syscall for a whole tree, unlike MS_REMOUNT."""
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    _check(
        _libc.syscall(
            ctypes.c_long(_SYS_MOUNT_SETATTR),
            ctypes.c_int(AT_FDCWD),
            _b(path),
            ctypes.c_uint(AT_RECURSIVE if recursive else 0),
            ctypes.byref(attr),
            ctypes.c_size_t(ctypes.sizeof(attr)),
        ),
        f"mount_setattr {path}",
    )


def clone_tree(path: str, recursive: bool) -> int:
    """A detached copy of the mount at `path` (and those below it with `recursive`),
    as a close-on-exec fd for attach_tree(): open_tree(OPEN_TREE_CLONE). The copy keeps
    the flags the mounts have now, whatever happens to the originals afterwards."""
    flags = 1 | os.O_CLOEXEC | (AT_RECURSIVE if recursive else 0)  # OPEN_TREE_CLONE
    fd = _libc.syscall(ctypes.c_long(_SYS_OPEN_TREE), ctypes.c_int(AT_FDCWD), _b(path), ctypes.c_uint(flags))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"open_tree {path}: {os.strerror(err)}")
    return fd


def attach_tree(fd: int, target: str) -> None:
    """Mount a tree from clone_tree() at `target` (move_mount(MOVE_MOUNT_F_EMPTY_PATH))."""
    _check(
        _libc.syscall(
            ctypes.c_long(_SYS_MOVE_MOUNT),
            ctypes.c_int(fd),
            b"",
            ctypes.c_int(AT_FDCWD),
            _b(target),
            ctypes.c_uint(0x4),
        ),
        f"move_mount {target}",
    )


def drop_bounding(caps: int) -> None:
    """Drop every capability whose bit is set in `caps` from the bounding set."""
    for n in range(64):
        if caps >> n & 1:
            _check(_libc.prctl(_PR_CAPBSET_DROP, n, 0, 0, 0), f"prctl(PR_CAPBSET_DROP, {n})")


def clear_ambient() -> None:
    _check(_libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "prctl(PR_CAP_AMBIENT_CLEAR_ALL)")


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set this thread's capability sets (64-bit masks)."""
    hdr = _CapHeader(_CAPABILITY_VERSION_3, 0)
    data = _CapDataPair(
        _CapData(effective & 0xFFFFFFFF, permitted & 0xFFFFFFFF, inheritable & 0xFFFFFFFF),
        _CapData(effective >> 32, permitted >> 32, inheritable >> 32),
    )
    _check(_libc.capset(ctypes.byref(hdr), data), "capset")


def set_not_dumpable() -> None:
    """PR_SET_DUMPABLE 0: /proc/PID/* of this process (exe, mem, fd, environ) and ptrace
    need CAP_SYS_PTRACE from now until execve, which makes a plain program dumpable again."""
    _check(_libc.prctl(4, 0, 0, 0, 0), "prctl(PR_SET_DUMPABLE)")


def set_no_new_privs() -> None:
    """From here on, execve never grants privileges (setuid bits, file capabilities)."""
    _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")


def seccomp_load(program: bytes, flags: int = 0) -> None:
    """Install a classic-BPF seccomp filter (struct sock_filter[], 8 bytes each). Needs
    no_new_privs or CAP_SYS_ADMIN."""
    nr = _SYS_SECCOMP.get(os.uname().machine)
    if nr is None:
        raise OSError(38, f"seccomp: unknown syscall number on {os.uname().machine}")
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
    _check(
        _libc.syscall(
            ctypes.c_long(nr), ctypes.c_uint(_SECCOMP_SET_MODE_FILTER), ctypes.c_uint(flags), ctypes.byref(prog)
        ),
        "seccomp(SECCOMP_SET_MODE_FILTER)",
    )


def cloexec_from(first: int) -> None:
    """Mark every descriptor >= first close-on-exec (close_range(2), one syscall)."""
    _check(
        _libc.syscall(
            ctypes.c_long(_SYS_CLOSE_RANGE),
            ctypes.c_uint(first),
            ctypes.c_uint(0xFFFFFFFF),
            ctypes.c_uint(_CLOSE_RANGE_CLOEXEC),
        ),
        "close_range",
    )


# --- process identity (from /proc) -------------------------------------------------


def mount_points() -> list[str]:
    """The mount points of our mount namespace, in /proc/self/mountinfo's order (parents
    before children); octal escapes (a space is \\040) decoded."""
    fd = os.open("/proc/self/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(fd)
    out = []
    for line in b"".join(chunks).split(b"\n"):
        fields = line.split(b" ", 5)
        if len(fields) > 4:
            out.append(_unescape(fields[4]))
    return out


def _unescape(raw: bytes) -> str:
    if b"\\" not in raw:
        return os.fsdecode(raw)
    out, i = bytearray(), 0
    while i < len(raw):
        if raw[i : i + 1] == b"\\" and raw[i + 1 : i + 4].isdigit():
            out.append(int(raw[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return os.fsdecode(bytes(out))


def readable(fd: int, timeout: float) -> bool:
    """Whether fd becomes readable within `timeout` seconds. poll, not select: the
    daemon holds an fd per running container, and select() refuses any fd past 1,023."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0, int(timeout * 1000))))


def proc_stat(pid: int) -> tuple[str, int, str] | None:
    """(state letter, start time in clock ticks since boot, comm) of a process, from
    fields 3, 22 and 2 of /proc/PID/stat; None if there is no such process. (pid, start
    time) identifies a process within one boot: pids are reused, the pair is not."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    end = raw.rindex(b")")
    rest = raw[end + 2 :].split()
    return rest[0].decode(), int(rest[19]), raw[raw.index(b"(") + 1 : end].decode(errors="replace")


def is_alive(pid: int, start: int | None, comm: str | None = None) -> bool:
    """True if `pid` is still the process that started at `start` and is not a zombie
    (and, when given, is named `comm`). An unknown start time (None) cannot be
    verified, so it counts as dead."""
    if start is None:
        return False
    st = proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X") and st[1] == start and (comm is None or st[2] == comm)


def boot_id() -> str:
    """This boot's random id: (pid, start time) pairs recorded in a directory that
    survives a reboot mean nothing after one."""
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


def cmdline(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return [os.fsdecode(p) for p in raw.split(b"\0") if p]
