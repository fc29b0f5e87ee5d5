"""Read and write /proc/sys for the CALLING thread's network namespace.

/proc/sys/net/* shows the namespace of the thread that opens the file, so to touch
another namespace call these through `Netlink.sysctl_read/sysctl_write` (which run
them on the handle's thread inside that namespace), or `netns.run_in_netns`.
"""

from __future__ import annotations

import os

from cnm.errors import InvalidParameter
from cnm.osl.errors import translate

PROC_SYS = "/proc/sys"


def sysctl_path(key: str) -> str:
    """ "net.ipv4.ip_forward" -> /proc/sys/net/ipv4/ip_forward. Interface names may
    hold dots (eth0.100), so a key may use '/' as separator instead, like sysctl(8):
    "net/ipv6/conf/eth0.100/disable_ipv6"."""
    rel = key if "/" in key else key.replace(".", "/")
    parts = rel.strip("/").split("/")
    if not key or any(p in ("", ".", "..") for p in parts):
        raise InvalidParameter(f"invalid sysctl key {key!r}")
    return os.path.join(PROC_SYS, *parts)


def conf_key(family: int, ifname: str, name: str) -> str:
    """Per-interface key, safe for names with dots: conf_key(6, "br0", "disable_ipv6")."""
    return f"net/ipv{family}/conf/{ifname}/{name}"


def read(key: str) -> str:
    path = sysctl_path(key)
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as exc:
        raise translate(exc, f"read sysctl {key}") from exc


def write(key: str, value: str | int) -> None:
    """Write the value; skip the write when it already holds (saves a privileged
    write and keeps read-only /proc/sys setups working when nothing changes)."""
    path = sysctl_path(key)
    text = str(value)
    try:
        with open(path) as f:
            if f.read().split() == text.split():
                return
        with open(path, "w") as f:
            f.write(text)
    except OSError as exc:
        raise translate(exc, f"set sysctl {key}={text}") from exc


def local_port_range() -> tuple[int, int]:
    """net.ipv4.ip_local_port_range: where ephemeral host ports come from."""
    lo, hi = read("net.ipv4.ip_local_port_range").split()
    return int(lo), int(hi)
