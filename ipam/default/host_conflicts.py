"""What automatic pool choice must avoid on this host: route destinations and
nameservers (Docker skips both, so a container network never hides the VPN or the
DNS server). Pure: the OS layer reads the routes and the file, and passes them in.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable


def nameservers_from_resolv_conf(text: str) -> list[str]:
    """Nameserver addresses of a resolv.conf, as host CIDRs ("10.0.0.2/32",
    "fd00::53/128"), in file order. Comments, zone ids and bad lines are ignored."""
    found: list[str] = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) < 2 or words[0] != "nameserver":
            continue
        addr = words[1].split("%", 1)[0]  # drop an IPv6 zone id (fe80::1%eth0)
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            continue
        cidr = f"{ip}/{ip.max_prefixlen}"
        if cidr not in found:
            found.append(cidr)
    return found


def exclusions(route_destinations: Iterable[str], nameservers: Iterable[str] = ()) -> list[str]:
    """The CIDRs automatic pool choice must skip: every route destination except a
    default route (which would block everything), plus the nameservers."""
    out: list[str] = []
    for text in list(route_destinations) + list(nameservers):
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            continue
        if net.prefixlen == 0:
            continue
        if str(net) not in out:
            out.append(str(net))
    return out
