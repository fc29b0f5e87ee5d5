"""Read and write /proc/sys for the CALLING thread's network namespace.

/proc/sys/net/* shows the namespace of the thread that opens the file, so to touch
another namespace call these through `Netlink.sysctl_read/sysctl_write` (which run
them on the handle's thread inside that namespace), or `netns.run_in_netns`.
"""

from __future__ import annotations

import os

from cnm.errors import InvalidParameter
from cnm.osl import procsys
from cnm.osl.errors import translate

PROC_SYS = "/proc/sys"


def sysctl_rel(key: str) -> str:
    """ "net.ipv4.ip_forward" -> net/ipv4/ip_forward (under /proc/sys). Interface names
    may hold dots (eth0.100), so a key may use '/' as separator instead, like sysctl(8):
    "net/ipv6/conf/eth0.100/disable_ipv6"."""
    rel = key if "/" in key else key.replace(".", "/")
    parts = rel.strip("/").split("/")
    if not key or any(p in ("", ".", "..") for p in parts):
        raise InvalidParameter(f"invalid sysctl key {key!r}")
    return "/".join(parts)


def sysctl_path(key: str) -> str:
    return os.path.join(PROC_SYS, sysctl_rel(key))


def conf_key(family: int, ifname: str, name: str) -> str:
    """Per-interface key, safe for names with dots: conf_key(6, "br0", "disable_ipv6")."""
    return f"net/ipv{family}/conf/{ifname}/{name}"


def _open(rel: str, write: bool = False) -> int:
    if PROC_SYS != "/proc/sys":  # tests point it elsewhere
        return os.open(os.path.join(PROC_SYS, rel), os.O_WRONLY if write else os.O_RDONLY)
    return procsys.open_sys(rel, write)


def _read(rel: str) -> str:
    fd = _open(rel)
    try:
        return os.read(fd, 4096).decode()
    finally:
        os.close(fd)


def read(key: str) -> str:
    rel = sysctl_rel(key)
    try:
        return _read(rel).strip()
    except OSError as exc:
        raise translate(exc, f"read sysctl {key}") from exc


def write(key: str, value: str | int) -> None:
    """Write the value; skip the write when it already holds (saves a privileged
    write and keeps read-only /proc/sys setups working when nothing changes).
    net.* keys go through a procfs instance of their own (cnm.osl.procsys: through
    /proc each lookup grows with the machine's network namespaces)."""
    rel = sysctl_rel(key)
    text = str(value)
    try:
        if _read(rel).split() == text.split():
            return
        fd = _open(rel, write=True)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise translate(exc, f"set sysctl {key}={text}") from exc


def local_port_range() -> tuple[int, int]:
    """net.ipv4.ip_local_port_range: where ephemeral host ports come from."""
    lo, hi = read("net.ipv4.ip_local_port_range").split()
    return int(lo), int(hi)
