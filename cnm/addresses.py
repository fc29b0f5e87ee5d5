"""IP addresses, subnets and interface addresses as the model types them: the standard
library's `ipaddress`, one type per kind, either family.

    IPAddress    a plain address              172.18.0.1
    IPInterface  an address with its prefix  172.18.0.2/16   (an endpoint's address)
    IPNetwork    a subnet                     172.18.0.0/16
"""
from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network

IPAddress = IPv4Address | IPv6Address
IPInterface = IPv4Interface | IPv6Interface
IPNetwork = IPv4Network | IPv6Network


def subnet_of(inner: IPNetwork, outer: IPNetwork) -> bool:
    """`inner` lies within `outer` (False across families, where ipaddress raises)."""
    if isinstance(inner, IPv4Network) and isinstance(outer, IPv4Network):
        return inner.subnet_of(outer)
    if isinstance(inner, IPv6Network) and isinstance(outer, IPv6Network):
        return inner.subnet_of(outer)
    return False
