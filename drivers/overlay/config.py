"""Overlay network options parsed once, at the edge, into typed config. Pure.

Options (-o KEY=VALUE, Docker's labels):
    com.docker.network.overlay.vxlanid_list   the network's VXLAN id (VNI), 1..16777215.
        Set by the core, which allocates it cluster-wide (a user may pin one). Docker
        accepts one VNI per subnet; this driver puts all subnets of a network on ONE
        segment, so the list must hold one value.
    com.docker.network.driver.mtu             MTU of the containers' interfaces and the
        overlay bridge. Default: underlay MTU - 50 (the VXLAN encapsulation: outer
        IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14), 1450 on a 1500 underlay.
The VXLAN UDP port is not a per-network option: every host of the cluster must use
the same one, so it is the driver's (OverlayDriver(vxlan_port=...), default 4789),
like Docker's daemon-wide --data-path-port.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from cnm import labels
from cnm.cluster.vni import VNI_MAX, VNI_MIN, parse_vni  # noqa: F401  (re-exported)
from cnm.driverapi import IPAMData, NetworkSpec
from cnm.errors import InvalidParameter
from cnm.optparse import MAX_MTU, MIN_MTU, parse_mtu  # noqa: F401  (re-exported)

VXLANID_LIST = labels.VXLANID_LIST
VXLAN_OVERHEAD = 50  # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14

ACCEPTED = (VXLANID_LIST, labels.MTU)


@dataclass(frozen=True)
class OverlayConfig:
    network_id: str
    vni: int
    mtu: int
    gateways: tuple[str, ...] = ()  # "addr/len" of each subnet's gateway, v4 then v6
    subnets: tuple[str, ...] = ()  # CIDRs, v4 then v6
    ipv6: bool = False
    internal: bool = False


def overlay_mtu(underlay_mtu: int, option: int | None = None) -> int:
    """The containers' MTU: the option if given, else what fits in one underlay frame."""
    if option is not None:
        return option
    mtu = underlay_mtu - VXLAN_OVERHEAD
    if mtu < MIN_MTU:
        raise InvalidParameter(
            f"underlay MTU {underlay_mtu} is too small for VXLAN (needs at least {MIN_MTU + VXLAN_OVERHEAD})"
        )
    return mtu


def normalize(options: Mapping[str, str]) -> dict[str, str]:
    """Validate the options; return them canonical. The VNI may be absent (the core
    adds it after validation). Raises InvalidParameter."""
    out: dict[str, str] = {}
    for key, value in options.items():
        if key == VXLANID_LIST:
            out[key] = str(parse_vni(value))
        elif key == labels.MTU:
            out[key] = str(parse_mtu(value))
        else:
            raise InvalidParameter(f"unknown option {key!r} for the overlay driver; accepted: {', '.join(ACCEPTED)}")
    return out


def _gateway(pool: IPAMData, family: str) -> str | None:
    gw = pool.gateway
    if not gw:
        return None
    try:
        iface = ipaddress.ip_interface(gw)
        net = ipaddress.ip_network(pool.pool, strict=False)
    except ValueError as exc:
        raise InvalidParameter(f"invalid {family} pool or gateway {gw!r}: {exc}") from None
    if iface.ip not in net:
        raise InvalidParameter(f"gateway {gw} is outside its subnet {net}")
    # The bridge gets the gateway with the subnet's prefix, whatever the core wrote.
    return f"{iface.ip}/{net.prefixlen}"


def parse(spec: NetworkSpec, underlay_mtu: int) -> OverlayConfig:
    """NetworkSpec -> OverlayConfig. The VNI is required here."""
    opts = normalize(spec.options)
    if VXLANID_LIST not in opts:
        raise InvalidParameter(
            f"overlay network {spec.name or spec.id[:12]} has no VXLAN id: the core must set option {VXLANID_LIST}"
        )
    mtu = overlay_mtu(underlay_mtu, int(opts[labels.MTU]) if labels.MTU in opts else None)
    v6 = spec.ipv6 if (spec.enable_ipv6 or spec.ipv6) else ()
    pools = [(p, "IPv4") for p in spec.ipv4] + [(p, "IPv6") for p in v6]
    gateways = tuple(g for g in (_gateway(p, fam) for p, fam in pools) if g)
    return OverlayConfig(
        network_id=spec.id,
        vni=parse_vni(opts[VXLANID_LIST]),
        mtu=mtu,
        gateways=gateways,
        subnets=tuple(p.pool for p, _ in pools),
        ipv6=bool(v6),
        internal=spec.internal,
    )
