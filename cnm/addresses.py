"""IP addresses, subnets and interface addresses as the model types them: the standard
library's `ipaddress`, one type per kind, either family.

    IPAddress    a plain address              172.18.0.1
    IPInterface  an address with its prefix  172.18.0.2/16   (an endpoint's address)
    IPNetwork    a subnet                     172.18.0.0/16

The model (cnm.model: a network's pools, an endpoint's addresses and gateways) holds
these types; text is parsed where it enters (store records, IPAM and driver answers)
and written where it leaves (records, the driver and IPAM protocols, API JSON), with
the functions below. No code strips prefixes off strings by hand.
"""

from __future__ import annotations

from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
    ip_address,
    ip_interface,
    ip_network,
)

from cnm.errors import InvalidParameter

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


def address(text: str, what: str = "address") -> IPAddress:
    """A plain address ("172.18.0.1"). InvalidParameter names `what` otherwise."""
    try:
        return ip_address(text)
    except ValueError:
        raise InvalidParameter(f"invalid {what} {text!r}: want an IP address") from None


def interface(text: str, what: str = "address") -> IPInterface:
    """An address with its prefix length ("172.18.0.2/16")."""
    if "/" not in text:
        raise InvalidParameter(f"invalid {what} {text!r}: want an address with its prefix length")
    try:
        return ip_interface(text)
    except ValueError:
        raise InvalidParameter(f"invalid {what} {text!r}: want an address with its prefix length") from None


def network(text: str, what: str = "subnet") -> IPNetwork:
    """A subnet ("172.18.0.0/16"), host bits clear."""
    try:
        return ip_network(text)
    except ValueError:
        raise InvalidParameter(f"invalid {what} {text!r}: want a subnet in CIDR form") from None


def host_of(text: str, what: str = "address") -> IPAddress:
    """The address of "a.b.c.d" or "a.b.c.d/len": for answers (a driver's gateway, an
    IPAM's address) where Docker's protocol allows either."""
    try:
        return ip_interface(text).ip
    except ValueError:
        raise InvalidParameter(f"invalid {what} {text!r}: want an IP address") from None


def within(addr: IPAddress, subnet: IPNetwork) -> IPInterface:
    """`addr` with `subnet`'s prefix length (an endpoint's address on its subnet)."""
    return ip_interface(f"{addr}/{subnet.prefixlen}")


def text(value: IPAddress | IPInterface | IPNetwork | None) -> str | None:
    """Its text, or None: for the driver and IPAM protocols, which speak text."""
    return None if value is None else str(value)


def address_text(value: str) -> str:
    """ "a.b.c.d" or "a.b.c.d/len" as its canonical address text: for protocols that
    allow either (ValueError when it is neither)."""
    return str(ip_interface(value).ip)
