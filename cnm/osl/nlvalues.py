"""Plain values of the netlink layer (cnm.osl.netlink) and the checks on what goes in:
links, routes, interface names, addresses with their prefix length."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from cnm.errors import InvalidParameter

IFNAMSIZ = 15  # usable characters in a Linux interface name


@dataclass(frozen=True)
class Link:
    name: str
    index: int
    kind: str | None  # "bridge", "veth", None for lo/physical
    mtu: int
    mac: str | None
    up: bool  # administratively up (IFF_UP)
    master: int | None  # ifindex of the bridge this link is a port of
    alias: str | None  # IFLA_IFALIAS: our ownership mark


@dataclass(frozen=True)
class Route:
    destination: str  # CIDR; default routes are "0.0.0.0/0" / "::/0"
    gateway: str | None
    dev: str | None
    family: int  # 4 or 6
    scope: int
    table: int


def _interface(cidr: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    try:
        if "/" not in cidr:
            raise ValueError("no prefix length")
        return ipaddress.ip_interface(cidr)
    except ValueError as exc:
        raise InvalidParameter(f"invalid address {cidr!r}: want address/prefix-length") from exc


def _check_ifname(name: str) -> None:
    if (
        not name
        or len(name) > IFNAMSIZ
        or "/" in name
        or ":" in name
        or any(c.isspace() for c in name)
        or name in (".", "..")
    ):
        raise InvalidParameter(f"invalid interface name {name!r}: 1-{IFNAMSIZ} characters, no '/', ':' or whitespace")
