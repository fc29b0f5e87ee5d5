"""The runtime's only syscall seam: namespaces, mounts and process identity.

Python 3.11 has no os.unshare/os.setns, so they come from libc through ctypes. This
module is imported by the supervisor (shim) too, so it imports only what is cheap:
every millisecond of shim start-up is a millisecond of `start()` latency.

Everything raises OSError with the errno and the call that failed; callers translate
to cnm.errors where the error means something to a user.
"""
from __future__ import annotations

import ctypes
import os

CLONE_NEWNS = 0x00020000
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

MNT_DETACH = 2

_PR_SET_PDEATHSIG = 1

# glibc has no pivot_root() wrapper; syscall numbers per architecture.
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
_libc.sethostname.argtypes = (ctypes.c_char_p, ctypes.c_size_t)
_libc.unshare.argtypes = (ctypes.c_int,)
_libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
_libc.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)


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
    _check(_libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)), f"mount {fstype or ''} {target}".replace("  ", " "))


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


# --- process identity (from /proc) -------------------------------------------------

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
    rest = raw[end + 2:].split()
    return rest[0].decode(), int(rest[19]), raw[raw.index(b"(") + 1:end].decode(errors="replace")


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
