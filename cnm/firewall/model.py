"""The firewall's inputs: plain, validated data. Rendering and applying live elsewhere.

A `FirewallState` is everything the nftables tables are rendered from. Keep its parts
(the networks' rules and the endpoints' port mappings) in the store so a reload can
rebuild the tables after someone flushed the ruleset.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from cnm.errors import Conflict, InvalidParameter

PROTOCOLS = ("tcp", "udp")

# Names go into the nft script inside double quotes; refuse anything that could
# break out of them. Linux allows more, but no bridge of ours needs more.
_IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,14}$")

_WILDCARDS = {"", "0.0.0.0", "::"}


def check_ifname(name: str) -> str:
    if not isinstance(name, str) or not _IFNAME.match(name):
        raise InvalidParameter(f"invalid bridge name {name!r}: use 1-15 letters, digits, '_', '.', '-'")
    return name


def _subnet(text: str, version: int) -> str:
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise InvalidParameter(f"invalid subnet {text!r}: {exc}") from exc
    if net.version != version:
        raise InvalidParameter(f"subnet {text} is not an IPv{version} subnet")
    return net.with_prefixlen


def _addr(text: str, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError as exc:
        raise InvalidParameter(f"invalid {what} {text!r}: not an IP address") from exc


def _port(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise InvalidParameter(f"invalid {what} {value!r}: must be 1-65535")
    return value


@dataclass(frozen=True)
class NetworkRules:
    """Firewall view of one bridge network (Docker's bridge options)."""

    id: str
    bridge: str
    subnets_v4: tuple[str, ...] = ()
    subnets_v6: tuple[str, ...] = ()
    icc: bool = True  # com.docker.network.bridge.enable_icc
    masquerade: bool = True  # com.docker.network.bridge.enable_ip_masquerade
    internal: bool = False  # --internal
    host_binding_ipv4: str | None = None  # com.docker.network.bridge.host_binding_ipv4

    def __post_init__(self) -> None:
        if not self.id:
            raise InvalidParameter("network rules need a network id")
        check_ifname(self.bridge)
        # Normalise so equal inputs render byte-identical scripts.
        object.__setattr__(self, "subnets_v4", tuple(sorted({_subnet(s, 4) for s in self.subnets_v4})))
        object.__setattr__(self, "subnets_v6", tuple(sorted({_subnet(s, 6) for s in self.subnets_v6})))
        hb = self.host_binding_ipv4
        if hb in _WILDCARDS:
            hb = None
        elif hb is not None and _addr(hb, "host binding address").version != 4:
            raise InvalidParameter(f"host_binding_ipv4 {hb} is not an IPv4 address")
        object.__setattr__(self, "host_binding_ipv4", hb)

    def to_record(self) -> dict:
        return asdict(self)

    @classmethod
    def from_record(cls, record: Mapping) -> NetworkRules:
        r = dict(record)
        r["subnets_v4"] = tuple(r.get("subnets_v4", ()))
        r["subnets_v6"] = tuple(r.get("subnets_v6", ()))
        return cls(**r)


@dataclass(frozen=True)
class PortMapping:
    """One published port: host (ip, port) -> container (ip, port), already allocated.

    host_ip None (or 0.0.0.0 / ::) means every local address of the container IP's
    family. The container IP's family decides the family of the mapping; publish
    IPv4 and IPv6 as two mappings."""

    proto: str
    host_ip: str | None
    host_port: int
    container_ip: str
    container_port: int
    bridge: str

    def __post_init__(self) -> None:
        if self.proto not in PROTOCOLS:
            raise InvalidParameter(f"invalid protocol {self.proto!r}: use tcp or udp")
        _port(self.host_port, "host port")
        _port(self.container_port, "container port")
        check_ifname(self.bridge)
        cip = _addr(self.container_ip, "container IP")
        object.__setattr__(self, "container_ip", str(cip))
        hip = None if self.host_ip in _WILDCARDS or self.host_ip is None else _addr(self.host_ip, "host IP")
        if hip is not None and hip.version != cip.version:
            raise InvalidParameter(
                f"host IP {self.host_ip} and container IP {self.container_ip} "
                "are of different families; publish each family separately"
            )
        object.__setattr__(self, "host_ip", None if hip is None else str(hip))

    @property
    def version(self) -> int:
        return ipaddress.ip_address(self.container_ip).version

    def to_record(self) -> dict:
        return asdict(self)

    @classmethod
    def from_record(cls, record: Mapping) -> PortMapping:
        return cls(**dict(record))


@dataclass(frozen=True)
class FirewallState:
    """Everything our tables are rendered from. Treat as immutable: the manager builds
    a new state per change, so a failed apply leaves the previous one intact."""

    networks: Mapping[str, NetworkRules] = field(default_factory=dict)  # by network id
    ports: Mapping[str, tuple[PortMapping, ...]] = field(default_factory=dict)  # by endpoint id

    def network_by_bridge(self, bridge: str) -> NetworkRules | None:
        for net in self.networks.values():
            if net.bridge == bridge:
                return net
        return None


def dnat_key(pm: PortMapping, net: NetworkRules | None) -> tuple[int, str | None, str, int]:
    """(family, host ip or None for all, proto, port): what the DNAT maps are keyed by.
    The network's host_binding_ipv4 replaces an unspecified IPv4 host IP (Docker)."""
    host_ip = pm.host_ip
    if host_ip is None and pm.version == 4 and net is not None:
        host_ip = net.host_binding_ipv4
    return pm.version, host_ip, pm.proto, pm.host_port


def validate(state: FirewallState) -> None:
    """Refuse states nft would reject or that would make two rules fight:
    two networks on one bridge, or two mappings on the same host ip/proto/port."""
    bridges: dict[str, str] = {}
    for net in state.networks.values():
        other = bridges.setdefault(net.bridge, net.id)
        if other != net.id:
            raise Conflict(f"bridge {net.bridge} is already used by network {other}")
    keys: dict[tuple, str] = {}
    for ep, mappings in state.ports.items():
        for pm in mappings:
            key = dnat_key(pm, state.network_by_bridge(pm.bridge))
            if key in keys:
                ip = key[1] or ("0.0.0.0" if key[0] == 4 else "::")
                raise Conflict(
                    f"host port {pm.host_port}/{pm.proto} on {ip} is already published (endpoint {keys[key][:12]})"
                )
            keys[key] = ep
