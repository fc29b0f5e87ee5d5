"""Mounts seen from a process's mount namespace (/proc/PID/mountinfo), and unmounting in
a mount namespace other than the caller's.

Why another namespace: a daemon started by `ip netns exec` lives in a mount namespace
of its own. Its sandbox and overlay namespace bind mounts exist only there and in the
namespaces of the processes it starts (container supervisors), which keep that
mount namespace alive after the daemon dies. A restarted daemon (a new mount
namespace) must clean what the old one left, there.
"""

from __future__ import annotations

import os

from cnm.errors import CNMError
from cnm.osl.proc import run


def _unescape(path: str) -> str:
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def points_under(mountinfo: str, directory: str) -> list[tuple[str, str]]:
    """(mount point, fs type) of the mounts strictly under `directory`, in the order
    listed. Pure: parses the text of a mountinfo file."""
    base = os.path.normpath(directory).rstrip("/") + "/"
    out = []
    for line in mountinfo.splitlines():
        parts = line.split()
        if len(parts) < 5 or "-" not in parts[5:]:
            continue
        point = _unescape(parts[4])
        fstype = parts[parts.index("-", 5) + 1] if len(parts) > parts.index("-", 5) + 1 else ""
        if point.startswith(base):
            out.append((point, fstype))
    return out


def mountinfo(pid: int | str = "self") -> str:
    """The mountinfo text of process `pid` ("" if it is gone or unreadable)."""
    try:
        with open(f"/proc/{pid}/mountinfo") as f:
            return f.read()
    except OSError:
        return ""


def mount_namespace(pid: int | str = "self") -> int | None:
    """The inode of the process's mount namespace, None if it is gone."""
    try:
        return os.stat(f"/proc/{pid}/ns/mnt").st_ino
    except OSError:
        return None


def unmount_in(pid: int, path: str) -> None:
    """Detach the mount at `path` inside the mount namespace of process `pid` (which
    must be a process of ours: the caller checked its identity). Idempotent: a path
    not mounted there is success."""
    if not any(p == os.path.normpath(path) for p, _ in points_under(mountinfo(pid), os.path.dirname(path))):
        return
    try:
        run(["nsenter", f"--mount=/proc/{pid}/ns/mnt", "--", "umount", "-l", path], timeout=10)
    except CNMError:
        # Gone meanwhile (the process exited, or the mount went with a peer's unmount).
        if any(p == os.path.normpath(path) for p, _ in points_under(mountinfo(pid), os.path.dirname(path))):
            raise
