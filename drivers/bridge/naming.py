"""Names and MACs the bridge driver gives its kernel objects. Pure.

Every name is derived from an id, so after a daemon restart the driver finds its
objects again without any state of its own; the alias marks them as ours.
"""

from __future__ import annotations

import ipaddress
import secrets

from cnm import marks

HOST_VETH_PREFIX = "veth"
PEER_TEMP_PREFIX = "tmp"
ALIAS_NETWORK = marks.BRIDGE  # IFLA_IFALIAS of a bridge we created: + network id
ALIAS_ENDPOINT = marks.ENDPOINT  # of a host-side veth we created: + endpoint id


def host_ifname(endpoint_id: str) -> str:
    """Host end of the endpoint's veth: veth + 7 hex digits (11 chars, < IFNAMSIZ)."""
    return HOST_VETH_PREFIX + endpoint_id[:7]


def peer_ifname(endpoint_id: str) -> str:
    """Temporary name of the sandbox end until the core moves and renames it."""
    return PEER_TEMP_PREFIX + endpoint_id[:7]


def network_alias(network_id: str) -> str:
    return ALIAS_NETWORK + network_id


def endpoint_alias(endpoint_id: str) -> str:
    return ALIAS_ENDPOINT + endpoint_id


def mac_from_ipv4(address: str) -> str:
    """Docker's container MAC: 02:42 then the four bytes of the IPv4 address, so the
    MAC is stable for an address and locally administered. Accepts "a.b.c.d[/len]"."""
    ip = ipaddress.IPv4Interface(address).ip
    return "02:42:" + ":".join(f"{b:02x}" for b in ip.packed)


def random_mac() -> str:
    """A random locally administered unicast MAC (02:42:…, as Docker does for
    endpoints without IPv4 and for bridges)."""
    return "02:42:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(4))


def plain_address(cidr: str | None) -> str | None:
    """ "172.18.0.1/16" -> "172.18.0.1"; None stays None."""
    return str(ipaddress.ip_interface(cidr).ip) if cidr else None
