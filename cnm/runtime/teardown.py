"""Ending things by identity: signalling a recorded process, fencing a directory,
settling a lost supervisor, removing a container's directory with its cgroups and
mounts. Best-effort where it tears down: every failure is collected, none stops the
rest."""

from __future__ import annotations

import json
import os
import signal
import time

from cnm.rmtree import remove_tree
from cnm.runtime import cgroups as cg
from cnm.runtime import files, linux
from cnm.runtime.mountids import MountIds
from cnm.runtime.state import DirFiles, read_dir, supervisor_alive, supervisor_ident


def signal_pid(pid: int | None, start: int | None, sig: int) -> bool:
    """Signal `pid` if it is still the process that started at `start` (through a
    pidfd: the check and the signal cannot race with pid reuse). False if it is gone."""
    if not pid:
        return False
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    try:
        if not linux.is_alive(pid, start):
            return False
        signal.pidfd_send_signal(fd, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(fd)


def wait_gone(pid: int, start: int, timeout: float) -> bool:
    """Wait until the process (pid, start) has exited; False on timeout."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        if not linux.is_alive(pid, start):
            return True
        return linux.readable(fd, timeout)
    finally:
        os.close(fd)


def remove_files(cdir: str, names: tuple[str, ...]) -> None:
    for name in names:
        try:
            os.unlink(os.path.join(cdir, name))
        except FileNotFoundError:
            pass


def last_line(cdir: str) -> str:
    """The supervisor's last words (shim.log), for an error message."""
    try:
        with open(os.path.join(cdir, files.SHIM_LOG)) as f:
            lines = [ln for ln in f.read().splitlines() if ln.strip()]
        return lines[-1] if lines else "no output"
    except OSError:
        return "no output"


def settle_lost(cdir: str, d: DirFiles) -> None:
    """A supervisor died without an exit status: kill its process if it somehow runs,
    and record 137."""
    started = d.started or {}
    signal_pid(started.get("pid"), started.get("pid_start"), signal.SIGKILL)
    files.write_atomic(
        os.path.join(cdir, files.EXIT),
        files.dump_flat(
            {
                "exit_code": files.LOST_EXIT_CODE,
                "finished_at": files.rfc3339(time.time()),
                "error": "supervisor died without recording the exit status",
            }
        ),
    )


def fence_and_kill(cdir: str, boot_id: str) -> None:
    """Make the directory unclaimable (an empty shim.pid; see cnm.runtime.files), or,
    if a supervisor claimed it already, kill that one and wait for it."""
    try:
        if files.claim(os.path.join(cdir, files.SHIM_PID), ""):
            return
    except OSError:
        return
    d = read_dir(cdir)
    ident = supervisor_ident(d)
    if ident is not None and supervisor_alive(d, boot_id):
        signal_pid(ident[0], ident[1], signal.SIGKILL)
        wait_gone(ident[0], ident[1], 5)


def discard(cdir: str, cgroups: cg.Cgroups, boot_id: str) -> list[str]:
    """Best-effort teardown of a container directory; returns what failed."""
    errs: list[str] = []
    # Fence first: once shim.pid exists, no supervisor can claim the directory any
    # more (a start abandoned on a timeout may still be forked late). If one claimed
    # it already, it is killed here.
    fence_and_kill(cdir, boot_id)
    d = read_dir(cdir)
    if d.started:
        signal_pid(d.started.get("pid"), d.started.get("pid_start"), signal.SIGKILL)
    try:
        with open(os.path.join(cdir, files.CGROUPS)) as f:
            dirs = json.load(f)
        if dirs:
            cgroups.layout  # noqa: B018 - detection re-mounts .cgroupfs in a fresh namespace
        errs += cg.remove(dirs)
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        errs.append(f"cgroups list: {exc}")
    errs += unmount_under(cdir)
    errs += remove_tree(cdir)  # not shutil.rmtree: see cnm.rmtree
    return errs


_MOUNT_IDS = MountIds()


def unmount_under(cdir: str) -> list[str]:
    """Detach any mount left under the container directory in *our* mount namespace.
    Normally there is none: the shim mounts only inside the container's namespace.
    Asked by mount id (cheap however many sandboxes the daemon has mounted); the
    mountinfo table is read where the kernel cannot answer that way."""
    points = _MOUNT_IDS.under(cdir)
    if points is None:
        points = _mounted_under(cdir)
    errs = []
    for p in sorted(points, key=len, reverse=True):
        try:
            linux.umount2(p, linux.MNT_DETACH)
        except OSError as exc:
            errs.append(f"umount {p}: {exc.strerror}")
    return errs


def _mounted_under(cdir: str) -> list[str]:
    """Mount points at or under `cdir`, from /proc/self/mountinfo (O(mounts))."""
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            text = f.read()
    except OSError:
        return []
    # The daemon's table holds a mount per sandbox (thousands): parse it only when the
    # directory's name is in it at all (as mountinfo escapes it).
    if _mangled(cdir).encode() not in text:
        return []
    return [
        p
        for _, p, _, _ in cg.parse_mountinfo(text.decode(errors="surrogateescape"))
        if p == cdir or p.startswith(cdir + "/")
    ]


def _mangled(path: str) -> str:
    """`path` as /proc/*/mountinfo writes it: space, tab, newline and backslash as \\ooo."""
    return path.replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011").replace("\n", "\\012")
