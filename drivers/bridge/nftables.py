"""The bridge driver's firewall hook backed by cnm.firewall (nftables): turns the
driver's plain data (BridgeNetworkInfo, PublishedEndpoint) into firewall inputs."""

from __future__ import annotations

from cnm.firewall import Firewall, NetworkRules, PortMapping
from cnm.ports import proto_name
from drivers.bridge.hooks import BridgeNetworkInfo, PublishedEndpoint


def network_rules(info: BridgeNetworkInfo) -> NetworkRules:
    cfg = info.config
    return NetworkRules(
        id=info.network_id,
        bridge=info.bridge_name,
        subnets_v4=tuple(info.subnets_v4),
        subnets_v6=tuple(info.subnets_v6),
        icc=cfg.enable_icc,
        masquerade=cfg.enable_ip_masquerade,
        internal=cfg.internal,
        host_binding_ipv4=cfg.host_binding_ipv4,
    )


def port_mappings(ep: PublishedEndpoint) -> list[PortMapping]:
    """libnetwork PortBinding dicts -> mappings. A binding without a host IP stays
    without one: the firewall applies the network's host_binding_ipv4 (model.dnat_key)."""
    out = []
    for b in ep.port_bindings:
        host_ip = str(b.get("HostIP") or "") or None
        v6_host = host_ip is not None and ":" in host_ip
        container_ip = ep.address_v6 if v6_host else ep.address
        if not container_ip:
            continue
        out.append(
            PortMapping(
                proto=proto_name(b["Proto"]),
                host_ip=host_ip,
                host_port=int(b["HostPort"]),
                container_ip=container_ip,
                container_port=int(b["Port"]),
                bridge=ep.bridge_name,
            )
        )
    return out


class NftablesBridgeFirewall:
    """Implements drivers.bridge.hooks.BridgeFirewall on a cnm.firewall.Firewall."""

    def __init__(self, firewall: Firewall) -> None:
        self.firewall = firewall

    def network_created(self, info: BridgeNetworkInfo) -> None:
        self.firewall.set_network(network_rules(info))

    def network_deleted(self, network_id: str) -> None:
        self.firewall.remove_network(network_id)

    def ports_published(self, endpoint: PublishedEndpoint) -> None:
        self.firewall.add_ports(endpoint.endpoint_id, port_mappings(endpoint))

    def ports_revoked(self, network_id: str, endpoint_id: str) -> None:
        self.firewall.remove_ports(endpoint_id)
