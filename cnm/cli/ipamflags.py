"""Docker CLI's rule for `--subnet/--ip-range/--gateway/--aux-address`: each range,
gateway and aux address belongs to the subnet that contains it. Pure."""

from __future__ import annotations

import ipaddress

from cnm.errors import InvalidParameter


def ipam_configs(
    subnets: list[str], ip_ranges: list[str], gateways: list[str], aux: list[tuple[str, str]]
) -> list[dict]:
    """Build Docker's `IPAM.Config` list from the create flags."""
    if len(subnets) < len(ip_ranges) or len(subnets) < len(gateways):
        raise InvalidParameter("every ip-range or gateway must have a corresponding subnet")
    nets = [ipaddress.ip_network(s) for s in subnets]
    for i, a in enumerate(nets):
        for b in nets[i + 1 :]:
            if a.version == b.version and a.overlaps(b):
                raise InvalidParameter(f"multiple overlapping subnet configuration is not supported ({a}, {b})")
    configs: list[dict] = [{"Subnet": s} for s in subnets]

    def owner(
        addr: ipaddress.IPv4Address | ipaddress.IPv6Address | ipaddress.IPv4Network | ipaddress.IPv6Network,
        what: str,
        shown: str,
    ) -> dict:
        for net, cfg in zip(nets, configs, strict=True):
            if net.version != addr.version:
                continue
            # (same version, checked above: mypy cannot see it)
            if isinstance(addr, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
                inside = addr.subnet_of(net)  # type: ignore[arg-type]
            else:
                inside = addr in net
            if inside:
                return cfg
        raise InvalidParameter(f"no matching subnet for {what} {shown}")

    for rng in ip_ranges:
        cfg = owner(ipaddress.ip_network(rng), "ip-range", rng)
        if "IPRange" in cfg:
            raise InvalidParameter(
                f"cannot configure multiple ranges ({cfg['IPRange']}, {rng}) on the same subnet ({cfg['Subnet']})"
            )
        cfg["IPRange"] = rng
    for gw in gateways:
        cfg = owner(ipaddress.ip_address(gw), "gateway", gw)
        if "Gateway" in cfg:
            raise InvalidParameter(
                f"cannot configure multiple gateways ({cfg['Gateway']}, {gw}) for the same subnet ({cfg['Subnet']})"
            )
        cfg["Gateway"] = gw
    for name, ip in aux:
        cfg = owner(ipaddress.ip_address(ip), "aux-address", ip)
        cfg.setdefault("AuxiliaryAddresses", {})[name] = ip
    return configs
