"""The bridge driver's firewall hook: Docker's port bindings become the firewall's
port mappings (rendered, not applied: the apply step is captured)."""

from __future__ import annotations

from cnm.firewall import Firewall, NetworkRules
from drivers.bridge.hooks import PublishedEndpoint
from drivers.bridge.nftables import NftablesBridgeFirewall


def test_docker_wire_bindings_are_published_on_the_networks_default_host_ip():
    scripts: list[str] = []
    fw = Firewall(apply=scripts.append, sysctl=lambda key, value: None)
    fw.set_network(NetworkRules("n1", "br-h", subnets_v4=("10.40.0.0/24",), host_binding_ipv4="192.0.2.10"))
    NftablesBridgeFirewall(fw).ports_published(
        PublishedEndpoint(
            network_id="n1",
            endpoint_id="e1",
            bridge_name="br-h",
            address="10.40.0.2",
            address_v6=None,
            host_binding_ipv4="192.0.2.10",
            port_bindings=(
                {"Proto": 6, "Port": 80, "HostPort": 8080},  # Docker's wire: 6 = tcp
                {"Proto": 17, "Port": 53, "HostIP": "127.0.0.1", "HostPort": 5353},
            ),
        )
    )
    script = scripts[-1]
    assert "192.0.2.10 . tcp . 8080 : 10.40.0.2 . 80" in script, script  # no HostIP: the default
    assert "127.0.0.1 . udp . 5353 : 10.40.0.2 . 53" in script, script  # its own HostIP kept
