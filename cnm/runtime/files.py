"""The container directory's layout and the small pure helpers both sides need.

One directory per container, `<state_dir>/<id>/`:

    spec.json      the ContainerSpec (written by Runtime.start)
    cgroups.json   absolute cgroup directories created for it (Runtime)
    hosts, resolv.conf, hostname
                   contents bind-mounted over /etc/* inside the container (Runtime)
    upper/ work/ merged/
                   overlayfs layers when the spec has a rootfs (Runtime makes, shim mounts)
    stdout.log, stderr.log
                   the container's output, one file each (shim)
    shim.log       the supervisor's own stderr: tracebacks, warnings (shim)
    shim.pid       "<pid> <start-time>" written as soon as the shim is detached (shim)
    state.json     {"shim_pid", "shim_start", "pid", "pid_start", "started_at"} once the
                   container process has exec'd (shim, atomic)
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
STDOUT = "stdout.log"
STDERR = "stderr.log"
SHIM_LOG = "shim.log"
SHIM_PID = "shim.pid"
STATE = "state.json"
EXIT = "exit.json"

# Marker in the shim's command line: adopt() trusts a pid only if /proc shows it.
SHIM_MARKER = "cnm.runtime.shim"

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


def write_atomic(path: str, data: str, mode: int = 0o600) -> None:
    """Write then rename: readers see the old file or the whole new one, never half.
    The file gets exactly `mode` (the spec holds the container's environment: 0600);
    never written through a symlink."""
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data.encode())
    finally:
        os.close(fd)
    os.rename(tmp, path)


def parse_pid_file(text: str) -> tuple[int, int]:
    """`shim.pid` holds "<pid> <start-time>"."""
    pid, start = text.split()
    return int(pid), int(start)
