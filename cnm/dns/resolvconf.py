"""resolv.conf texts around the embedded resolver: the upstreams it forwards to (read
from the daemon host's file) and the file a container on a user-defined network gets."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from cnm.addresses import address_text

MAX_NAMESERVERS = 3  # glibc reads no more than three


def upstreams_from_resolv_conf(text: str) -> list[str]:
    """Nameserver addresses in file order. Loopback ones are kept: the resolver runs in
    the daemon's own namespace, where 127.0.0.53 (systemd-resolved) is reachable, which
    a container never could. Comments, zone ids and bad lines are ignored."""
    found: list[str] = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) < 2 or words[0] != "nameserver":
            continue
        try:
            ip = str(ipaddress.ip_address(words[1].split("%", 1)[0]))
        except ValueError:
            continue
        if ip not in found:
            found.append(ip)
    return found


def host_upstreams(path: str = "/etc/resolv.conf") -> list[str]:
    """The daemon host's upstreams, read afresh (cheap; the file is tiny), [] if absent."""
    try:
        return upstreams_from_resolv_conf(Path(path).read_text())
    except OSError:
        return []


def embedded_resolv_conf(gateways: list[str], host_text: str) -> str:
    """A container's resolv.conf on user-defined networks: our listeners (its networks'
    gateways, at most three) as nameservers, the host's `search`/`domain` lines, and
    Docker's `options ndots:0` (short names are tried as typed, first, at our resolver).
    Any listener answers the same for a given container (answers depend on who asks,
    not on where), so the order only matters for failover."""
    servers = list(dict.fromkeys(address_text(g) for g in gateways))
    lines = [f"nameserver {g}" for g in servers[:MAX_NAMESERVERS]]
    for line in host_text.splitlines():
        words = line.split()
        if words[:1] in (["search"], ["domain"]):
            lines.append(line.strip())
    lines.append("options ndots:0")
    return "\n".join(lines) + "\n"
