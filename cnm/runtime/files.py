"""The container directory's layout and the small pure helpers both sides need.

One directory per container, `<state_dir>/<id>/`:

    spec.json      the ContainerSpec (written by Runtime.create, or a start given one)
    cgroups.json   absolute cgroup directories created for it (Runtime)
    hosts, resolv.conf, hostname
                   contents bind-mounted over /etc/* inside the container (Runtime)
    upper/ work/ merged/
                   overlayfs layers when the spec has a rootfs (Runtime makes, shim mounts)
    container.log, container.log.1, …
                   the container's output: timestamped records of both streams, rotated
                   (shim's relay writes, cnm.runtime.logs reads)
    attach.sock    where clients attach while it runs (0600; shim)
    shim.log       the supervisor's own stderr: tracebacks, warnings (shim)
    shim.pid       "<pid> <start-time> <boot-id>": the supervisor's claim on the directory,
                   made first thing with link() so that it is exclusive and whole (shim;
                   or an empty "fence" by Runtime when a failed start is cleaned away, so
                   that no late supervisor can claim the directory any more)
    state.json     {"shim_pid", "shim_start", "pid", "pid_start", "started_at"} once the
                   container process has exec'd (written as state.json.new by the
                   container process just before exec, renamed by the shim after)
    confine.marshal
                   what an exec'd process is locked down with: confine.lock_plan(), marshal
                   (Runtime.start; read by exec())
    exit.json      {"exit_code", "finished_at"[, "error"]} when it ended (shim, atomic;
                   or Runtime.adopt for a shim that died without writing it)

The shim imports this module, so it must stay cheap: no json (json pulls in `re`, ~9 ms
of start-up), no dataclasses. `dump_flat` writes the flat JSON objects above by hand.
"""

from __future__ import annotations

import os
import time

SPEC = "spec.json"
CGROUPS = "cgroups.json"
HOSTS = "hosts"
RESOLV_CONF = "resolv.conf"
HOSTNAME = "hostname"
UPPER = "upper"
WORK = "work"
MERGED = "merged"
SHIM_LOG = "shim.log"
SHIM_PID = "shim.pid"
STATE = "state.json"
STATE_NEW = "state.json.new"
EXIT = "exit.json"
LOCK_PLAN = "confine.marshal"  # the container's capabilities/NNP/seccomp, for exec (marshal)

# The supervisor's process name (comm): a recorded pid is trusted only if /proc shows it.
SHIM_COMM = "cnm-shim"
TEMPLATE_COMM = "cnm-template"

# Exit code recorded for a container whose shim died without recording one: the
# container was (or is then) killed with SIGKILL, so report what a SIGKILL gives.
LOST_EXIT_CODE = 137


def exit_code(wait_status: int) -> int:
    """Docker's exit code from a waitpid() status: the code, or 128+signal."""
    if os.WIFEXITED(wait_status):
        return os.WEXITSTATUS(wait_status)
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    raise ValueError(f"wait status {wait_status:#x} is neither an exit nor a signal")


def rfc3339(t: float) -> str:
    """UTC RFC 3339 with microseconds, e.g. 2024-05-01T12:00:00.123456Z."""
    us = int(round((t % 1) * 1_000_000))
    if us == 1_000_000:
        t, us = t + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(t))) + f".{us:06d}Z"


def _json_str(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def dump_flat(obj: dict[str, int | str | None]) -> str:
    """JSON for a flat object of ints, strings and None (what the shim writes)."""
    parts = []
    for k, v in obj.items():
        if v is None:
            val = "null"
        elif isinstance(v, bool) or not isinstance(v, (int, str)):
            raise TypeError(f"dump_flat: {k}={v!r} is not an int, str or None")
        elif isinstance(v, int):
            val = str(v)
        else:
            val = _json_str(v)
        parts.append(f"{_json_str(k)}: {val}")
    return "{" + ", ".join(parts) + "}\n"


def write_atomic(path: str, data: str | bytes, mode: int = 0o600, dir_fd: int | None = None) -> None:
    """Write then rename: readers see the old file or the whole new one, never half.
    The file gets exactly `mode` (the spec holds the container's environment: 0600);
    never written through a symlink. With `dir_fd`, `path` is relative to that
    directory (the supervisor writes through the directory it was handed, never
    through a path that could name a newer one)."""
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data.encode() if isinstance(data, str) else data)
    finally:
        os.close(fd)
    os.rename(tmp, path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def claim(path: str, data: str, dir_fd: int | None = None, mode: int = 0o600) -> bool:
    """Create `path` holding `data`, whole, only if it does not exist yet (write a
    temporary, then link(): link never replaces). False if it already existed."""
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data.encode())
    finally:
        os.close(fd)
    try:
        os.link(tmp, path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp, dir_fd=dir_fd)


def parse_pid_file(text: str) -> tuple[int, int, str | None]:
    """`shim.pid` holds "<pid> <start-time> <boot-id>" (files written before boot ids
    were recorded have two fields: boot id None)."""
    parts = text.split()
    if len(parts) == 2:
        return int(parts[0]), int(parts[1]), None
    pid, start, boot = parts
    return int(pid), int(start), boot
