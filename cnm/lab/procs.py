"""Processes, namespaces and mounts a lab owns, found from /proc (no commands run here).

Ownership, never patterns: a recorded pid is signalled only while its start time still
matches the recorded one (the pid may have been reused); stray processes are found
by their network namespace being one of the lab's; mounts by lying under the lab's
own directory.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may hold spaces and parentheses: the fields after it follow the last ')'
    return text[text.rindex(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), None if it does not exist."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def alive(pid: int, start: int | None) -> bool:
    """Is `pid` still the process we started (same start time) and not a zombie?
    Without a recorded start time we cannot tell, and never claim it is ours."""
    if start is None:
        return False
    fields = _stat_fields(pid)
    if not fields or fields[0] in ("Z", "X"):
        return False
    return int(fields[19]) == start


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def terminate(pid: int, start: int | None, timeout: float = 10.0) -> str:
    """SIGTERM, then SIGKILL after `timeout`. Returns what happened: "gone" (not ours
    any more or already exited), "stopped", "killed"."""
    if not alive(pid, start):
        _reap(pid)
        return "gone"
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return "stopped"
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            if not alive(pid, start):
                return "stopped" if sig == signal.SIGTERM else "killed"
            time.sleep(0.05)
    return "killed"


def netns_inode(path: str | Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def pids_in_netns(inodes: set[int]) -> list[int]:
    """Pids of processes whose network namespace is one of `inodes`."""
    out = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            link = os.readlink(f"/proc/{entry}/ns/net")  # "net:[4026532…]"
        except OSError:
            continue
        if int(link[link.index("[") + 1 : -1]) in inodes:
            out.append(int(entry))
    return out


def _unescape(path: str) -> str:
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def mounts_under(directory: str | Path, mountinfo: str | None = None) -> list[tuple[str, str]]:
    """(mount point, fs type) of every mount at or under `directory`, deepest first."""
    base = os.path.realpath(directory).rstrip("/") + "/"
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return []
    found = []
    for line in mountinfo.splitlines():
        parts = line.split()
        if len(parts) < 5 or "-" not in parts:
            continue
        point = _unescape(parts[4])
        fstype = parts[parts.index("-") + 1]
        if (point.rstrip("/") + "/").startswith(base):
            found.append((point, fstype))
    return sorted(set(found), key=lambda m: -len(m[0]))


def nsfs_inodes_under(directory: str | Path) -> set[int]:
    """Inodes of the namespaces bind-mounted under `directory` (container sandboxes)."""
    out = set()
    for point, fstype in mounts_under(directory):
        if fstype == "nsfs":
            ino = netns_inode(point)
            if ino is not None:
                out.add(ino)
    return out


def terminate_all(
    targets: dict[str, tuple[int, int | None]],
    timeout: float = 10.0,
    kill_after: float = 5.0,
    sig: int = signal.SIGTERM,
) -> dict[str, str]:
    """terminate() for many processes at once: `sig` (SIGTERM) to all, one shared
    wait, then SIGKILL to those left. Returns key -> "gone" | "stopped" | "killed"."""
    outcome: dict[str, str] = {}
    live: dict[str, tuple[int, int | None]] = {}
    for key, (pid, start) in targets.items():
        if not alive(pid, start):
            _reap(pid)
            outcome[key] = "gone"
            continue
        try:
            os.kill(pid, sig)
            live[key] = (pid, start)
        except ProcessLookupError:
            outcome[key] = "stopped"
    for kill, wait, verdict in ((False, timeout, "stopped"), (True, kill_after, "killed")):
        if kill:
            for pid, _ in live.values():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + wait
        while live and time.monotonic() < deadline:
            for key, (pid, start) in list(live.items()):
                _reap(pid)
                if not alive(pid, start):
                    outcome[key] = verdict
                    del live[key]
            if live:
                time.sleep(0.05)
    for key in live:
        outcome[key] = "killed"
    return outcome


def kill_all(pids: list[int]) -> None:
    """SIGKILL each pid now (strays: nothing to wait for in order)."""
    for pid in pids:
        start = start_time(pid)
        if start is not None and alive(pid, start):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def nsfs_inodes_seen_by(pids: list[int], directory: str | Path) -> set[int]:
    """Inodes of the namespaces bind-mounted under `directory` in the mount namespaces
    of these processes (a lab daemon mounts its sandboxes in a mount namespace of its
    own, which its supervisors share): found through /proc/PID/root, one read per
    mount namespace."""
    base = os.path.realpath(directory)
    out: set[int] = set()
    seen_mnt: set[str] = set()
    for pid in pids:
        try:
            mnt = os.readlink(f"/proc/{pid}/ns/mnt")
            if mnt in seen_mnt:
                continue
            seen_mnt.add(mnt)
            info = Path(f"/proc/{pid}/mountinfo").read_text()
        except OSError:
            continue
        for point, fstype in mounts_under(base, info):
            if fstype == "nsfs":
                ino = netns_inode(f"/proc/{pid}/root{point}")
                if ino is not None:
                    out.add(ino)
    return out
